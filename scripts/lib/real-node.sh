# scripts/lib/real-node.sh - the test cluster's real node, sourced by scripts/cluster.sh.
#
# One real Kubernetes node on this machine beside the kwok nodes: kubelet and kube-proxy of the
# control plane's release, containerd 2.x with Debian's runc, the CNI bridge plugin on a private
# /24 that never routes off the machine, CoreDNS for cluster.local, a local volume provisioner, and
# a local registry holding the images scripts/images.sh builds. Everything it starts, mounts,
# creates or changes is recorded in $RUN_DIR/node and undone by node_down; see cluster/README.md
# ("The real node") for what runs and what it changes on the machine.
#
# Needs root. Expects from cluster.sh: RUN_DIR, SRC, ROOT, HOST, APISERVER_PORT, SERVICE_CIDR,
# the helpers log/die/fail/start/wait_for/stop_group/alive/kubectl_/kubeconfig/gen_cert, and
# bin_dir.

REAL_NODE="${CLUSTER_REAL_NODE:-1}"
NODE_NAME="${CLUSTER_REAL_NODE_NAME:-real-node-0}"
BRIDGE="${CLUSTER_BRIDGE:-rtapi0}"
NODE_SUBNET="${CLUSTER_NODE_SUBNET:-10.250.0.0/24}"
NODE_IP="${NODE_SUBNET%.*/*}.1"
KUBELET_PORT="${CLUSTER_KUBELET_PORT:-20250}"
KUBELET_HEALTHZ_PORT="${CLUSTER_KUBELET_HEALTHZ_PORT:-20248}"
PROXY_HEALTHZ_PORT="${CLUSTER_PROXY_HEALTHZ_PORT:-20256}"
PROXY_METRICS_PORT="${CLUSTER_PROXY_METRICS_PORT:-20249}"
DNS_HEALTH_PORT="${CLUSTER_DNS_HEALTH_PORT:-20253}"
DNS_READY_PORT="${CLUSTER_DNS_READY_PORT:-20254}"
REGISTRY_PORT="${CLUSTER_REGISTRY_PORT:-15000}"
REGISTRY_DIR="${CLUSTER_REGISTRY_DIR:-$CACHE_ROOT/../registry}"
# The kubelet's cgroup root, created in every cgroup hierarchy (one real node per machine).
CGROUP_ROOT=runtime-api-node
NODE_TAINT_KEY=runtime-api.test/real-node
NODE_STORAGE_CLASS=node-local
NFT_TABLE=runtime-api-node
# Kernel settings the node changes: saved at `up`, restored at `down`.
SAVED_SYSCTLS=(net.ipv4.ip_forward vm.overcommit_memory kernel.panic kernel.panic_on_oops
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
# Paths the kubelet and CNI write outside the run dir whatever their flags: removed at `down`
# when `up` found them absent.
OUTSIDE_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni "$HOME/.kube")
NODE_COMPONENTS=(registry containerd kubelet kube-proxy coredns apiserver-forward local-provisioner)
# Debian packages the node needs: command=package.
NODE_PACKAGES=(runc=runc nft=nftables ip=iproute2 socat=socat docker-registry=docker-registry
  dig=bind9-dnsutils umoci=umoci skopeo=skopeo debootstrap=debootstrap objcopy=binutils)

real_node() { [[ $REAL_NODE == 1 ]]; }
ND() { echo "$RUN_DIR/node"; }

node_install_packages() {
  need_tools "${NODE_PACKAGES[@]}"
  [[ -x /usr/lib/cni/bridge ]] || apt_install containernetworking-plugins
}

node_preflight() {
  [[ $(id -u) == 0 ]] || die "the real node needs root (or set CLUSTER_REAL_NODE=0 for kwok nodes only)"
  [[ $NODE_SUBNET =~ ^[0-9]+\.[0-9]+\.[0-9]+\.0/24$ ]] || die "CLUSTER_NODE_SUBNET must be an a.b.c.0/24 range, not '$NODE_SUBNET'"
  [[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/cpuset ]] \
    || die "the real node expects cgroup v1 hierarchies under /sys/fs/cgroup (memory, cpuset, ...)"
  ((${#RUN_DIR} <= 31)) || die "CLUSTER_RUN_DIR '$RUN_DIR' is too long for containerd's shim sockets (at most 31 characters)"
  ip link show "$BRIDGE" >/dev/null 2>&1 && die "network interface $BRIDGE exists already: another real node runs on this machine (one per machine; set CLUSTER_REAL_NODE=0 for a second cluster)"
  nft list table ip kube-proxy >/dev/null 2>&1 && die "nftables table 'ip kube-proxy' exists: another kube-proxy runs on this machine"
  local port
  for port in "$REGISTRY_PORT" "$KUBELET_HEALTHZ_PORT" "$PROXY_HEALTHZ_PORT" "$PROXY_METRICS_PORT" "$DNS_HEALTH_PORT" "$DNS_READY_PORT"; do
    port_busy "$port" && die "port $HOST:$port is already in use (see cluster/README.md for the CLUSTER_*_PORT settings)"
  done
  node_install_packages
}

# ------------------------------------------------------------------ build ----
node_build() { # BIN_DIR
  local bin=$1
  log "building containerd, containerd-shim-runc-v2, ctr ($(awk '$1 == "github.com/containerd/containerd/v2" { print $2; exit }' "$SRC/node-tool/go.mod"))"
  local c
  for c in containerd containerd-shim-runc-v2 ctr; do
    local tags="urfave_cli_no_docs no_btrfs"
    [[ $c == containerd-shim-runc-v2 ]] && tags+=" no_grpc"
    (cd "$SRC/node-tool" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -tags "$tags" -ldflags "-s -w" \
      -o "$bin/$c" "github.com/containerd/containerd/v2/cmd/$c") >&2 || die "go build of $c failed"
  done
  log "building CoreDNS ($(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3; exit }' "$SRC/coredns-tool/go.mod"))"
  (cd "$SRC/coredns-tool" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" \
    -o "$bin/coredns" .) >&2 || die "go build of coredns failed"
  log "building the local volume provisioner (cluster/provisioner)"
  (cd "$SRC/provisioner" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" \
    -o "$bin/local-provisioner" .) >&2 || die "go build of cluster/provisioner failed"
  ln -sf k8s "$bin/kubelet"
  ln -sf k8s "$bin/kube-proxy"
}

node_binaries_present() { # BIN_DIR
  local c
  for c in containerd containerd-shim-runc-v2 ctr coredns local-provisioner; do [[ -x $1/$c ]] || return 1; done
}

# -------------------------------------------------------------------- pki ----
node_pki() {
  gen_cert kubelet "system:node:$NODE_NAME" system:nodes client
  gen_cert kube-proxy system:kube-proxy "" client
  gen_cert coredns system:coredns "" client
  gen_cert local-provisioner system:local-provisioner "" client
  gen_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters client
  kubeconfig kubelet "system:node:$NODE_NAME"
  kubeconfig kube-proxy system:kube-proxy
  kubeconfig coredns system:coredns
  kubeconfig local-provisioner system:local-provisioner
}

# The apiserver flags the real node needs: a kubelet client certificate, the kubelet reached on
# its InternalIP (the bridge address), and the `kubernetes` Service's endpoint on the bridge.
node_apiserver_flags() {
  local p="$RUN_DIR/pki"
  printf '%s\n' --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$p/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --advertise-address "$NODE_IP" --endpoint-reconciler-type lease
}

# -------------------------------------------------------- machine changes ----
# Called by `up` before anything runs (kubectl, for one, writes ~/.kube/cache at its first call).
node_save_machine_state() {
  local d; d=$(ND)
  mkdir -p "$d"
  : >"$d/sysctl.saved"
  local k
  for k in "${SAVED_SYSCTLS[@]}"; do
    [[ -e /proc/sys/${k//.//} ]] && echo "$k=$(cat "/proc/sys/${k//.//}")" >>"$d/sysctl.saved"
  done
  : >"$d/created-paths"
  for k in "${OUTSIDE_PATHS[@]}"; do [[ -e $k ]] || echo "$k" >>"$d/created-paths"; done
}

node_network_up() {
  log "network: bridge $BRIDGE $NODE_IP/24, Service range $SERVICE_CIDR routed to it"
  ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE"
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # An untranslated Service packet goes to the bridge, never to the default route.
  ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  # Pod traffic stays on this machine: nothing is forwarded between the bridge and any other
  # interface, in either direction.
  nft -f - <<EOF || die "nft: cannot create table inet $NFT_TABLE"
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority -10; policy accept;
    iifname "$BRIDGE" oifname != "$BRIDGE" drop
    oifname "$BRIDGE" iifname != "$BRIDGE" drop
  }
}
EOF
}

node_cgroups_up() {
  local h
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [[ -d $h ]] || continue
    mkdir -p "$h/$CGROUP_ROOT"
    if [[ -f $h/cpuset.cpus ]]; then
      cat "$h/cpuset.cpus" >"$h/$CGROUP_ROOT/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/$CGROUP_ROOT/cpuset.mems"
    fi
  done
}

# ---------------------------------------------------------------- configs ----
node_write_configs() {
  local d; d=$(ND)
  mkdir -p "$d"/{containerd,cni/net.d,cni/ipam,kubelet,kubelet-pki,pod-logs,volumes,s,certs.d/$HOST:$REGISTRY_PORT,runc}
  cat >"$d/certs.d/$HOST:$REGISTRY_PORT/hosts.toml" <<EOF
server = "http://$HOST:$REGISTRY_PORT"
[host."http://$HOST:$REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
EOF
  cat >"$d/containerd.toml" <<EOF
version = 3
root = "$d/containerd/root"
state = "$d/containerd/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "$d/s"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "$HOST"
  stream_server_port = "0"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$(node_image pause)"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$d/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  # Root here lacks CAP_SYS_RESOURCE: no negative oom_score_adj (cluster/README.md).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$d/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$d/runc"
        SystemdCgroup = false
EOF
  cat >"$d/cni/net.d/10-runtime-api.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "runtime-api",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$d/cni/ipam",
        "ranges": [[{ "subnet": "$NODE_SUBNET", "gateway": "$NODE_IP" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
EOF
  echo "nameserver $NODE_IP" >"$d/resolv.conf"
  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$d/containerd.sock
failSwapOn: false
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: $HOST
healthzPort: $KUBELET_HEALTHZ_PORT
makeIPTablesUtilChains: false
podLogsDir: $d/pod-logs
staticPodPath: ""
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $RUN_DIR/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $d/resolv.conf
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
EOF
  cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $RUN_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: nftables
clusterCIDR: $NODE_SUBNET
bindAddress: $HOST
healthzBindAddress: $HOST:$PROXY_HEALTHZ_PORT
metricsBindAddress: $HOST:$PROXY_METRICS_PORT
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  # CoreDNS answers cluster.local from the API server and nothing else: no forwarding, so no
  # query leaves the machine.
  cat >"$d/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    health $HOST:$DNS_HEALTH_PORT
    ready $HOST:$DNS_READY_PORT
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $RUN_DIR/coredns.kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
.:53 {
    bind $NODE_IP
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
}

# The registry's configuration: it starts first, before the images (and so the other
# configurations, which name the pause image) exist.
node_write_registry_config() {
  mkdir -p "$(ND)" "$REGISTRY_DIR"
  cat >"$(ND)/registry.yaml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $REGISTRY_DIR}
  delete: {enabled: true}
http:
  addr: $HOST:$REGISTRY_PORT
EOF
}

# binding NAME CLUSTERROLE USER: a ClusterRoleBinding document.
binding() {
  cat <<EOF
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "$1"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "$2"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "$3"}]
EOF
}

# Cluster objects the node's components need: CoreDNS's and the provisioner's RBAC, the
# node-local StorageClass.
node_objects() {
  {
    cat <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "runtime-api:local-provisioner-extra"}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch, update]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: $NODE_STORAGE_CLASS}
provisioner: runtime-api.test/local
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
EOF
    binding system:coredns system:coredns system:coredns
    binding runtime-api:local-provisioner system:persistent-volume-provisioner system:local-provisioner
    binding runtime-api:local-provisioner-extra runtime-api:local-provisioner-extra system:local-provisioner
  } | kubectl_ apply -f - >>"$RUN_DIR/logs/kubectl.log" 2>&1 || fail kubectl "creating the real node's RBAC and StorageClass"
}

# -------------------------------------------------------------------- images ----
node_image() { cat "$(ND)/image-$1" 2>/dev/null; }

node_images() {
  local line
  log "images: building (cached under ~/.cache) and pushing to the registry $HOST:$REGISTRY_PORT"
  while IFS= read -r line; do
    [[ $line == *=* ]] && echo "${line#*=}" >"$(ND)/image-${line%%=*}"
  done < <("$ROOT/scripts/images.sh" push "$HOST:$REGISTRY_PORT" || echo "FAILED")
  local name
  for name in pause agent-server runtime-api; do
    [[ -n $(node_image "$name") ]] || fail images "scripts/images.sh could not build or push $name (see above)"
  done
}

# -------------------------------------------------------------------- up ----
node_up() {
  local bin=$1 d; d=$(ND)
  local t0=$SECONDS
  node_write_registry_config
  start registry docker-registry serve "$d/registry.yaml"
  wait_for registry 30 curl -fsS --max-time 2 "http://$HOST:$REGISTRY_PORT/v2/"
  node_images
  node_write_configs
  node_network_up
  node_cgroups_up
  start containerd "$bin/containerd" --config "$d/containerd.toml"
  wait_for containerd 60 "$bin/ctr" --address "$d/containerd.sock" version
  start apiserver-forward socat "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP,fork,reuseaddr" "TCP:$HOST:$APISERVER_PORT"
  node_objects
  start kubelet "$bin/kubelet" --config "$d/kubelet.yaml" --kubeconfig "$RUN_DIR/kubelet.kubeconfig" \
    --root-dir "$d/kubelet" --cert-dir "$d/kubelet-pki" --node-ip "$NODE_IP" \
    --hostname-override "$NODE_NAME" --node-labels "$NODE_TAINT_KEY=true"
  start kube-proxy "$bin/kube-proxy" --config "$d/kube-proxy.yaml"
  start coredns "$bin/coredns" -conf "$d/Corefile" -dns.port 53
  start local-provisioner "$bin/local-provisioner" --kubeconfig "$RUN_DIR/local-provisioner.kubeconfig" \
    --base-dir "$d/volumes" --node "$NODE_NAME"
  wait_for kubelet 90 kubectl_ wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
  wait_for kube-proxy 60 curl -fsS --max-time 2 "http://$HOST:$PROXY_HEALTHZ_PORT/healthz"
  wait_for coredns 60 curl -fsS --max-time 2 "http://$HOST:$DNS_READY_PORT/ready"
  wait_for coredns 30 dig +time=1 +tries=1 +short "@$NODE_IP" kubernetes.default.svc.cluster.local
  log "real node $NODE_NAME ready in $((SECONDS - t0))s (pods on $NODE_SUBNET, DNS $NODE_IP)"
}

node_print_env() {
  real_node && [[ -f $(ND)/image-agent-server ]] || return 0
  cat >&3 <<EOF
export RUNTIME_API_REAL_NODE='$NODE_NAME'
export RUNTIME_API_REAL_NODE_TAINT='$NODE_TAINT_KEY'
export RUNTIME_API_NODE_STORAGE_CLASS='$NODE_STORAGE_CLASS'
export RUNTIME_API_DNS='$NODE_IP'
export RUNTIME_API_REGISTRY='$HOST:$REGISTRY_PORT'
export RUNTIME_API_AGENT_IMAGE='$(node_image agent-server)'
export RUNTIME_API_RUNTIME_IMAGE='$(node_image runtime-api)'
export RUNTIME_API_CTR='$(bin_dir)/ctr --address $(ND)/containerd.sock'
EOF
}

# ------------------------------------------------------------------ down ----
# Mount points at or under DIR, deepest first (octal escapes of /proc/self/mountinfo decoded).
mounts_under() {
  awk -v dir="$1" '{ m = $5; gsub(/\\040/, " ", m); if (m == dir || index(m, dir "/") == 1) print m }' \
    /proc/self/mountinfo | sort -r
}

# Processes in the node's cgroups (containers and anything they started).
cgroup_pids() {
  local f
  for f in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
    [[ -d $f ]] && find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}

node_down() {
  local d; d=$(ND)
  [[ -d $d ]] || return 0
  local bin; bin=$(cat "$RUN_DIR/bin-dir" 2>/dev/null || true)
  # 1. Pods go the normal way while the kubelet still runs.
  if alive kubelet && alive kube-apiserver; then
    kubectl_ delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
      --grace-period=1 --wait=false >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 30; i++)); do
      [[ -z $("$bin/ctr" --address "$d/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
  stop_group local-provisioner coredns kube-proxy kubelet apiserver-forward registry
  # 2. Whatever still runs in the node's cgroups, and the shims (they outlive containerd).
  local pid pids
  pids=$(cgroup_pids)
  [[ -n $pids ]] && { log "killing $(wc -w <<<"$pids") leftover container processes"; kill -KILL $pids 2>/dev/null || true; }
  stop_group containerd
  for pid in $(pgrep -f "containerd-shim-runc-v2" 2>/dev/null); do
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$bin"/* ]] && kill -KILL "$pid" 2>/dev/null
  done
  sleep 0.2
  # 3. Mounts under the run dir (kubelet volumes, rootfs overlays, netns, shm), deepest first.
  local m
  while IFS= read -r m; do
    [[ -n $m ]] && umount -l "$m" 2>/dev/null || true
  done < <(mounts_under "$RUN_DIR")
  # 4. cgroups, deepest first (a cgroup empties a moment after its last process died).
  for ((i = 0; i < 20; i++)); do
    local left=0 h
    for h in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
      [[ -d $h ]] || continue
      find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || left=1
    done
    ((left == 0)) && break
    sleep 0.25
  done
  # 5. Network: kube-proxy's tables, ours, the route and the bridge (the pods' veths went with
  #    their network namespaces).
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
  nft delete table inet "$NFT_TABLE" 2>/dev/null || true
  ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  # 6. Kernel settings and the paths written outside the run dir.
  local line
  if [[ -f $d/sysctl.saved ]]; then
    while IFS= read -r line; do sysctl -qw "$line" 2>/dev/null || true; done <"$d/sysctl.saved"
  fi
  if [[ -f $d/created-paths ]]; then
    while IFS= read -r line; do
      [[ -n $line && $line == /* && -z $(mounts_under "$line") ]] || continue
      if [[ $line == "$HOME/.kube" ]]; then
        # kubectl's discovery cache only: a kubeconfig put there meanwhile stays.
        rm -rf "$line/cache"; rmdir "$line" 2>/dev/null || true
      else
        rm -rf --one-file-system "$line"
      fi
    done <"$d/created-paths"
  fi
  # The run dir is removed by the caller; refuse if anything is still mounted under it.
  [[ -z $(mounts_under "$RUN_DIR") ]] || die "still mounted under $RUN_DIR: $(mounts_under "$RUN_DIR" | head -3 | tr '\n' ' ') - not removing it"
}
