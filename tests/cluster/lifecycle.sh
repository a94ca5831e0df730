#!/usr/bin/env bash
# tests/cluster/lifecycle.sh - `scripts/cluster.sh up` then `down` leaves nothing on the machine.
#
#   tests/cluster/lifecycle.sh [SNAPSHOT_FILE]
#
# Needs no cluster running (it refuses otherwise). Records the machine's state
# (tests/cluster/machine-state.sh), brings a cluster with its real node up, checks the node is
# Ready, brings it down, and compares: any interface, route, namespace, nftables table, mount,
# kernel setting, cgroup, path or process that differs is a failure. The state before is written
# to SNAPSHOT_FILE when given, so that a later `down` can be compared with it too (scripts/test.sh
# does, after the whole suite).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SNAPSHOT=${1:-$(mktemp)}
STATE="$ROOT/tests/cluster/machine-state.sh"
FAILED=0

if "$ROOT/scripts/cluster.sh" status >/dev/null 2>&1; then
  echo "a cluster is running: run 'scripts/cluster.sh down' first" >&2
  exit 2
fi
"$STATE" >"$SNAPSHOT"
start=$SECONDS
out=$("$ROOT/scripts/cluster.sh" up) || { echo "FAIL  scripts/cluster.sh up"; exit 1; }
eval "$out"
echo "      up took $((SECONDS - start))s"
if [[ -n ${RUNTIME_API_REAL_NODE:-} ]] &&
  kubectl wait --for=condition=Ready "node/$RUNTIME_API_REAL_NODE" --timeout=30s >/dev/null; then
  echo "PASS  up: the real node $RUNTIME_API_REAL_NODE is Ready"
else
  echo "FAIL  up: no Ready real node (RUNTIME_API_REAL_NODE='${RUNTIME_API_REAL_NODE:-}')"; FAILED=1
fi
start=$SECONDS
"$ROOT/scripts/cluster.sh" down || { echo "FAIL  scripts/cluster.sh down"; FAILED=1; }
echo "      down took $((SECONDS - start))s"
if diff <(cat "$SNAPSHOT") <("$STATE") >/tmp/lifecycle.diff.$$; then
  echo "PASS  down: nothing left on the machine (links, routes, netns, nft, mounts, sysctls, cgroups, paths, processes)"
else
  echo "FAIL  down left the machine changed (< before, > after):"; sed 's/^/      /' /tmp/lifecycle.diff.$$; FAILED=1
fi
rm -f /tmp/lifecycle.diff.$$
exit $FAILED
