#!/usr/bin/env bash
# Runs the service on this machine with the process backend (the embedded default): installs the
# OpenHands agent server (scripts/python.sh, cached), builds the release binary, and serves on
# 127.0.0.1:${SERVER_PORT:-8080}. Every setting of the README's configuration table applies.
#
#   API_KEY=choose-a-long-random-key scripts/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ -z "${API_KEY:-}" ]; then
    echo "scripts/run.sh: set API_KEY, the key clients send in X-API-Key (e.g. API_KEY=\$(openssl rand -hex 32))" >&2
    exit 2
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runtime-api/target}"
eval "$(scripts/python.sh)"
cargo build --locked --release >&2
exec "$CARGO_TARGET_DIR/release/runtime-api" "$@"
