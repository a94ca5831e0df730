// Command pause is the pod sandbox ("infra") container of the test cluster's real node: the
// process that holds a pod's namespaces while its containers come and go. It reaps the orphans it
// inherits when it is the pod's PID 1 (shared process namespace) and exits on SIGINT or SIGTERM.
// scripts/images.sh packages it as the image containerd pins for every pod sandbox, so the node
// needs no image from a public registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
