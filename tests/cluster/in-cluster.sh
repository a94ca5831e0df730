#!/usr/bin/env bash
# tests/cluster/in-cluster.sh - runtime-api as an operator runs it: installed by its Helm chart on
# the real node (two replicas, the chart's ServiceAccount and Role, in-cluster configuration, no
# kubeconfig), and OpenHands' real SDK client in a pod beside it, driving real sandbox pods by
# their in-cluster Service names (ROUTING_MODE=service).
#
#   eval "$(scripts/cluster.sh up)"; tests/cluster/in-cluster.sh
#
# Needs the export lines of `up` (the real node, RUNTIME_API_RUNTIME_IMAGE: the service's image
# built from the binary of this checkout, RUNTIME_API_AGENT_IMAGE, RUNTIME_API_CTR), kubectl, curl
# and go (Helm via scripts/helm.sh). Checks:
#  - helm install: 2 replicas Ready on the real node, the leader Lease held by one of them,
#    /readyz through the release's Service from this machine;
#  - the SDK in a pod (tests/cluster/in_cluster_client.py: its checks are printed here): start,
#    commands, what the pod spec promises seen from inside the sandbox, upload/download,
#    pause/resume with the workspace volume, stop; both list forms of `command`; three sandboxes
#    at once; idle pause by the leader (through the Service name) and resume; failures as the
#    kubelet and scheduler report them (image, crash loop, unschedulable), each then paused by
#    the failure cleanup (RUNTIME_FAILED_SECONDS); the leader's pod
#    deleted during ten concurrent SDK starts (one sandbox per session, the Lease moves);
#  - after the client: no sandbox object, claim, volume, pod or container is left;
#  - helm upgrade with a changed setting rolls both replicas while a client polls /list through
#    the Service: no request fails;
#  - the release switched to ROUTING_MODE=gateway, its gateway Service port-forwarded to this
#    machine, and the same SDK client here (CLIENT_MODE=gateway): start, commands, the pod spec's
#    promises, upload/download, pause/resume with the workspace volume, stop, three at once;
#    nothing left after it.
# Prints every check, exits non-zero if any failed, deletes its namespace.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
: "${KUBECONFIG:?KUBECONFIG must point at the cluster (eval \"\$(scripts/cluster.sh up)\")}"
: "${RUNTIME_API_REAL_NODE:?no real node: run scripts/cluster.sh up without CLUSTER_REAL_NODE=0}"
: "${RUNTIME_API_RUNTIME_IMAGE:?RUNTIME_API_RUNTIME_IMAGE missing from the export lines}"
: "${RUNTIME_API_AGENT_IMAGE:?RUNTIME_API_AGENT_IMAGE missing from the export lines}"
: "${RUNTIME_API_CTR:?RUNTIME_API_CTR missing from the export lines}"
for c in kubectl curl; do command -v $c >/dev/null || { echo "$c not on PATH" >&2; exit 2; }; done

NODE=$RUNTIME_API_REAL_NODE
TAINT=${RUNTIME_API_REAL_NODE_TAINT:-runtime-api.test/real-node}
STORAGE_CLASS=${RUNTIME_API_NODE_STORAGE_CLASS:-node-local}
NS="in-cluster-$$-$RANDOM"
RELEASE=rt
FULLNAME=$RELEASE-runtime-api
API_KEY="in-cluster-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
HELM=$(scripts/helm.sh) || exit 2
TMP=$(mktemp -d)
CLIENT_TIMEOUT=${IN_CLUSTER_CLIENT_TIMEOUT:-1500}
# Sandboxes: small requests, so twenty fit on the node; limits the agent server lives with (it
# was OOM-killed at 256Mi); the client asks for resource_factor 2.
MEMORY_LIMIT_MI=1024
FACTOR=2
IDLE_SECONDS=60
FAILED_SECONDS=20

cleanup() {
  "$HELM" uninstall "$RELEASE" -n "$NS" --wait=false >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

echo "== runtime-api $RUNTIME_API_RUNTIME_IMAGE on $NODE, sandboxes from $RUNTIME_API_AGENT_IMAGE"
kubectl create namespace "$NS" >/dev/null || exit 2

# ------------------------------------------------------------- install ----
cat >"$TMP/values.yaml" <<EOF
apiKey: "$API_KEY"
image:
  repository: "${RUNTIME_API_RUNTIME_IMAGE%:*}"
  tag: "${RUNTIME_API_RUNTIME_IMAGE##*:}"
nodeSelector: {kubernetes.io/hostname: $NODE}
tolerations: [{key: $TAINT, operator: Exists, effect: NoSchedule}]
config:
  logFormat: text
  routingMode: service
  ingressNamespace: $NS
  defaultImage: "$RUNTIME_API_AGENT_IMAGE"
  registryPrefix: "${RUNTIME_API_AGENT_IMAGE%%/*}"
  sandboxNodeSelector: {kubernetes.io/hostname: $NODE}
  sandboxTolerations: ["$TAINT:NoSchedule"]
  sandboxCpuRequest: 50m
  sandboxMemoryRequest: 64Mi
  sandboxCpuLimit: "1"
  sandboxMemoryLimit: ${MEMORY_LIMIT_MI}Mi
  workspaceStorageSize: 64Mi
  workspaceStorageClass: $STORAGE_CLASS
  leaseDurationSeconds: 5
  runtimeIdleSeconds: $IDLE_SECONDS
  runtimeFailedSeconds: $FAILED_SECONDS
  maintenanceIntervalSeconds: 5
EOF
check "helm install of charts/runtime-api (2 replicas on the real node, ROUTING_MODE=service)" \
  "$HELM" install "$RELEASE" charts/runtime-api -n "$NS" -f "$TMP/values.yaml" --wait --timeout 180s

SEL="app.kubernetes.io/name=runtime-api,app.kubernetes.io/instance=$RELEASE"
two_ready_on_node() {
  local out; out=$(kubectl get pods -n "$NS" -l "$SEL" -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')
  [[ $(grep -c "^$NODE True$" <<<"$out") == 2 ]] || { echo "$out"; return 1; }
}
eventually 60 "both replicas Ready on $NODE" two_ready_on_node
no_kubeconfig() { # the service runs on its ServiceAccount's token, with no kubeconfig at all
  local spec; spec=$(kubectl get deployment "$FULLNAME" -n "$NS" -o json)
  ! grep -qi kubeconfig <<<"$spec" && grep -q "\"serviceAccountName\": \"$FULLNAME\"" <<<"$spec" || { echo "$spec" | head -40; return 1; }
}
check "in-cluster configuration: the chart's ServiceAccount, no kubeconfig" no_kubeconfig
leader_is_a_replica() {
  local holder; holder=$(kubectl get lease runtime-api-leader -n "$NS" -o jsonpath='{.spec.holderIdentity}') || return 1
  kubectl get pods -n "$NS" -l "$SEL" -o name | grep -qx "pod/$holder" || { echo "holder '$holder'"; return 1; }
}
eventually 60 "the leader Lease is held by one of the replicas" leader_is_a_replica
readyz() {
  local ip; ip=$(kubectl get service "$FULLNAME" -n "$NS" -o jsonpath='{.spec.clusterIP}') || return 1
  curl -fsS --max-time 3 "http://$ip/readyz"
}
eventually 60 "/readyz through the release's Service (ClusterIP, from this machine)" readyz

# --------------------------------------------------------------- client ----
MARKER="marker-$RANDOM$RANDOM"
kubectl create configmap in-cluster-client -n "$NS" --from-file=tests/cluster/in_cluster_client.py >/dev/null
# The client may read the leader Lease and delete the service's pods (the failover check), no more.
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: $NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: client, namespace: $NS}
rules:
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get]}
- {apiGroups: [""], resources: [pods], verbs: [delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: client, namespace: $NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: client}
subjects: [{kind: ServiceAccount, name: client, namespace: $NS}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: $NS}
spec:
  serviceAccountName: client
  nodeSelector: {kubernetes.io/hostname: $NODE}
  tolerations: [{key: $TAINT, operator: Exists, effect: NoSchedule}]
  restartPolicy: Never
  securityContext: {runAsUser: 10001, runAsGroup: 10001, runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: client
    image: $RUNTIME_API_AGENT_IMAGE
    command: [/agent-server/.venv/bin/python, -u, /client/in_cluster_client.py]
    env:
    - {name: RUNTIME_API_URL, value: "http://$FULLNAME.$NS.svc.cluster.local"}
    - {name: RUNTIME_API_KEY, value: "$API_KEY"}
    - {name: AGENT_IMAGE, value: "$RUNTIME_API_AGENT_IMAGE"}
    - {name: RESOURCE_FACTOR, value: "$FACTOR"}
    - {name: EXPECTED_MEMORY_MAX, value: "$((MEMORY_LIMIT_MI * FACTOR * 1024 * 1024))"}
    - {name: E2E_MARKER, value: "$MARKER"}
    - {name: IDLE_SECONDS, value: "$IDLE_SECONDS"}
    - {name: FAILED_SECONDS, value: "$FAILED_SECONDS"}
    - {name: NAMESPACE, value: "$NS"}
    - {name: LEASE_NAME, value: runtime-api-leader}
    - {name: HOME, value: /tmp}
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: client, mountPath: /client}]
  volumes: [{name: client, configMap: {name: in-cluster-client}}]
EOF
client_done() {
  local phase; phase=$(kubectl get pod client -n "$NS" -o jsonpath='{.status.phase}')
  [[ $phase == Succeeded || $phase == Failed ]] || { echo "phase $phase"; return 1; }
}
echo "== the SDK client in a pod (up to ${CLIENT_TIMEOUT}s)"
deadline=$((SECONDS + CLIENT_TIMEOUT))
until client_done >/dev/null || ((SECONDS > deadline)); do sleep 3; done
kubectl logs client -n "$NS" >"$TMP/client.log" 2>&1
grep -E '^(PASS|FAIL|TIMING|    > )' "$TMP/client.log" | sed 's/^/  client: /'
client_ok() {
  [[ $(kubectl get pod client -n "$NS" -o jsonpath='{.status.phase}') == Succeeded ]] \
    && grep -q '^OK: 0 failed' "$TMP/client.log" && (($(grep -c '^PASS' "$TMP/client.log") >= 33)) \
    || { tail -n 40 "$TMP/client.log"; return 1; }
}
check "the in-cluster SDK client passed all its checks" client_ok

# ---------------------------------------------------------- nothing left ----
RUNTIMES=$(sed -n 's/^RUNTIME //p' "$TMP/client.log")
check "the client reported its twenty runtimes" test "$(wc -w <<<"$RUNTIMES")" -eq 20
# The sandboxes' shared NetworkPolicy (one per namespace, kept by the service) stays.
nothing_left() {
  local out
  out=$(kubectl get configmaps,secrets,pods,services,ingresses,networkpolicies,persistentvolumeclaims \
    -n "$NS" -l app.kubernetes.io/managed-by=runtime-api -o name 2>&1 \
    | grep -vx 'networkpolicy.networking.k8s.io/oh-sandboxes')
  [[ -z $out ]] || { echo "$out"; return 1; }
}
check "the sandboxes' shared NetworkPolicy is in place" kubectl get networkpolicy oh-sandboxes -n "$NS"
eventually 60 "no sandbox object is left in the namespace (records, Secrets, pods, Services, claims)" nothing_left
no_volume_left() {
  local out; out=$(kubectl get pv -o jsonpath="{range .items[?(@.spec.claimRef.namespace==\"$NS\")]}{.metadata.name} {.spec.claimRef.name}{\"\\n\"}{end}")
  [[ -z $out ]] || { echo "$out"; return 1; }
}
eventually 60 "no workspace volume is left" no_volume_left
# containers POD_NAME_REGEX: containerd's containers of this namespace's pods so named.
containers() {
  # shellcheck disable=SC2086 # RUNTIME_API_CTR is a command with its arguments
  $RUNTIME_API_CTR -n k8s.io containers ls -q \
    "labels.\"io.kubernetes.pod.namespace\"==$NS,labels.\"io.kubernetes.pod.name\"~=$1"
}
# The same query finds the service's own containers, so an empty answer below means something.
check "containerd lists the service's containers (the query below works)" test -n "$(containers "^$FULLNAME-")"
no_container_left() {
  local out; out=$(containers '^oh-rt-')
  [[ -z $out ]] || { echo "$out"; return 1; }
}
eventually 60 "no sandbox container is left on the node (containerd)" no_container_left

# ------------------------------------------------------------- upgrade ----
# helm upgrade with a changed setting rolls both replicas while a client keeps asking: the PDB,
# maxUnavailable 0, the preStop sleep and the graceful shutdown must lose no request.
IP=$(kubectl get service "$FULLNAME" -n "$NS" -o jsonpath='{.spec.clusterIP}')
OLD_PODS=$(kubectl get pods -n "$NS" -l "$SEL" -o name | sort)
(
  while [[ ! -e $TMP/stop-load ]]; do
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 10 -H "X-API-Key: $API_KEY" "http://$IP/list" >>"$TMP/codes"
    sleep 0.1
  done
) &
LOAD=$!
check "helm upgrade with another config.logFormat rolls out" \
  "$HELM" upgrade "$RELEASE" charts/runtime-api -n "$NS" -f "$TMP/values.yaml" --set config.logFormat=json --wait --timeout 240s
sleep 8   # requests to the last replaced pod's final seconds
touch "$TMP/stop-load"; wait "$LOAD"
replaced() {
  local now; now=$(kubectl get pods -n "$NS" -l "$SEL" --field-selector=status.phase=Running -o name | sort)
  [[ -n $now && -z $(comm -12 <(echo "$OLD_PODS") <(echo "$now")) ]] || { echo "old: $OLD_PODS now: $now"; return 1; }
}
eventually 60 "both replicas were replaced" replaced
no_failed_request() {
  local total bad; total=$(wc -l <"$TMP/codes"); bad=$(grep -cvx 200 "$TMP/codes")
  echo "$total requests during the upgrade, $bad not 200: $(sort "$TMP/codes" | uniq -c | tr '\n' ' ')"
  ((total > 50 && bad == 0))
}
check "no request failed while the replicas rolled" no_failed_request
grep -h "requests during the upgrade" <(no_failed_request) | sed 's/^/      /'

# ------------------------------------------- the SDK from this machine ----
# The same release switched to ROUTING_MODE=gateway, its gateway Service reached from this machine
# by `kubectl port-forward` (as an operator tries it before any Ingress or load balancer), and the
# real SDK here: runtime URLs http://{id}.localhost:PORT, every sandbox request through the gateway
# of a replica in the cluster.
GW_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
check "helm upgrade to ROUTING_MODE=gateway (GATEWAY_URL http://*.localhost:$GW_PORT, no Ingress)" \
  "$HELM" upgrade "$RELEASE" charts/runtime-api -n "$NS" -f "$TMP/values.yaml" --set config.logFormat=json \
  --set config.routingMode=gateway --set-string "config.gatewayUrl=http://*.localhost:$GW_PORT" \
  --set gateway.ingress.enabled=false --wait --timeout 240s
two_running() { [[ $(kubectl get pods -n "$NS" -l "$SEL" -o name | wc -l) == 2 ]] && two_ready_on_node; }
eventually 120 "two replicas again, both Ready (the old ones gone)" two_running
kubectl port-forward -n "$NS" "service/$FULLNAME-gateway" "$GW_PORT:80" >"$TMP/port-forward.log" 2>&1 &
FORWARD=$!
forwarding() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$GW_PORT/" | grep -qx 404; }
eventually 30 "kubectl port-forward to the gateway Service answers (404 for no sandbox)" forwarding
PYENV=$(scripts/python.sh) || exit 2
(
  eval "$PYENV"
  CLIENT_MODE=gateway GATEWAY_PORT=$GW_PORT RUNTIME_API_URL="http://$IP" RUNTIME_API_KEY="$API_KEY" \
    AGENT_IMAGE="$RUNTIME_API_AGENT_IMAGE" RESOURCE_FACTOR=$FACTOR E2E_MARKER="$MARKER" \
    EXPECTED_MEMORY_MAX=$((MEMORY_LIMIT_MI * FACTOR * 1024 * 1024)) \
    timeout "$CLIENT_TIMEOUT" python -u tests/cluster/in_cluster_client.py
) >"$TMP/host-client.log" 2>&1
HOST_RC=$?
kill "$FORWARD" 2>/dev/null; wait "$FORWARD" 2>/dev/null
grep -E '^(PASS|FAIL|TIMING|    > )' "$TMP/host-client.log" | sed 's/^/  host client: /'
host_client_ok() {
  [[ $HOST_RC == 0 ]] && grep -q '^OK: 0 failed' "$TMP/host-client.log" \
    && (($(grep -c '^PASS' "$TMP/host-client.log") >= 19)) || { tail -n 40 "$TMP/host-client.log"; return 1; }
}
check "the SDK from this machine through the port-forwarded gateway passed all its checks" host_client_ok
check "no Ingress exists in gateway mode" test -z "$(kubectl get ingresses -n "$NS" -o name)"
HOST_RUNTIMES=$(sed -n 's/^RUNTIME //p' "$TMP/host-client.log")
check "the host client reported its four runtimes" test "$(wc -w <<<"$HOST_RUNTIMES")" -eq 4
eventually 60 "after the host client no sandbox object is left" nothing_left
eventually 60 "after the host client no workspace volume is left" no_volume_left
eventually 60 "after the host client no sandbox container is left on the node" no_container_left

echo
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
