#!/usr/bin/env bash
# Python toolchain for the end-to-end tests and benchmarks (tests/e2e, bench/).
#
#   eval "$(scripts/python.sh)"
#
# 1. Builds CPython 3.13 from Debian trixie's source package `python3.13` (the upstream
#    .orig tarball only) into ~/.cache/runtime-api/python/3.13, using a private apt state so
#    the system's apt configuration and lists are untouched. Skipped when it already works.
# 2. Creates a venv keyed by a hash of tests/e2e/requirements.txt + constraints.txt (and the
#    interpreter version) with the pinned OpenHands SDK / workspace / agent server, pytest, httpx.
#    When constraints.txt is missing it is generated with `pip freeze` after a first install.
# 3. Prints `export ...` lines LAST on stdout (the venv on PATH, tests/support on PYTHONPATH);
#    all progress goes to stderr.
#
# Options (env): RUNTIME_API_CACHE (default ~/.cache/runtime-api), PY_SERIES (default 3.13),
# DEBIAN_SRC_SUITE (default trixie), MAKE_JOBS (default nproc).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RUNTIME_API_CACHE:-$HOME/.cache/runtime-api}"
PY_SERIES="${PY_SERIES:-3.13}"
SUITE="${DEBIAN_SRC_SUITE:-trixie}"
PREFIX="$CACHE/python/$PY_SERIES"
PY="$PREFIX/bin/python$PY_SERIES"
REQ="$ROOT/tests/e2e/requirements.txt"
CON="$ROOT/tests/e2e/constraints.txt"
JOBS="${MAKE_JOBS:-$(nproc 2>/dev/null || echo 2)}"
REQUIRED_MODULES="ssl sqlite3 ctypes zlib bz2 lzma _hashlib _decimal readline"

LOG_TAG=python.sh
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"
now() { date +%s; }

python_ok() {
    [ -x "$PY" ] && "$PY" -c "
import sys
mods = '$REQUIRED_MODULES'.split()
for m in mods: __import__(m)
assert sys.version_info[:2] == tuple(int(x) for x in '$PY_SERIES'.split('.'))
" >/dev/null 2>&1
}

ensure_build_deps() {
    # dev package -> module it enables
    local pkgs="build-essential pkg-config libssl-dev libsqlite3-dev libffi-dev zlib1g-dev libbz2-dev
                liblzma-dev libreadline-dev libncurses-dev uuid-dev xz-utils"
    # shellcheck disable=SC2086
    apt_install $pkgs
}

fetch_source() {
    # Private apt state: only our deb-src list, our lists dir, our cache dir.
    local aptdir="$CACHE/apt" srcdir="$CACHE/src"
    mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/etc/sources.list.d" \
             "$aptdir/etc/preferences.d" "$srcdir"
    local mirror; mirror="$(debian_mirror)"
    echo "deb-src $mirror $SUITE main" > "$aptdir/etc/sources.list"
    local opts=(
        -o "Dir::State::Lists=$aptdir/lists"
        -o "Dir::Etc::SourceList=$aptdir/etc/sources.list"
        -o "Dir::Etc::SourceParts=$aptdir/etc/sources.list.d"
        -o "Dir::Etc::PreferencesParts=$aptdir/etc/preferences.d"
        -o "Dir::Cache=$aptdir/cache"
        -o "APT::Sandbox::User=$(id -un)"
    )
    if ! ls "$srcdir"/python"$PY_SERIES"_*.orig.tar.* >/dev/null 2>&1; then
        log "apt-get update (private state, deb-src $mirror $SUITE)"
        apt-get "${opts[@]}" -q update >&2
        log "apt-get source --download-only python$PY_SERIES"
        (cd "$srcdir" && apt-get "${opts[@]}" -q source --download-only "python$PY_SERIES" >&2)
    else
        log "source tarball already cached in $srcdir"
    fi
    ORIG="$(ls -1 "$srcdir"/python"$PY_SERIES"_*.orig.tar.* | grep -v -E '\.(asc|sig)$' | sort -V | tail -1)"
    [ -f "$ORIG" ] || die "no orig tarball for python$PY_SERIES in $srcdir"
}

build_python() {
    local t0; t0=$(now)
    ensure_build_deps
    fetch_source
    local build="$CACHE/build"
    rm -rf "$build"; mkdir -p "$build"
    log "unpacking $(basename "$ORIG")"
    tar -xf "$ORIG" -C "$build"
    local dir; dir="$(find "$build" -mindepth 1 -maxdepth 1 -type d | head -1)"
    [ -f "$dir/configure" ] || die "unexpected source layout in $build"
    log "configure --prefix=$PREFIX"
    (cd "$dir" && ./configure --prefix="$PREFIX" --with-ensurepip=install >"$build/configure.log" 2>&1) \
        || { tail -40 "$build/configure.log" >&2; die "configure failed (log: $build/configure.log)"; }
    log "make -j$JOBS (log: $build/make.log)"
    (cd "$dir" && make -j"$JOBS" >"$build/make.log" 2>&1) \
        || { tail -40 "$build/make.log" >&2; die "make failed"; }
    grep -E "^Checked [0-9]+ modules|necessary bits|Failed to build|^_[a-z0-9_]+ +missing" "$build/make.log" >&2 || true
    log "make install"
    rm -rf "$PREFIX"
    (cd "$dir" && make install >"$build/install.log" 2>&1) \
        || { tail -40 "$build/install.log" >&2; die "make install failed"; }
    python_ok || die "built python lacks one of: $REQUIRED_MODULES"
    echo "$(( $(now) - t0 ))" > "$PREFIX/.build-seconds"
    log "CPython $("$PY" -c 'import platform; print(platform.python_version())') built in $(( $(now) - t0 )) s"
    rm -rf "$build"
}

# --- 1. interpreter ---------------------------------------------------------------------------
if python_ok; then
    log "CPython $("$PY" -c 'import platform; print(platform.python_version())') ready at $PREFIX"
else
    build_python
fi
[ "${1:-}" = "--python-only" ] && { echo "export RUNTIME_API_PYTHON='$PY'"; exit 0; }

# --- 2. venv ----------------------------------------------------------------------------------
[ -f "$REQ" ] || die "missing $REQ"
pyver="$("$PY" -c 'import platform; print(platform.python_version())')"

venv_key() {
    { echo "$pyver"; cat "$REQ"; [ -f "$CON" ] && cat "$CON"; } | sha256sum | cut -c1-16
}

install_into() { # venv_dir, extra pip args...
    local venv="$1"; shift
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" "$@" >&2
}

mkdir -p "$CACHE/venvs"
if [ ! -f "$CON" ]; then
    boot="$CACHE/venvs/bootstrap"
    log "no constraints.txt: first install from $REQ, then pip freeze"
    t0=$(now)
    install_into "$boot"
    {
        echo "# Generated by scripts/python.sh with 'pip freeze' (CPython $pyver). Every transitive pin."
        echo "# Delete this file and rerun scripts/python.sh to regenerate."
        "$boot/bin/python" -m pip freeze --disable-pip-version-check --all \
            | grep -v -E '^(pip|setuptools|wheel)=='
    } > "$CON"
    log "wrote $CON ($(grep -vc '^#' "$CON") pins) in $(( $(now) - t0 )) s"
    rm -rf "$boot"
fi

VENV="$CACHE/venvs/e2e-$(venv_key)"
if [ -x "$VENV/bin/openhands-agent-server" ] && [ -f "$VENV/.complete" ]; then
    log "venv ready at $VENV"
else
    t0=$(now)
    log "creating venv $VENV"
    install_into "$VENV" -c "$CON"
    # The wheel's console script is `agent-server`; sandbox images (and runtime-api's default
    # PROCESS_AGENT_COMMAND) call it `openhands-agent-server`.
    ln -sf agent-server "$VENV/bin/openhands-agent-server"
    "$VENV/bin/python" -m pip check --disable-pip-version-check >&2 || log "WARNING: pip check reported problems"
    OPENHANDS_SUPPRESS_BANNER=1 LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/python" -c "import openhands.workspace, openhands.agent_server, pytest, httpx, opentelemetry.proto.collector.trace.v1.trace_service_pb2" \
        || die "venv import check failed"
    echo "$(( $(now) - t0 ))" > "$VENV/.install-seconds"
    touch "$VENV/.complete"
    log "venv installed in $(( $(now) - t0 )) s"
    # Keep the three newest venvs (other checkouts of the repository may be using an older one
    # right now: deleting every other venv broke their runs); remove the rest.
    for old in $(ls -1dt "$CACHE"/venvs/e2e-* 2>/dev/null | tail -n +4); do
        [ "$old" = "$VENV" ] || { log "removing stale venv $old"; rm -rf "$old"; }
    done
fi

# --- 3. exports (last on stdout) ----------------------------------------------------------------
echo "export RUNTIME_API_VENV='$VENV'"
echo "export PATH='$VENV/bin':\"\$PATH\""
# The support package shared by tests/e2e and bench/ (tests/support/runtime_api_support).
echo "export PYTHONPATH='$ROOT/tests/support'\${PYTHONPATH:+:\"\$PYTHONPATH\"}"
