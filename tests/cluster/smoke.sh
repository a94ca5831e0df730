#!/usr/bin/env bash
# tests/cluster/smoke.sh - proves the control plane from scripts/cluster.sh is real.
#
#   eval "$(scripts/cluster.sh up)"; tests/cluster/smoke.sh
#
# Needs KUBECONFIG (an admin kubeconfig), kubectl and curl. Prints every check,
# exits non-zero if any failed, and deletes the namespaces it created.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${KUBECONFIG:?KUBECONFIG must point at the cluster (eval \"\$(scripts/cluster.sh up)\")}"
command -v kubectl >/dev/null || { echo "kubectl not on PATH" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl not on PATH" >&2; exit 2; }

EXPECTED_VERSION=${EXPECTED_KUBE_VERSION:-$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$ROOT/cluster/go.mod")}
NS="smoke-$$-$RANDOM"
OTHER_NS="$NS-other"
STAGE_LABEL="kwok.runtime-api/stage"
TMP=$(mktemp -d)

cleanup() {
  kubectl delete namespace "$NS" "$OTHER_NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

# Admin credentials for curl, taken from the kubeconfig.
SERVER=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$TMP/ca.crt"
kubectl config view --raw --minify -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$TMP/admin.crt"
kubectl config view --raw --minify -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$TMP/admin.key"
admin_curl() { curl -sS --max-time 10 --cacert "$TMP/ca.crt" --cert "$TMP/admin.crt" --key "$TMP/admin.key" "$@"; }
token_curl() { curl -sS --max-time 10 --cacert "$TMP/ca.crt" -H "Authorization: Bearer $TOKEN" "$@"; }

# http_code EXPECTED CURLFN ARGS...: the request answers with EXPECTED.
http_code() {
  local want=$1; shift
  local code; code=$("$@" -o "$TMP/body" -w '%{http_code}')
  [[ $code == "$want" ]] || { echo "HTTP $code, expected $want: $(head -c 400 "$TMP/body")"; return 1; }
}

jp() { kubectl get "$@"; } # shorthand: jp pod/x -n ns -o jsonpath=...

echo "== cluster $SERVER, expecting Kubernetes $EXPECTED_VERSION"

# ---- version ---------------------------------------------------------------
version_matches() {
  local v; v=$(admin_curl "$SERVER/version" | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
  [[ $v == "$EXPECTED_VERSION" ]] || { echo "GET /version gitVersion=$v"; return 1; }
  v=$(kubectl version -o json | sed -n '/serverVersion/,$p' | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -1)
  [[ $v == "$EXPECTED_VERSION" ]] || { echo "kubectl version serverVersion.gitVersion=$v"; return 1; }
  v=$(kubectl version --client -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -1)
  [[ $v == "$EXPECTED_VERSION" ]] || { echo "kubectl client gitVersion=$v"; return 1; }
}
check "GET /version and kubectl version report $EXPECTED_VERSION (server and client)" version_matches
check "GET /readyz is ok" http_code 200 admin_curl "$SERVER/readyz"

# ---- nodes -------------------------------------------------------------------
nodes_ready() {
  local n; n=$(kubectl get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  ((n >= 3)) || { echo "$n Ready kwok nodes"; return 1; }
  local cpu; cpu=$(kubectl get nodes -l type=kwok -o jsonpath='{.items[0].status.allocatable.cpu}')
  [[ -n $cpu && $cpu != 0 ]] || { echo "allocatable cpu=$cpu"; return 1; }
}
check "at least 3 kwok nodes (type=kwok) are Ready with capacity" nodes_ready

# ---- namespace, default ServiceAccount -------------------------------------
check "create namespaces $NS and $OTHER_NS" kubectl create namespace "$NS"
kubectl create namespace "$OTHER_NS" >/dev/null
eventually 60 "controller-manager creates ServiceAccount default in $NS" kubectl get serviceaccount default -n "$NS"

# ---- validation: 422 -----------------------------------------------------------
cat >"$TMP/invalid-pod.json" <<'EOF'
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Invalid_Name"}, "spec": {"containers": []}}
EOF
invalid_rejected() {
  http_code 422 admin_curl -X POST -H 'Content-Type: application/json' \
    --data-binary "@$TMP/invalid-pod.json" "$SERVER/api/v1/namespaces/$NS/pods" || return 1
  grep -q '"reason": *"Invalid"' "$TMP/body" || { echo "no reason Invalid: $(head -c 400 "$TMP/body")"; return 1; }
}
check "an invalid Pod (bad name, no containers) is rejected with 422 Invalid" invalid_rejected

# ---- RBAC with a ServiceAccount token ----------------------------------------
kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: pod-reader
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: pod-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
subjects:
- kind: ServiceAccount
  name: pod-reader
  namespace: $NS
EOF
TOKEN=$(kubectl create token pod-reader -n "$NS" --duration 10m 2>&1) || fail "kubectl create token" "$TOKEN"
check "SA token may list pods in $NS (200)" http_code 200 token_curl "$SERVER/api/v1/namespaces/$NS/pods"
check "SA token may not list secrets in $NS (403)" http_code 403 token_curl "$SERVER/api/v1/namespaces/$NS/secrets"
check "SA token may not list pods in $OTHER_NS (403)" http_code 403 token_curl "$SERVER/api/v1/namespaces/$OTHER_NS/pods"
check "SA token may not create pods in $NS (403)" http_code 403 token_curl -X POST -H 'Content-Type: application/json' \
  --data-binary "@$TMP/invalid-pod.json" "$SERVER/api/v1/namespaces/$NS/pods"
check "a forged token is rejected (401)" http_code 401 curl -sS --max-time 10 --cacert "$TMP/ca.crt" \
  -H "Authorization: Bearer ${TOKEN%?????}AAAAA" "$SERVER/api/v1/namespaces/$NS/pods"

# ---- garbage collection --------------------------------------------------------
kubectl create configmap gc-owner -n "$NS" --from-literal=a=b >/dev/null
OWNER_UID=$(kubectl get configmap gc-owner -n "$NS" -o jsonpath='{.metadata.uid}')
kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: gc-child
  ownerReferences:
  - apiVersion: v1
    kind: ConfigMap
    name: gc-owner
    uid: $OWNER_UID
data:
  c: d
EOF
check "child ConfigMap exists with an ownerReference to gc-owner ($OWNER_UID)" \
  bash -c "[[ \$(kubectl get configmap gc-child -n '$NS' -o jsonpath='{.metadata.ownerReferences[0].uid}') == '$OWNER_UID' ]]"
kubectl delete configmap gc-owner -n "$NS" >/dev/null
child_gone() { ! kubectl get configmap gc-child -n "$NS" >/dev/null 2>&1; }
eventually 60 "garbage collector deletes the child once its owner is deleted" child_gone

# ---- pods on kwok nodes ----------------------------------------------------------
pod() { # name [stage]
  local labels="    app: smoke"
  [[ -n ${2:-} ]] && labels+=$'\n'"    $STAGE_LABEL: $2"
  kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  labels:
$labels
spec:
  containers:
  - name: main
    image: registry.invalid/runtime:smoke
    ports:
    - containerPort: 3000
EOF
}
pod ready-pod
pod crash-pod crashloop
pod pull-pod image-pull-error
pod unready-pod never-ready

field() { kubectl get pod "$1" -n "$NS" -o jsonpath="$2"; }

pod_ready() {
  local phase ready ip node cready started running
  phase=$(field ready-pod '{.status.phase}')
  ready=$(field ready-pod '{.status.conditions[?(@.type=="Ready")].status}')
  ip=$(field ready-pod '{.status.podIP}')
  cready=$(field ready-pod '{.status.containerStatuses[0].ready}')
  started=$(field ready-pod '{.status.containerStatuses[0].started}')
  running=$(field ready-pod '{.status.containerStatuses[0].state.running.startedAt}')
  node=$(field ready-pod '{.spec.nodeName}')
  [[ $phase == Running && $ready == True && -n $ip && $cready == true && $started == true && -n $running && -n $node ]] ||
    { echo "phase=$phase Ready=$ready podIP=$ip container ready=$cready started=$started running.startedAt=$running node=$node"; return 1; }
  [[ $(kubectl get node "$node" -o jsonpath='{.metadata.labels.type}') == kwok ]] || { echo "node $node is not a kwok node"; return 1; }
}
eventually 60 "default pod is scheduled on a kwok node, Running and Ready with a podIP" pod_ready

crashlooping() {
  local reason restarts code treason phase
  reason=$(field crash-pod '{.status.containerStatuses[0].state.waiting.reason}')
  restarts=$(field crash-pod '{.status.containerStatuses[0].restartCount}')
  code=$(field crash-pod '{.status.containerStatuses[0].lastState.terminated.exitCode}')
  treason=$(field crash-pod '{.status.containerStatuses[0].lastState.terminated.reason}')
  phase=$(field crash-pod '{.status.phase}')
  [[ $reason == CrashLoopBackOff && ${restarts:-0} -gt 0 && $code == 1 && $treason == Error && $phase == Running ]] ||
    { echo "waiting.reason=$reason restartCount=$restarts lastState.terminated.exitCode=$code reason=$treason phase=$phase"; return 1; }
}
eventually 60 "$STAGE_LABEL=crashloop: CrashLoopBackOff, restartCount>0, last exit code 1 (Error)" crashlooping
FIRST_RESTARTS=$(field crash-pod '{.status.containerStatuses[0].restartCount}')
restarts_rise() {
  local now; now=$(field crash-pod '{.status.containerStatuses[0].restartCount}')
  ((now > FIRST_RESTARTS)) || { echo "restartCount still $now"; return 1; }
}
eventually 30 "$STAGE_LABEL=crashloop: restartCount rises over time (was $FIRST_RESTARTS)" restarts_rise
check "$STAGE_LABEL=crashloop: pod is not Ready" \
  bash -c "[[ \$(kubectl get pod crash-pod -n '$NS' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}') == False ]]"

pull_failing() {
  local reason phase
  reason=$(field pull-pod '{.status.containerStatuses[0].state.waiting.reason}')
  phase=$(field pull-pod '{.status.phase}')
  [[ ($reason == ErrImagePull || $reason == ImagePullBackOff) && $phase == Pending ]] ||
    { echo "waiting.reason=$reason phase=$phase"; return 1; }
}
eventually 60 "$STAGE_LABEL=image-pull-error: ErrImagePull/ImagePullBackOff, phase Pending" pull_failing
pull_backoff() { [[ $(field pull-pod '{.status.containerStatuses[0].state.waiting.reason}') == ImagePullBackOff ]]; }
eventually 30 "$STAGE_LABEL=image-pull-error: reaches ImagePullBackOff" pull_backoff

never_ready() {
  local phase ready cready running ip
  phase=$(field unready-pod '{.status.phase}')
  ready=$(field unready-pod '{.status.conditions[?(@.type=="Ready")].status}')
  cready=$(field unready-pod '{.status.containerStatuses[0].ready}')
  running=$(field unready-pod '{.status.containerStatuses[0].state.running.startedAt}')
  ip=$(field unready-pod '{.status.podIP}')
  [[ $phase == Running && $ready == False && $cready == false && -n $running && -n $ip ]] ||
    { echo "phase=$phase Ready=$ready container ready=$cready running.startedAt=$running podIP=$ip"; return 1; }
}
eventually 60 "$STAGE_LABEL=never-ready: Running with a podIP, Ready=False, container ready=false" never_ready
sleep 3
check "$STAGE_LABEL=never-ready: still not Ready 3s later" never_ready

# ---- storage: default StorageClass, dynamic PV, pod with a PVC ----------------------
kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: 5Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: pvc-pod
spec:
  containers:
  - name: main
    image: registry.invalid/runtime:smoke
    volumeMounts:
    - name: data
      mountPath: /workspace
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: data
EOF
pvc_bound() {
  local phase class; phase=$(kubectl get pvc data -n "$NS" -o jsonpath='{.status.phase}')
  class=$(kubectl get pvc data -n "$NS" -o jsonpath='{.spec.storageClassName}')
  [[ $phase == Bound && $class == standard ]] || { echo "phase=$phase storageClassName=$class"; return 1; }
}
eventually 60 "a PVC without storageClassName gets the default class and is Bound to a provisioned PV" pvc_bound
pvc_pod_ready() {
  [[ $(field pvc-pod '{.status.conditions[?(@.type=="Ready")].status}') == True ]] ||
    { echo "pvc-pod: $(field pvc-pod '{.status.phase} {.status.conditions}')"; return 1; }
}
eventually 60 "a pod mounting the PVC is scheduled and Ready" pvc_pod_ready
PV=$(kubectl get pvc data -n "$NS" -o jsonpath='{.spec.volumeName}')
kubectl delete pod pvc-pod -n "$NS" --wait=false >/dev/null
kubectl delete pvc data -n "$NS" --wait=false >/dev/null
pv_gone() { ! kubectl get pv "$PV" >/dev/null 2>&1; }
eventually 60 "deleting the PVC deletes its PV ($PV, reclaimPolicy Delete)" pv_gone

# ---- graceful deletion completes ---------------------------------------------------
check "delete pods (default grace period)" kubectl delete pod ready-pod crash-pod pull-pod unready-pod -n "$NS" --wait=false
pods_gone() {
  local left; left=$(kubectl get pods -n "$NS" -o name)
  [[ -z $left ]] || { echo "left: $left"; return 1; }
}
eventually 60 "deleted pods disappear (kwok finalises graceful deletion)" pods_gone

# ---- namespace deletion --------------------------------------------------------------
kubectl delete namespace "$OTHER_NS" --wait=false >/dev/null
ns_gone() { ! kubectl get namespace "$OTHER_NS" >/dev/null 2>&1; }
eventually 60 "namespace $OTHER_NS is deleted (namespace controller)" ns_gone

echo "== $PASSED passed, $FAILED failed"
((FAILED == 0))
