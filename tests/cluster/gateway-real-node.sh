#!/usr/bin/env bash
# tests/cluster/gateway-real-node.sh - the sandbox gateway with real pods on the real node.
#
#   eval "$(scripts/cluster.sh up)"; tests/cluster/gateway-real-node.sh
#
# Two replicas of the service (the binary, $RUNTIME_API_BIN or $CARGO_TARGET_DIR/debug/runtime-api)
# run on this machine with BACKEND=kubernetes and ROUTING_MODE=gateway, and reach pod IPs over the
# node's bridge. A real agent-server pod (the image built by scripts/images.sh) is started through
# the API and used through either replica's gateway (by path and by host); no Ingress exists; then
# it is paused, and 10 requests to each replica's gateway wake it: every request answered, the
# record's pod generation moved by exactly one, one Resumed event. Prints the wake latency. Then the
# real SDK from this machine goes through a third instance's gateway (gateway_sdk_client.py):
# commands, 50 MB up and down, the bash-events WebSocket, a paused sandbox woken by a command.
#
# Sandbox pods tolerate the real node's taint (SANDBOX_TOLERATIONS), as an operator with a
# dedicated sandbox node pool configures it.
set -uo pipefail

: "${KUBECONFIG:?KUBECONFIG must point at the cluster (eval \"\$(scripts/cluster.sh up)\")}"
: "${RUNTIME_API_REAL_NODE:?no real node: run scripts/cluster.sh up without CLUSTER_REAL_NODE=0}"
: "${RUNTIME_API_AGENT_IMAGE:?RUNTIME_API_AGENT_IMAGE missing from the export lines}"
for c in kubectl curl jq; do command -v $c >/dev/null || { echo "$c not on PATH" >&2; exit 2; }; done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${RUNTIME_API_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/runtime-api}
[[ -x $BIN ]] || { echo "no runtime-api binary at $BIN (cargo build)" >&2; exit 2; }

NODE=$RUNTIME_API_REAL_NODE
TAINT=${RUNTIME_API_REAL_NODE_TAINT:-runtime-api.test/real-node}
NS="gw-$$-$RANDOM"
KEY="gw-test-$RANDOM$RANDOM"
TMP=$(mktemp -d)
PIDS=()

# shellcheck source=checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kubectl create namespace "$NS" >/dev/null

# replica N: API on API[N], gateway on GW[N]
API=() GW=()
for n in 0 1; do
  API[n]=$(free_port); GW[n]=$(free_port)
  env -i PATH="$PATH" HOME="$TMP" KUBECONFIG="$KUBECONFIG" API_KEY="$KEY" BACKEND=kubernetes \
    NAMESPACE="$NS" SERVER_PORT="${API[n]}" ROUTING_MODE=gateway GATEWAY_PORT="${GW[n]}" \
    GATEWAY_URL="http://127.0.0.1:${GW[0]}" BASE_DOMAIN=sb.test POD_NAME="replica-$n" \
    SANDBOX_NODE_SELECTOR="kubernetes.io/hostname=$NODE" SANDBOX_TOLERATIONS="$TAINT:NoSchedule" \
    SANDBOX_CPU_REQUEST=100m \
    SANDBOX_MEMORY_REQUEST=256Mi RUNTIME_IDLE_SECONDS=0 RUST_LOG=info \
    "$BIN" >"$TMP/replica-$n.log" 2>&1 &
  PIDS+=($!)
done
api() { curl -sS -H "X-API-Key: $KEY" -H 'Content-Type: application/json' "http://127.0.0.1:${API[0]}$1" "${@:2}"; }
eventually 30 "both replicas are ready" bash -c "curl -sf http://127.0.0.1:${API[0]}/readyz && curl -sf http://127.0.0.1:${API[1]}/readyz"

START=$(jq -n --arg image "$RUNTIME_API_AGENT_IMAGE" '{session_id: "gateway-real-node", image: $image,
  command: ["/usr/local/bin/openhands-agent-server", "--host", "0.0.0.0", "--port", "60000"],
  environment: {LITELLM_LOCAL_MODEL_COST_MAP: "True"}}')
RT=$(api /start -d "$START")
ID=$(jq -r .runtime_id <<<"$RT")
SKEY=$(jq -r .session_api_key <<<"$RT")
check "the runtime URL is on the gateway" test "$(jq -r .url <<<"$RT")" = "http://127.0.0.1:${GW[0]}/$ID"
running() { [[ $(api "/runtime/$ID" | jq -r .status) == running ]]; }
eventually 300 "the agent-server pod on the real node becomes running" running
through() { curl -sf --max-time 240 "$@"; }
check "replica 0's gateway forwards /{id}/alive to the pod" through "http://127.0.0.1:${GW[0]}/$ID/alive"
check "replica 1's gateway forwards by host ({id}.sb.test)" through -H "Host: $ID.sb.test" "http://127.0.0.1:${GW[1]}/alive"
bash_output() {
  through -X POST -H "X-Session-API-Key: $SKEY" -H 'Content-Type: application/json' \
    -d '{"command": "echo real-$((6*7))"}' "http://127.0.0.1:${GW[1]}/$ID/api/bash/execute_bash_command"
}
OUT=$(bash_output 2>&1)
check "a command runs in the pod through the gateway" bash -c 'grep -q real-42 <<<"$1" || { echo "$1"; exit 1; }' _ "$OUT"
check "no Ingress exists in gateway mode" test "$(kubectl get ingresses -n "$NS" -o name | wc -l)" = 0

RECORD=$(kubectl get configmaps -n "$NS" -l "runtime-api.openhands.dev/runtime-id=$ID,runtime-api.openhands.dev/component=record" -o name)
generation() { kubectl get "$RECORD" -n "$NS" -o jsonpath='{.metadata.annotations.runtime-api\.openhands\.dev/pod-generation}'; }
GEN=$(generation)
check "pause" test "$(api /pause -d "{\"runtime_id\": \"$ID\"}" | jq -r .status)" = paused
sleep 2   # both replicas' caches see the pause
T0=$(date +%s.%N)
for n in 0 1; do
  for i in $(seq 10); do
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 300 "http://127.0.0.1:${GW[n]}/$ID/alive" >"$TMP/wake-$n-$i" &
  done
done
wait_wakes() { for f in "$TMP"/wake-*; do [[ $(cat "$f") == 200 ]] || { echo "$f: $(cat "$f")"; return 1; }; done; }
sleep 1; while jobs -r | grep -q curl; do sleep 0.2; done
T1=$(date +%s.%N)
check "20 requests over two replicas to the paused runtime: all answered 200" wait_wakes
check "one resume: the pod generation moved by exactly one ($GEN -> $((GEN + 1)))" test "$(generation)" = $((GEN + 1))
resumed_events() { kubectl get events -n "$NS" --field-selector reason=Resumed -o name | wc -l; }
check "one Resumed event" test "$(resumed_events)" = 1
printf 'FIGURE wake latency on the real node (paused -> 20 requests answered): %.1f s\n' "$(echo "$T1 - $T0" | bc)"

api /stop -d "{\"runtime_id\": \"$ID\"}" >/dev/null
gone() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${GW[1]}/$ID/alive") == 404 ]]; }
eventually 30 "after stop the gateway answers 404" gone

# The real SDK from this machine through a gateway (tests/cluster/gateway_sdk_client.py): it needs
# host-shaped runtime URLs, so a third instance hands out http://{id}.localhost:PORT.
API[2]=$(free_port); GW[2]=$(free_port)
env -i PATH="$PATH" HOME="$TMP" KUBECONFIG="$KUBECONFIG" API_KEY="$KEY" BACKEND=kubernetes \
  NAMESPACE="$NS" SERVER_PORT="${API[2]}" ROUTING_MODE=gateway GATEWAY_PORT="${GW[2]}" \
  GATEWAY_URL="http://*.localhost:${GW[2]}" POD_NAME="replica-2" \
  SANDBOX_NODE_SELECTOR="kubernetes.io/hostname=$NODE" SANDBOX_TOLERATIONS="$TAINT:NoSchedule" \
  SANDBOX_CPU_REQUEST=100m \
  SANDBOX_MEMORY_REQUEST=256Mi RUNTIME_IDLE_SECONDS=0 RUST_LOG=info \
  "$BIN" >"$TMP/replica-2.log" 2>&1 &
PIDS+=($!)
eventually 30 "a third instance (runtime URLs http://{id}.localhost:PORT) is ready" curl -sf "http://127.0.0.1:${API[2]}/readyz"
PYENV=$("$ROOT/scripts/python.sh") || exit 2
eval "$PYENV"
python "$ROOT/tests/cluster/gateway_sdk_client.py" "http://127.0.0.1:${API[2]}" "$KEY" "${GW[2]}" \
  "$RUNTIME_API_AGENT_IMAGE" >"$TMP/sdk.log" 2>&1
SDK_RC=$?
grep -E '^(PASS|FAIL)' "$TMP/sdk.log" | sed 's/^/  sdk: /'
sdk_ok() { [[ $SDK_RC == 0 ]] && grep -q '^OK: 0 failed' "$TMP/sdk.log" && (($(grep -c '^PASS' "$TMP/sdk.log") >= 8)) || { tail -n 30 "$TMP/sdk.log"; return 1; }; }
check "the real SDK from this machine through the gateway passed all its checks" sdk_ok
sdk_gone() { [[ -z $(kubectl get pods,configmaps -n "$NS" -l app.kubernetes.io/managed-by=runtime-api -o name) ]]; }
eventually 60 "after the SDK's stop nothing of its runtime is left" sdk_gone

if ((FAILED > 0)); then
  for n in 0 1 2; do echo "--- replica $n log (tail)"; tail -n 30 "$TMP/replica-$n.log"; done
fi
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
