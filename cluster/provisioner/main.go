// Command local-provisioner gives the test cluster's real node dynamically provisioned volumes:
// for each claim of its StorageClass it makes a directory under --base-dir and a `local`
// PersistentVolume bound to the node, and removes the directory when the volume is released.
//
// The controller manager's built-in hostPath provisioner is not enough for sandboxes: its
// directories are root-owned 0750 and the kubelet never applies a pod's fsGroup to hostPath
// volumes, so a non-root agent cannot write its workspace. The kubelet does apply fsGroup to
// `local` volumes, as it does to real block storage. The claim/volume bookkeeping (watches,
// retries, binding) is sig-storage-lib-external-provisioner's; this file is the storage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// localProvisioner makes volumes on one node, in directories under baseDir.
type localProvisioner struct {
	baseDir string
	node    string
}

func (p *localProvisioner) Provision(_ context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	if opts.SelectedNodeName != "" && opts.SelectedNodeName != p.node {
		return nil, controller.ProvisioningFinished,
			fmt.Errorf("claim is for node %q; this provisioner serves node %q only", opts.SelectedNodeName, p.node)
	}
	dir := filepath.Join(p.baseDir, opts.PVName)
	// World-writable like a fresh filesystem's root would be for its owner; the kubelet then
	// gives it to the pod's fsGroup on first mount.
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   opts.PVC.Spec.AccessModes,
			MountOptions:                  opts.StorageClass.MountOptions,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: opts.PVC.Spec.Resources.Requests[v1.ResourceStorage]},
			PersistentVolumeSource: v1.PersistentVolumeSource{
				Local: &v1.LocalVolumeSource{Path: dir},
			},
			NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{
				NodeSelectorTerms: []v1.NodeSelectorTerm{{MatchExpressions: []v1.NodeSelectorRequirement{{
					Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{p.node},
				}}}},
			}},
		},
	}, controller.ProvisioningFinished, nil
}

func (p *localProvisioner) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	if pv.Spec.Local == nil {
		return errors.New("not a local volume")
	}
	dir := filepath.Clean(pv.Spec.Local.Path)
	if !strings.HasPrefix(dir, p.baseDir+string(filepath.Separator)) {
		return fmt.Errorf("refusing to delete %q: not under %q", dir, p.baseDir)
	}
	return os.RemoveAll(dir)
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the provisioner's identity")
	name := flag.String("name", "runtime-api.test/local", "provisioner name (a StorageClass's `provisioner`)")
	baseDir := flag.String("base-dir", "", "directory that holds the volumes")
	node := flag.String("node", "", "name of the node the volumes are on")
	klog.InitFlags(nil)
	flag.Parse()
	if *kubeconfig == "" || *baseDir == "" || *node == "" {
		fmt.Fprintln(os.Stderr, "usage: local-provisioner --kubeconfig FILE --base-dir DIR --node NAME [--name NAME]")
		os.Exit(2)
	}
	base, err := filepath.Abs(*baseDir)
	if err == nil {
		err = os.MkdirAll(base, 0o755)
	}
	if err != nil {
		klog.Fatalf("base dir: %v", err)
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("kubeconfig: %v", err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		klog.Fatalf("client: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	provisioner := &localProvisioner{baseDir: filepath.Clean(base), node: *node}
	controller.NewProvisionController(ctx, client, *name, provisioner,
		controller.LeaderElection(false)).Run(ctx)
}
