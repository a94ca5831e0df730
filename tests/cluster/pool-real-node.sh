#!/usr/bin/env bash
# tests/cluster/pool-real-node.sh - the warm pool with real agent-server pods on the real node.
#
#   eval "$(scripts/cluster.sh up)"; tests/cluster/pool-real-node.sh
#
# One instance of the service (the binary, $RUNTIME_API_BIN or $CARGO_TARGET_DIR/debug/runtime-api)
# runs on this machine with BACKEND=kubernetes, ROUTING_MODE=gateway and a warm pool of two
# dormant agent servers (deferred init) of the shape the client asks for. Checks:
#  - the leader fills the pool: two member pods Ready on the real node, never in /list;
#  - the real SDK from this machine (tests/cluster/in_cluster_client.py, CLIENT_MODE=gateway):
#    its first sandbox is a claimed member (the claim metrics say warm), and everything the
#    client checks holds for it: commands, the request's environment, the session key required
#    (401 without it), the pod spec's promises, upload/download, pause and resume from the record
#    with the workspace volume, stop; then three at once (members and, once they run out, cold
#    starts);
#  - the pool refills to two; nothing of a stopped runtime is left, only the members;
#  - a restarted service adopts the members it finds (no new member pods).
# Prints the SDK's start -> first command for the warm sandbox.
set -uo pipefail

: "${KUBECONFIG:?KUBECONFIG must point at the cluster (eval \"\$(scripts/cluster.sh up)\")}"
: "${RUNTIME_API_REAL_NODE:?no real node: run scripts/cluster.sh up without CLUSTER_REAL_NODE=0}"
: "${RUNTIME_API_AGENT_IMAGE:?RUNTIME_API_AGENT_IMAGE missing from the export lines}"
for c in kubectl curl; do command -v $c >/dev/null || { echo "$c not on PATH" >&2; exit 2; }; done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${RUNTIME_API_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/runtime-api}
[[ -x $BIN ]] || { echo "no runtime-api binary at $BIN (cargo build)" >&2; exit 2; }

NODE=$RUNTIME_API_REAL_NODE
TAINT=${RUNTIME_API_REAL_NODE_TAINT:-runtime-api.test/real-node}
STORAGE_CLASS=${RUNTIME_API_NODE_STORAGE_CLASS:-node-local}
NS="pool-$$-$RANDOM"
KEY="pool-test-$RANDOM$RANDOM"
TMP=$(mktemp -d)
MEMORY_LIMIT_MI=1024
POOL_SIZE=2
MEMBER_LABEL=runtime-api.openhands.dev/pool-state
POOL_LABEL=runtime-api.openhands.dev/pool
SERVICE_PID=

# shellcheck source=checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

cleanup() {
  [[ -n $SERVICE_PID ]] && kill "$SERVICE_PID" 2>/dev/null
  wait 2>/dev/null
  kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kubectl create namespace "$NS" >/dev/null
API_PORT=$(free_port) GW_PORT=$(free_port)

# WARM_POOL_SIZE: a pool of the SDK's own request shape for DEFAULT_IMAGE (its command, working
# directory /, user 10001, factor 1), as an operator of an OpenHands installation configures it.
start_service() {
  env -i PATH="$PATH" HOME="$TMP" KUBECONFIG="$KUBECONFIG" API_KEY="$KEY" BACKEND=kubernetes \
    NAMESPACE="$NS" SERVER_PORT="$API_PORT" ROUTING_MODE=gateway GATEWAY_PORT="$GW_PORT" \
    GATEWAY_URL="http://*.localhost:$GW_PORT" POD_NAME="pool-replica" \
    DEFAULT_IMAGE="$RUNTIME_API_AGENT_IMAGE" \
    WARM_POOL_SIZE=$POOL_SIZE \
    SANDBOX_NODE_SELECTOR="kubernetes.io/hostname=$NODE" SANDBOX_TOLERATIONS="$TAINT:NoSchedule" \
    SANDBOX_CPU_REQUEST=50m SANDBOX_MEMORY_REQUEST=64Mi SANDBOX_CPU_LIMIT=1 \
    SANDBOX_MEMORY_LIMIT=${MEMORY_LIMIT_MI}Mi WORKSPACE_STORAGE_SIZE=64Mi \
    WORKSPACE_STORAGE_CLASS="$STORAGE_CLASS" RUNTIME_IDLE_SECONDS=0 LEASE_DURATION_SECONDS=5 \
    MAINTENANCE_INTERVAL_SECONDS=2 RUST_LOG=info \
    "$BIN" >>"$TMP/service.log" 2>&1 &
  SERVICE_PID=$!
}
metric() { # metric NAME_AND_LABELS: its value in /metrics (0 when absent)
  curl -sf "http://127.0.0.1:$API_PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 { v = $NF } END { print v + 0 }'
}
api() { curl -sS -H "X-API-Key: $KEY" "http://127.0.0.1:$API_PORT$1" "${@:2}"; }

start_service
eventually 30 "the service is ready" curl -sf "http://127.0.0.1:$API_PORT/readyz"
members_ready() {
  local ready; ready=$(metric 'runtime_api_pool_ready{pool="default"}')
  [[ $ready == "$POOL_SIZE" ]] || { echo "ready members: $ready"; return 1; }
}
T0=$SECONDS
eventually 600 "the leader fills the pool: $POOL_SIZE dormant agent servers ready on $NODE" members_ready
echo "      filled in $((SECONDS - T0))s"
member_pods() { kubectl get pods -n "$NS" -l "$MEMBER_LABEL" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort; }
MEMBERS=$(member_pods)
on_node() { [[ $(kubectl get pods -n "$NS" -l "$MEMBER_LABEL" -o jsonpath='{.items[*].spec.nodeName}') == "$NODE $NODE" ]]; }
check "the members are pods on the real node" on_node
no_member_listed() { [[ $(api '/list?status=all' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runtimes"]))') == 0 ]]; }
check "members are not runtimes: /list is empty" no_member_listed

PYENV=$("$ROOT/scripts/python.sh") || exit 2
(
  eval "$PYENV"
  CLIENT_MODE=gateway GATEWAY_PORT=$GW_PORT RUNTIME_API_URL="http://127.0.0.1:$API_PORT" \
    RUNTIME_API_KEY="$KEY" AGENT_IMAGE="$RUNTIME_API_AGENT_IMAGE" RESOURCE_FACTOR=1 \
    E2E_MARKER="pool-marker-$RANDOM" EXPECTED_MEMORY_MAX=$((MEMORY_LIMIT_MI * 1024 * 1024)) \
    timeout 1200 python -u tests/cluster/in_cluster_client.py
) >"$TMP/client.log" 2>&1
CLIENT_RC=$?
grep -E '^(PASS|FAIL|TIMING|    > )' "$TMP/client.log" | sed 's/^/  client: /'
client_ok() {
  [[ $CLIENT_RC == 0 ]] && grep -q '^OK: 0 failed' "$TMP/client.log" \
    && (($(grep -c '^PASS' "$TMP/client.log") >= 19)) || { tail -n 40 "$TMP/client.log"; return 1; }
}
check "the SDK from this machine passed all its checks on pool sandboxes" client_ok
FIRST=$(sed -n 's/^RUNTIME //p' "$TMP/client.log" | head -1)
first_was_a_member() { grep -qx "oh-rt-$FIRST\(-[0-9]*\)\?" <<<"$MEMBERS" || { echo "$FIRST not in: $MEMBERS"; return 1; }; }
check "the SDK's first sandbox was a claimed member (its pod was in the pool before the start)" first_was_a_member
hits() { (($(metric 'runtime_api_pool_claims_total{pool="default",outcome="hit"}') >= 2)) || { curl -s "http://127.0.0.1:$API_PORT/metrics" | grep pool; return 1; }; }
check "claims: at least two warm starts (the first sandbox, then the three at once)" hits
warm_timed() { (($(metric 'runtime_api_start_path_duration_seconds_count{start="warm"}') >= 2)); }
check "/start durations are recorded as warm" warm_timed
grep -h '^TIMING' "$TMP/client.log" | sed 's/^TIMING /FIGURE warm pool on the real node: /'

eventually 600 "the pool refills to $POOL_SIZE" members_ready
only_members_left() { # every object of a member carries the pool label; a claimed one loses it
  local out
  out=$(kubectl get configmaps,secrets,pods,services,persistentvolumeclaims -n "$NS" \
    -l "app.kubernetes.io/managed-by=runtime-api,!$POOL_LABEL" -o name 2>&1)
  [[ -z $out ]] || { echo "$out"; return 1; }
}
eventually 60 "nothing of the client's runtimes is left, only the members (and their Secrets and claims)" only_members_left

# A restarted service finds its members and claims them; it creates none.
BEFORE=$(member_pods)
kill "$SERVICE_PID"; wait "$SERVICE_PID" 2>/dev/null
start_service
eventually 30 "the restarted service is ready" curl -sf "http://127.0.0.1:$API_PORT/readyz"
eventually 60 "the restarted service counts the $POOL_SIZE members it finds" members_ready
sleep 5
check "the restarted service made no new member" test "$(member_pods)" = "$BEFORE"

if ((FAILED > 0)); then
  echo "--- service log (tail)"; tail -n 40 "$TMP/service.log"
fi
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
