# tests/cluster/checks.sh - the check helpers of the cluster tests, sourced by smoke.sh and
# real-node.sh: each check prints PASS or FAIL (with the command's output) and counts; the caller
# ends with `((FAILED == 0))`.
FAILED=0
PASSED=0

pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$1"; [[ -n ${2:-} ]] && printf '      %s\n' "$2"; return 0; }

# check DESCRIPTION COMMAND...: run once.
check() { local d=$1; shift; if out=$("$@" 2>&1); then pass "$d"; else fail "$d" "$out"; fi; }

# eventually TIMEOUT DESCRIPTION COMMAND...: retry every second until it succeeds.
eventually() {
  local timeout=$1 d=$2; shift 2
  local deadline=$((SECONDS + timeout)) out
  while :; do
    if out=$("$@" 2>&1); then pass "$d"; return 0; fi
    if ((SECONDS >= deadline)); then fail "$d (after ${timeout}s)" "$out"; return 1; fi
    sleep 1
  done
}
