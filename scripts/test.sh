#!/usr/bin/env bash
# The whole test suite, on a fresh machine: Rust unit and API tests, the Kubernetes control plane
# and its real node (built and started by scripts/cluster.sh; `down` checked to leave nothing)
# with their smoke tests and the Kubernetes integration tests, then the end-to-end tests with the
# real OpenHands client and agent server (CPython and the venv built by scripts/python.sh).
# Caches live under ~/.cache, so a second run is fast.
# The cluster is brought down on exit, also when a test fails.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runtime-api/target}"
export RUNTIME_API_BIN="$CARGO_TARGET_DIR/debug/runtime-api"
LOG_TAG=test.sh
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# Each step says how long the previous one took (the figures a cold-CI budget is kept with).
STEP_START=$SECONDS
STEP_NAME=""
step() {
  [[ -n $STEP_NAME ]] && printf '<== %s: %ds (total %dm%02ds)\n' "$STEP_NAME" $((SECONDS - STEP_START)) $((SECONDS / 60)) $((SECONDS % 60)) >&2
  STEP_START=$SECONDS STEP_NAME=$*
  printf '\n==> %s\n' "$*" >&2
}

command -v cargo >/dev/null || { echo "cargo is required (Rust toolchain)" >&2; exit 1; }
command -v go >/dev/null || { echo "go is required (for the test control plane)" >&2; exit 1; }

# Debian packages, installed first and in one go (apt-get holds a lock: the background builds
# below must not race it): a CNCF distribution registry for the /image_exists tests, and what the
# real node and its images need (scripts/lib/real-node.sh, scripts/images.sh).
PACKAGES=(docker-registry runc containernetworking-plugins nftables iproute2 socat bind9-dnsutils
    umoci skopeo debootstrap binutils)
apt_install "${PACKAGES[@]}"

# The Go binaries and the container images take minutes on a cold machine and do not need the
# Rust build (the runtime-api image is the Dockerfile's own release build, in BuildKit): start
# them now, beside it (their downloads overlap the compiles). `cluster.sh up`
# waits on their locks and reports their failures; the logs stay in the cache.
mkdir -p "$HOME/.cache/runtime-api"
scripts/cluster.sh build >"$HOME/.cache/runtime-api/prebuild-cluster.log" 2>&1 &
PREBUILD_CLUSTER=$!
scripts/images.sh build pause agent-server runtime-api >"$HOME/.cache/runtime-api/prebuild-images.log" 2>&1 &
PREBUILD_IMAGES=$!
trap 'kill $PREBUILD_CLUSTER $PREBUILD_IMAGES 2>/dev/null || true' EXIT

step "Rust: formatting (rustfmt.toml) and lints, first"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

step "Rust: build, unit tests, API and gateway tests over a real socket, process-backend fault rounds"
cargo build --locked --all-targets
cargo test --locked --lib --bins --test api --test gateway --test faults --test parity

step "Waiting for the Go binaries and the images (started in the background)"
wait $PREBUILD_CLUSTER || echo "the background cluster build failed (see ~/.cache/runtime-api/prebuild-cluster.log); up retries it" >&2
wait $PREBUILD_IMAGES || echo "the background image build failed (see ~/.cache/runtime-api/prebuild-images.log); up retries it" >&2
trap - EXIT

STATE_BEFORE=$(mktemp)
step "Cluster lifecycle: up with the real node, then down leaves nothing on the machine"
scripts/cluster.sh down >/dev/null 2>&1 || true
tests/cluster/lifecycle.sh "$STATE_BEFORE"

step "Kubernetes control plane and real node (scripts/cluster.sh up, the second on this machine)"
eval "$(scripts/cluster.sh up)"
trap 'scripts/cluster.sh down' EXIT

step "Control plane smoke test"
tests/cluster/smoke.sh

step "Real node smoke test (real pods from the images built here)"
tests/cluster/real-node.sh

step "Sandbox gateway on the real node (two replicas, a real agent-server pod, wake on traffic, the SDK through it)"
tests/cluster/gateway-real-node.sh

step "Warm pool on the real node (dormant agent-server pods claimed by the real SDK)"
tests/cluster/pool-real-node.sh

step "Deployment manifests and Helm chart against the API server"
tests/deploy/apply.sh

step "runtime-api installed by its chart on the real node, the real SDK in a pod beside it and from this machine through its gateway"
tests/cluster/in-cluster.sh

step "Kubernetes backend integration tests, then its fault rounds (they kill the API server: alone)"
cargo test --locked --test kubernetes -- --ignored --test-threads 2
cargo test --locked --test kfaults -- --include-ignored

step "Recovery from an API server outage (restarts the test API server, so it runs alone)"
cargo test --locked --test recovery -- --ignored

step "Down after the suite leaves nothing on the machine"
trap - EXIT
scripts/cluster.sh down
diff "$STATE_BEFORE" <(tests/cluster/machine-state.sh) \
    || { echo "scripts/cluster.sh down left the machine changed (< before, > after)" >&2; exit 1; }

step "Kubernetes warm pools (tests/kpool.rs): a kwok-only cluster whose pods have loopback addresses, where the test answers /api/init"
eval "$(CLUSTER_REAL_NODE=0 CLUSTER_POD_CIDR=127.1.0.1/16 scripts/cluster.sh up)"
trap 'CLUSTER_REAL_NODE=0 scripts/cluster.sh down' EXIT
cargo test --locked --test kpool -- --ignored --test-threads 2
trap - EXIT
CLUSTER_REAL_NODE=0 scripts/cluster.sh down

step "Python toolchain and OpenHands packages (scripts/python.sh)"
eval "$(scripts/python.sh)"

step "End-to-end tests with the real OpenHands client and agent server"
python -m pytest tests/e2e -v

step "Benchmark harness, smoke size (bench/run.sh --smoke: its own cluster, 20 runtimes)"
RUNTIME_API_BIN="$CARGO_TARGET_DIR/debug/runtime-api" bench/run.sh --smoke

step "All tests passed"
