#!/usr/bin/env bash
# tests/cluster/machine-state.sh - prints what a real node could leave on this machine, one
# sorted line per item, so that two runs can be compared with diff: network interfaces, routes,
# network namespaces, nftables tables, mount points, the kernel settings the kubelet and CNI
# change, cgroups at the top of every hierarchy, the paths written outside the run dir, and
# processes of the cluster's binaries. Used by tests/cluster/lifecycle.sh and scripts/test.sh.
set -uo pipefail
RUN_DIR="${CLUSTER_RUN_DIR:-${TMPDIR:-/tmp}/runtime-api-cluster-$(id -u)}"

{
  ip -o link show | awk '{ sub(/@.*/, "", $2); print "link " $2 }'
  ip route show | sed 's/^/route4 /'
  ip -6 route show 2>/dev/null | sed 's/^/route6 /'
  ip netns list 2>/dev/null | sed 's/^/netns /'
  nft list tables 2>/dev/null | sed 's/^/nft /'
  awk '{ print "mount " $5 }' /proc/self/mountinfo
  for k in net.ipv4.ip_forward vm.overcommit_memory kernel.panic kernel.panic_on_oops \
    net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables; do
    echo "sysctl $k=$(sysctl -n "$k" 2>/dev/null)"
  done
  find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d 2>/dev/null | sed 's/^/cgroup /'
  for p in /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd \
    /var/run/netns "$HOME/.kube" "$RUN_DIR"; do
    [[ -e $p ]] && echo "path $p"
  done
  # Processes of this cluster: its binaries, runc, socat and the registry, with the run dir or the
  # node address in their command line (another cluster on the machine is not ours to count).
  node_ip="${CLUSTER_NODE_SUBNET:-10.250.0.0/24}"; node_ip="${node_ip%.*/*}.1"
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case $exe in
      */runtime-api/cluster/bin-*/* | */runc | */socat | */docker-registry)
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -e "$RUN_DIR" -e "$node_ip" && echo "process $exe" ;;
    esac
  done
} | sort
