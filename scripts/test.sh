#!/usr/bin/env bash
# The whole test suite, on a fresh machine: Rust unit and API tests, the Kubernetes control plane
# (built and started by scripts/cluster.sh) with its smoke test and the Kubernetes integration
# tests, then the end-to-end tests with the real OpenHands client and agent server (CPython and
# the venv built by scripts/python.sh). Caches live under ~/.cache, so a second run is fast.
# The cluster is brought down on exit, also when a test fails.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runtime-api/target}"
export RUNTIME_API_BIN="$CARGO_TARGET_DIR/debug/runtime-api"
step() { printf '\n==> %s\n' "$*" >&2; }

command -v cargo >/dev/null || { echo "cargo is required (Rust toolchain)" >&2; exit 1; }
command -v go >/dev/null || { echo "go is required (for the test control plane)" >&2; exit 1; }

step "Rust: formatting (rustfmt.toml) and lints, first"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

# A CNCF distribution registry for the /image_exists tests, from Debian's packages.
if ! command -v docker-registry >/dev/null; then
    step "Installing docker-registry (Debian package)"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry >&2 \
        || { $SUDO apt-get update >&2 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry >&2; }
fi

step "Rust: build, unit tests, API tests over a real socket"
cargo build --locked --all-targets
cargo test --locked --lib --bins --test api

step "Kubernetes control plane (scripts/cluster.sh up)"
eval "$(scripts/cluster.sh up)"
trap 'scripts/cluster.sh down' EXIT

step "Control plane smoke test"
tests/cluster/smoke.sh

step "Deployment manifests and Helm chart against the API server"
tests/deploy/apply.sh

step "Kubernetes backend integration tests"
cargo test --locked --test kubernetes -- --ignored --test-threads 2

step "Recovery from an API server outage (restarts the test API server, so it runs alone)"
cargo test --locked --test recovery -- --ignored

step "Python toolchain and OpenHands packages (scripts/python.sh)"
eval "$(scripts/python.sh)"

step "End-to-end tests with the real OpenHands client and agent server"
python -m pytest tests/e2e -v

step "Benchmark harness, smoke size (bench/run.sh --smoke: its own cluster, 20 runtimes)"
RUNTIME_API_BIN="$CARGO_TARGET_DIR/debug/runtime-api" bench/run.sh --smoke

step "All tests passed"
