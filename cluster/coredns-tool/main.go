// Command coredns is CoreDNS with only the plugins the test cluster's Corefile uses
// (scripts/lib/real-node.sh): the full build carries every cloud provider's SDK, which made it
// the slowest binary of a cold cluster build for a server that answers cluster.local names.
package main

import (
	"log"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() {
	// Execution order of the plugins: the relative order of CoreDNS's own plugin.cfg.
	if err := dnsserver.SetDirectives([]string{"bind", "ready", "health", "errors", "cache", "template", "kubernetes"}); err != nil {
		log.Fatalf("coredns: %v", err)
	}
	coremain.Run()
}
