#!/usr/bin/env bash
# bench/run.sh [--full|--smoke] - the runtime-api benchmark, one command (see bench/README.md).
#
#   --full   (default) 200 sequential + 200 concurrent starts, reads at 100 / 1,000 / 5,000 /
#            20,000 runtimes, /stop of 1,000, the V1 pattern at 5,000, a restart, a maintenance
#            round and /stop of all at 20,000, process backend 5 runs; results in bench/results/,
#            the table also into bench/README.md. About 30 minutes (Kubernetes part) on 2 cores.
#   --smoke  the same harness, small (20 + 20 starts, 10 / 50 runtimes, process backend 1 run);
#            results in bench/results/smoke/ (not committed). About 2 minutes. For CI.
#
# Brings up its OWN control plane (scripts/cluster.sh with the CLUSTER_* settings below, on ports
# of its own, 10 kwok nodes of 2,500 pods) and takes it down at the end, also on failure.
# Binary: $RUNTIME_API_BIN, else target/release/runtime-api, else target/debug/runtime-api (not
# built here). Environment: BENCH_SKIP_PROCESS=1 skips the process backend part; BENCH_STEPS=100,1000,5000
# replaces the runtime counts of the Kubernetes part (the last one gets the restart, the maintenance
# round and /stop of all), for a machine that cannot hold 20,000.
# Exit status non-zero when any step or check failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MODE=full
case "${1:-}" in
  ""|--full) MODE=full ;;
  --smoke) MODE=smoke ;;
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--full|--smoke]" >&2; exit 2 ;;
esac
[[ $# -le 1 ]] || { echo "usage: $0 [--full|--smoke]" >&2; exit 2; }

log() { printf '[bench/run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
T0=$SECONDS

if [[ $MODE == full ]]; then OUT=bench/results; else OUT=bench/results/smoke; fi
mkdir -p "$OUT"
rm -f "$OUT/kubernetes.json" "$OUT/process_backend.json" "$OUT/bench.json" "$OUT/table.md"

# --- the binary (never built here: the lead builds) -------------------------------------------
if [[ -n ${RUNTIME_API_BIN:-} ]]; then BIN=$RUNTIME_API_BIN
elif [[ -x target/release/runtime-api ]]; then BIN=target/release/runtime-api
else BIN=target/debug/runtime-api; fi
[[ -x $BIN ]] || die "no runtime-api binary at $BIN (cargo build --release, or set RUNTIME_API_BIN)"
export RUNTIME_API_BIN
RUNTIME_API_BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
log "mode $MODE; binary $RUNTIME_API_BIN ($(stat -c '%y' "$RUNTIME_API_BIN" | cut -d. -f1))"

# --- Python: the venv of scripts/python.sh, plus matplotlib -----------------------------------
eval "$(scripts/python.sh)"
if ! python -c 'import matplotlib, sys; sys.exit(matplotlib.__version__ != "3.11.2")' 2>/dev/null; then
  log "installing bench/requirements.txt into $RUNTIME_API_VENV"
  python -m pip install -q --disable-pip-version-check -r bench/requirements.txt -c tests/e2e/constraints.txt >&2 \
    || die "pip install -r bench/requirements.txt"
fi

# --- a private control plane (never the caller's: BENCH_CLUSTER_* override these) ----------------
export CLUSTER_RUN_DIR=${BENCH_CLUSTER_RUN_DIR:-${TMPDIR:-/tmp}/runtime-api-bench-cluster}
export CLUSTER_APISERVER_PORT=${BENCH_CLUSTER_APISERVER_PORT:-36443}
export CLUSTER_ETCD_PORT=${BENCH_CLUSTER_ETCD_PORT:-43790}
export CLUSTER_ETCD_PEER_PORT=${BENCH_CLUSTER_ETCD_PEER_PORT:-43800}
export CLUSTER_CONTROLLER_MANAGER_PORT=${BENCH_CLUSTER_CONTROLLER_MANAGER_PORT:-36257}
export CLUSTER_SCHEDULER_PORT=${BENCH_CLUSTER_SCHEDULER_PORT:-36259}
export CLUSTER_NODES=${BENCH_CLUSTER_NODES:-10}
export CLUSTER_NODE_PODS=${BENCH_CLUSTER_NODE_PODS:-2500}
export CLUSTER_REAL_NODE=${BENCH_CLUSTER_REAL_NODE:-0}   # kwok nodes only: the real node is one per machine
# Without the endpoint controllers: each pod event makes them scan every Service of the namespace
# (O(N) per event, O(N^2) per fill), which stalled the 2-core control plane past ~10,000 sandboxes;
# kwok pods serve nothing, so their endpoints mean nothing here. Set it empty to keep them.
export CLUSTER_CONTROLLERS_OFF=${BENCH_CLUSTER_CONTROLLERS_OFF-endpoints-controller,endpointslice-controller,endpointslice-mirroring-controller}
cluster_down() { scripts/cluster.sh down >/dev/null 2>&1 || log "WARNING: scripts/cluster.sh down failed (run dir $CLUSTER_RUN_DIR)"; }
trap cluster_down EXIT
# A leftover of an interrupted run in the same run dir would be reused with its objects: start clean.
scripts/cluster.sh down >/dev/null 2>&1 || true
T=$SECONDS
eval "$(scripts/cluster.sh up)"
log "cluster up in $((SECONDS - T)) s ($CLUSTER_NODES nodes x $CLUSTER_NODE_PODS pods, $RUNTIME_API_CLUSTER_SERVER)"

T=$SECONDS
python bench/kubernetes.py --mode "$MODE" --out "$OUT/kubernetes.json" || die "bench/kubernetes.py"
K8S_S=$((SECONDS - T))
cluster_down
trap - EXIT
log "Kubernetes part done in $K8S_S s; cluster down"

# --- process backend (bench/process_backend.py), with the cluster down --------------------------
PROC_S=0
if [[ ${BENCH_SKIP_PROCESS:-0} == 1 ]]; then
  log "process backend part skipped (BENCH_SKIP_PROCESS=1)"
else
  T=$SECONDS
  if [[ $MODE == full ]]; then args=(--runs 5 --runtimes 20); else args=(--runs 1 --runtimes 1); fi
  python bench/process_backend.py "${args[@]}" --out "$OUT/process_backend.json" >&2 || die "bench/process_backend.py"
  PROC_S=$((SECONDS - T))
  log "process backend part done in $PROC_S s"
fi

# --- table, merged JSON, plot -----------------------------------------------------------------
readme=()
[[ $MODE == full ]] && readme=(--readme bench/README.md)
python bench/report.py --dir "$OUT" "${readme[@]}" || die "bench/report.py"
log "done in $((SECONDS - T0)) s (Kubernetes part $K8S_S s, process part $PROC_S s); results in $OUT/"
