#!/usr/bin/env bash
# scripts/cluster.sh - a real Kubernetes control plane for the tests, on 127.0.0.1 only.
#
#   scripts/cluster.sh build    build (or reuse) the binaries only
#   scripts/cluster.sh up       build if needed, start, wait until ready, print `export` lines
#   scripts/cluster.sh down     stop what `up` started and remove its run dir (safe if nothing runs)
#   scripts/cluster.sh status   say whether a cluster is running (exit 0 if it is)
#   scripts/cluster.sh env      print the export lines of the running cluster
#
# Typical use:   eval "$(scripts/cluster.sh up)"; trap 'scripts/cluster.sh down' EXIT
#
# Components: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (and kubectl)
# built from the Go modules pinned in cluster/go.mod, kwok pinned in cluster/kwok-tool/go.mod,
# kwok stages in cluster/kwok/stages.yaml; and, unless CLUSTER_REAL_NODE=0, one real node
# (kubelet, kube-proxy, containerd + runc, CNI bridge, CoreDNS, a volume provisioner and a local
# registry with the images of scripts/images.sh: scripts/lib/real-node.sh), which needs root.
# All progress goes to stderr; `up` prints only the export lines on stdout. See cluster/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/cluster"

CACHE_ROOT="${CLUSTER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runtime-api/cluster}"
RUN_DIR="${CLUSTER_RUN_DIR:-${TMPDIR:-/tmp}/runtime-api-cluster-$(id -u)}"

ETCD_PORT="${CLUSTER_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${CLUSTER_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${CLUSTER_APISERVER_PORT:-16443}"
CONTROLLER_MANAGER_PORT="${CLUSTER_CONTROLLER_MANAGER_PORT:-16257}"
SCHEDULER_PORT="${CLUSTER_SCHEDULER_PORT:-16259}"
NODE_COUNT="${CLUSTER_NODES:-3}"
NODE_CPU="${CLUSTER_NODE_CPU:-32}"
NODE_MEMORY="${CLUSTER_NODE_MEMORY:-128Gi}"
NODE_PODS="${CLUSTER_NODE_PODS:-110}"
READY_TIMEOUT="${CLUSTER_READY_TIMEOUT:-120}"
SERVICE_CIDR="10.96.0.0/16"
POD_CIDR="${CLUSTER_POD_CIDR:-10.244.0.1/16}"
# Controller-manager controllers to leave off, comma-separated (e.g. the endpoint controllers,
# whose every pod event scans all Services of the namespace: bench/run.sh at 20,000 sandboxes).
CONTROLLERS_OFF="${CLUSTER_CONTROLLERS_OFF:-}"
HOST=127.0.0.1

# Bump when the build recipe below changes (part of the binaries cache key).
RECIPE=4
CONTROL_PLANE=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

LOG_TAG=cluster
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

# shellcheck source=lib/real-node.sh
source "$ROOT/scripts/lib/real-node.sh"
COMPONENTS=("${CONTROL_PLANE[@]}")
real_node && COMPONENTS+=("${NODE_COMPONENTS[@]}")

kube_version() { awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$SRC/go.mod"; }

cache_key() {
  {
    echo "recipe=$RECIPE"
    go env GOVERSION GOOS GOARCH
    cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/cmd/k8s/main.go" \
        "$SRC/kwok-tool/go.mod" "$SRC/kwok-tool/go.sum" \
        "$SRC/node-tool/go.mod" "$SRC/node-tool/go.sum" "$SRC/coredns-tool/go.mod" "$SRC/coredns-tool/go.sum" "$SRC/coredns-tool/main.go" \
        "$SRC/provisioner/go.mod" "$SRC/provisioner/go.sum" "$SRC/provisioner/main.go"
  } | sha256sum | cut -c1-16
}

bin_dir() { echo "$CACHE_ROOT/bin-$(cache_key)"; }

# ---------------------------------------------------------------- build ----
build() {
  command -v go >/dev/null || die "go not found on PATH (Go >= 1.26 is needed)"
  local bin; bin=$(bin_dir)
  if [[ -x $bin/k8s && -x $bin/etcd && -x $bin/kwok ]] && node_binaries_present "$bin"; then
    log "binaries cached in $bin"
    return 0
  fi
  mkdir -p "$CACHE_ROOT"
  # One build at a time (e.g. CI warming the cache while a test calls `up`).
  exec 9>"$CACHE_ROOT/.build.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if [[ -x $bin/k8s && -x $bin/etcd && -x $bin/kwok ]] && node_binaries_present "$bin"; then
    log "binaries built meanwhile in $bin"; return 0
  fi
  local v major minor tmp start ldflags p date
  v=$(kube_version)
  [[ -n $v ]] || die "cannot read the k8s.io/kubernetes version from $SRC/go.mod"
  # buildDate: the release's publication time on the module proxy (reproducible).
  date=$(cd "$SRC" && go list -m -json k8s.io/kubernetes | sed -n 's/^[[:space:]]*"Time": "\(.*\)",*$/\1/p')
  [[ -n $date ]] || date=1970-01-01T00:00:00Z
  major=${v#v}; major=${major%%.*}
  minor=${v#v*.}; minor=${minor%%.*}
  ldflags="-s -w"
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.gitCommit= -X $p.buildDate=$date"
  done
  tmp="$bin.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  start=$SECONDS
  log "building Kubernetes $v (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy) - the first build takes a long time"
  (cd "$SRC" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/k8s" ./cmd/k8s) >&2 \
    || die "go build of ./cmd/k8s (kubernetes $v) failed"
  log "building etcd ($(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$SRC/go.mod"))"
  (cd "$SRC" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3) >&2 \
    || die "go build of etcd failed"
  log "building kwok ($(awk '$1 == "sigs.k8s.io/kwok" { print $2; exit }' "$SRC/kwok-tool/go.mod"))"
  (cd "$SRC/kwok-tool" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok) >&2 \
    || die "go build of kwok failed"
  for p in kube-apiserver kube-controller-manager kube-scheduler kubectl; do ln -sf k8s "$tmp/$p"; done
  node_build "$tmp"
  rm -rf "$bin"; mv "$tmp" "$bin"
  log "built in $((SECONDS - start))s into $bin ($(du -sh "$bin" | cut -f1))"
}

# ------------------------------------------------------------------ pki ----
ssl() { openssl "$@" 2>>"$RUN_DIR/logs/openssl.log" >&2 || die "openssl $1 failed (see $RUN_DIR/logs/openssl.log)"; }

gen_cert() { # name CN O ext-section
  local name=$1 cn=$2 o=$3 ext=$4 subj="/CN=$2"
  [[ -n $o ]] && subj="/O=$o/CN=$cn"
  ssl genrsa -out "$RUN_DIR/pki/$name.key" 2048
  ssl req -new -key "$RUN_DIR/pki/$name.key" -subj "$subj" -out "$RUN_DIR/pki/$name.csr"
  ssl x509 -req -in "$RUN_DIR/pki/$name.csr" -CA "$RUN_DIR/pki/ca.crt" -CAkey "$RUN_DIR/pki/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$RUN_DIR/pki/openssl.cnf" -extensions "$ext" \
    -out "$RUN_DIR/pki/$name.crt"
  rm -f "$RUN_DIR/pki/$name.csr"
}

gen_pki() {
  command -v openssl >/dev/null || die "openssl not found on PATH"
  local d="$RUN_DIR/pki"
  mkdir -p "$d"; chmod 700 "$d"
  cat >"$d/openssl.cnf" <<EOF
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, IP:10.96.0.1, IP:$NODE_IP, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
authorityKeyIdentifier = keyid
[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
  ssl genrsa -out "$d/ca.key" 2048
  ssl req -x509 -new -key "$d/ca.key" -subj "/CN=runtime-api-test-ca" -days 30 -sha256 \
    -config "$d/openssl.cnf" -extensions v3_ca -out "$d/ca.crt"
  gen_cert apiserver kube-apiserver "" server
  gen_cert admin admin system:masters client
  gen_cert controller-manager system:kube-controller-manager "" client
  gen_cert scheduler system:kube-scheduler "" client
  gen_cert kwok kwok-controller system:masters client
  gen_cert front-proxy-client front-proxy-client "" client
  ssl genrsa -out "$d/sa.key" 2048
  ssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub"
}

kubeconfig() { # name user
  local name=$1 user=$2 d="$RUN_DIR/pki"
  cat >"$RUN_DIR/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: runtime-api
  cluster:
    server: https://$HOST:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$d/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$d/$name.crt")
    client-key-data: $(base64 -w0 <"$d/$name.key")
contexts:
- name: runtime-api
  context:
    cluster: runtime-api
    user: $user
current-context: runtime-api
EOF
  chmod 600 "$RUN_DIR/$name.kubeconfig"
}

# ------------------------------------------------------------ processes ----
pid_of() { cat "$RUN_DIR/pids/$1.pid" 2>/dev/null || true; }

# gone PID: not running (a zombie waiting for its reaper counts as gone).
gone() { ! kill -0 "$1" 2>/dev/null || [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) == Z ]]; }

# alive NAME: the recorded pid runs the binary recorded at start (guards against pid reuse).
alive() {
  local pid; pid=$(pid_of "$1")
  [[ -n $pid ]] || return 1
  gone "$pid" && return 1
  local exe want; exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  want=$(cat "$RUN_DIR/pids/$1.exe" 2>/dev/null || true)
  [[ -z $exe ]] && return 0
  if [[ -n $want ]]; then [[ $exe == "$want" ]]; else [[ $exe == "$(cat "$RUN_DIR/bin-dir" 2>/dev/null)"/* ]]; fi
}

show_log() {
  local f="$RUN_DIR/logs/$1.log"
  if [[ -f $f ]]; then
    printf '[cluster] ---- last 40 lines of %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2
    printf '[cluster] ----\n' >&2
  fi
}

# fail COMPONENT MESSAGE: report, show the component's log, stop everything started.
fail() {
  printf '[cluster] ERROR: %s failed: %s\n' "$1" "$2" >&2
  show_log "$1"
  stop_all
  log "logs kept in $RUN_DIR/logs; 'scripts/cluster.sh down' removes them"
  exit 1
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

start() { # name binary args...
  local name=$1 bin=$2; shift 2
  log "starting $name"
  # stdin/stdout/stderr detached, and every other inherited descriptor closed (fd 3 is the pipe
  # of `eval "$(scripts/cluster.sh up)"`, and callers may pass more): a daemon holding a caller's
  # pipe would keep the command substitution from ever returning.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec nohup setsid "$bin" "$@" </dev/null >"$RUN_DIR/logs/$name.log" 2>&1
  ) &
  echo $! >"$RUN_DIR/pids/$name.pid"
  readlink -f "$(command -v "$bin")" >"$RUN_DIR/pids/$name.exe"
}

wait_for() { # name timeout command...
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail "$name" "process exited"
    ((SECONDS < deadline)) || fail "$name" "not ready after ${timeout}s"
    sleep 0.5
  done
}

# stop_group NAME...: TERM to all at once, KILL whatever still runs after 10 s.
stop_group() {
  local name pid pids=() i
  for name in "$@"; do
    pid=$(pid_of "$name")
    [[ -n $pid ]] || continue
    if alive "$name"; then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$RUN_DIR/pids/$name.pid" "$RUN_DIR/pids/$name.exe"
  done
  for ((i = 0; i < 50; i++)); do
    for pid in "${pids[@]}"; do gone "$pid" || { sleep 0.2; continue 2; }; done
    return 0
  done
  for pid in "${pids[@]}"; do
    gone "$pid" || { log "killing pid $pid"; kill -KILL "$pid" 2>/dev/null || true; }
  done
}

# Stops every recorded component: the real node first (its pods are deleted through the API
# server), etcd last (the apiserver hangs without it).
stop_all() {
  node_down
  stop_group kwok kube-scheduler kube-controller-manager kube-apiserver
  stop_group etcd
}

kubectl_() { "$RUN_DIR/bin/kubectl" --kubeconfig "$RUN_DIR/admin.kubeconfig" "$@"; }

curl_api() { # path
  curl -fsS --max-time 5 --cacert "$RUN_DIR/pki/ca.crt" --cert "$RUN_DIR/pki/admin.crt" \
    --key "$RUN_DIR/pki/admin.key" "https://$HOST:$APISERVER_PORT$1"
}

print_env() {
  cat >&3 <<EOF
export KUBECONFIG='$RUN_DIR/admin.kubeconfig'
export PATH='$RUN_DIR/bin':"\$PATH"
export RUNTIME_API_CLUSTER_DIR='$RUN_DIR'
export RUNTIME_API_CLUSTER_SERVER='https://$HOST:$APISERVER_PORT'
export RUNTIME_API_CLUSTER_CA='$RUN_DIR/pki/ca.crt'
EOF
  node_print_env
}

running() {
  [[ -f $RUN_DIR/admin.kubeconfig ]] || return 1
  local c; for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  curl_api /readyz >/dev/null 2>&1
}

any_alive() {
  local c; for c in "${COMPONENTS[@]}"; do alive "$c" && return 0; done
  return 1
}

nodes_yaml() {
  local i
  for ((i = 0; i < NODE_COUNT; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
spec: {}
status:
  capacity:
    cpu: "$NODE_CPU"
    memory: $NODE_MEMORY
    pods: "$NODE_PODS"
    ephemeral-storage: 500Gi
  allocatable:
    cpu: "$NODE_CPU"
    memory: $NODE_MEMORY
    pods: "$NODE_PODS"
    ephemeral-storage: 500Gi
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: $(kube_version)
EOF
  done
}

# The controller manager's --controllers: every default controller but those a test control plane
# has no use for (no cloud, kwok nodes own their addresses), and CLUSTER_CONTROLLERS_OFF.
controllers_flag() {
  local flag='*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' c
  local -a off
  IFS=, read -ra off <<<"$CONTROLLERS_OFF"
  for c in "${off[@]}"; do [[ -z $c ]] || flag+=",-$c"; done
  echo "$flag"
}

storage_class_yaml() {
  cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
}

up() {
  exec 3>&1 1>&2   # stdout is only for the export lines
  # `eval "$(scripts/cluster.sh up)"` ignores the exit status of the command
  # substitution: on failure, print `false` so that the eval itself fails.
  trap 'if (($? != 0)); then echo "false  # scripts/cluster.sh up failed" >&3; fi' EXIT
  if [[ -d $RUN_DIR ]]; then
    if running; then
      log "cluster already running (run dir $RUN_DIR); reusing it"
      print_env; return 0
    fi
    if any_alive; then
      die "a cluster in $RUN_DIR is partly running (not ready); run 'scripts/cluster.sh down' first"
    fi
    log "removing stale run dir $RUN_DIR"
    node_down
    rm -rf --one-file-system "$RUN_DIR"
  fi
  local t0=$SECONDS port bin
  for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$CONTROLLER_MANAGER_PORT" "$SCHEDULER_PORT"; do
    [[ $port =~ ^[0-9]+$ ]] || die "invalid port '$port' in a CLUSTER_*_PORT variable"
    port_busy "$port" && die "port $HOST:$port is already in use (override with CLUSTER_*_PORT, see cluster/README.md)"
  done
  command -v curl >/dev/null || die "curl not found on PATH"
  real_node && node_preflight
  build
  bin=$(bin_dir)
  mkdir -p "$RUN_DIR"/{logs,pids,bin,etcd}
  chmod 700 "$RUN_DIR"
  echo "$bin" >"$RUN_DIR/bin-dir"
  real_node && node_save_machine_state
  ln -s "$bin/kubectl" "$RUN_DIR/bin/kubectl"
  gen_pki
  kubeconfig admin admin
  kubeconfig controller-manager system:kube-controller-manager
  kubeconfig scheduler system:kube-scheduler
  kubeconfig kwok kwok-controller
  real_node && node_pki
  local p="$RUN_DIR/pki" node_flags=(--endpoint-reconciler-type none)
  real_node && mapfile -t node_flags < <(node_apiserver_flags)

  start etcd "$bin/etcd" --name runtime-api --data-dir "$RUN_DIR/etcd" \
    --listen-client-urls "http://$HOST:$ETCD_PORT" --advertise-client-urls "http://$HOST:$ETCD_PORT" \
    --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster "runtime-api=http://$HOST:$ETCD_PEER_PORT" --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn
  wait_for etcd 30 curl -fsS --max-time 2 "http://$HOST:$ETCD_PORT/health"

  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://$HOST:$ETCD_PORT" \
    --bind-address $HOST --advertise-address $HOST --secure-port "$APISERVER_PORT" \
    "${node_flags[@]}" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" \
    --requestheader-client-ca-file "$p/ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$p/front-proxy-client.crt" --proxy-client-key-file "$p/front-proxy-client.key" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged=true --profiling=false
  wait_for kube-apiserver "$READY_TIMEOUT" curl_api /readyz

  [[ -z $CONTROLLERS_OFF ]] || log "controller manager without: $CONTROLLERS_OFF"
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$RUN_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$RUN_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$RUN_DIR/controller-manager.kubeconfig" \
    --bind-address $HOST --secure-port "$CONTROLLER_MANAGER_PORT" --leader-elect=false \
    --root-ca-file "$p/ca.crt" --service-account-private-key-file "$p/sa.key" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --enable-hostpath-provisioner=true \
    --controllers "$(controllers_flag)" \
    --profiling=false
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$RUN_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$RUN_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$RUN_DIR/scheduler.kubeconfig" \
    --bind-address $HOST --secure-port "$SCHEDULER_PORT" --leader-elect=false --profiling=false
  start kwok "$bin/kwok" \
    --kubeconfig "$RUN_DIR/kwok.kubeconfig" \
    --config "$SRC/kwok/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-label-selector type=kwok \
    --cidr "$POD_CIDR" --node-ip $HOST \
    --node-lease-duration-seconds 40   # renew node Leases, or nodes go NotReady after ~50 s

  local healthz=(curl -fsSk --max-time 2)
  wait_for kube-controller-manager 60 "${healthz[@]}" "https://$HOST:$CONTROLLER_MANAGER_PORT/healthz"
  wait_for kube-scheduler 60 "${healthz[@]}" "https://$HOST:$SCHEDULER_PORT/healthz"

  log "creating $NODE_COUNT kwok nodes ($NODE_CPU CPU, $NODE_MEMORY, $NODE_PODS pods each)"
  nodes_yaml | kubectl_ apply -f - >>"$RUN_DIR/logs/kubectl.log" 2>&1 \
    || fail kubectl "creating the kwok nodes"
  wait_for kwok 60 kubectl_ wait --for=condition=Ready node -l type=kwok --timeout=5s
  # Default StorageClass: the controller manager's (test-only) hostPath provisioner
  # creates and binds a PV for each PVC (an empty dir under /tmp/hostpath_pv, removed
  # again with the PVC), so pods with PVCs get scheduled.
  storage_class_yaml | kubectl_ apply -f - >>"$RUN_DIR/logs/kubectl.log" 2>&1 \
    || fail kubectl "creating the default StorageClass"
  # The controller manager is working once it has made the default ServiceAccount.
  wait_for kube-controller-manager 60 kubectl_ get serviceaccount default -n default
  real_node && node_up "$bin"
  log "cluster ready in $((SECONDS - t0))s: Kubernetes $(kube_version) on https://$HOST:$APISERVER_PORT (run dir $RUN_DIR)"
  print_env
}

down() {
  if [[ ! -d $RUN_DIR ]]; then
    log "nothing to stop ($RUN_DIR does not exist)"
    return 0
  fi
  stop_all
  rm -rf --one-file-system "$RUN_DIR"
  log "stopped; removed $RUN_DIR"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  status)
    if running; then log "running (run dir $RUN_DIR)"; else log "not running"; exit 1; fi ;;
  env)
    exec 3>&1
    running || die "no cluster running in $RUN_DIR"
    print_env ;;
  *)
    echo "usage: $0 {build|up|down|status|env}" >&2; exit 2 ;;
esac
