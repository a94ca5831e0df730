#!/usr/bin/env bash
# scripts/images.sh - container images for the test cluster's real node, built with no Docker
# engine and no public registry: OCI image layouts under ~/.cache, keyed by their inputs, pushed
# to the cluster's local registry.
#
#   scripts/images.sh build [IMAGE...]        build (or reuse) the OCI layouts; prints nothing on stdout
#   scripts/images.sh push REGISTRY [IMAGE...] build if needed, push to REGISTRY (host:port, plain
#                                             HTTP), print `NAME=REFERENCE` lines on stdout
#   scripts/images.sh ref REGISTRY IMAGE      the reference IMAGE has (or will have) in REGISTRY
#
# Images (all of them when none is named):
#   pause         the pod sandbox container: cluster/cmd/pause, a static Go program
#   agent-server  Debian trixie (debootstrap, trixie's python3.13) with openhands-agent-server at
#                 the version tests/e2e pins, laid out as the upstream
#                 ghcr.io/openhands/agent-server:<version>-python images are: user openhands
#                 (10001:10001), working directory /, entrypoint
#                 /usr/local/bin/openhands-agent-server, port 8000, /workspace/project; with
#                 openhands-workspace (the SDK's remote workspace, pinned likewise) in the same
#                 venv, so the image is also the tests' in-cluster OpenHands client
#   runtime-api   the service's binary ($RUNTIME_API_BIN, else target/debug/runtime-api of
#                 $CARGO_TARGET_DIR, built if missing) on a distroless-style root: the binary, the
#                 C libraries it links, CA certificates, user 65532, as the Dockerfile describes
#
# Needs root (debootstrap, chroot), and Debian's debootstrap, umoci and skopeo (installed with
# apt-get when missing). Progress goes to stderr. See cluster/README.md ("Images").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${IMAGES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runtime-api/images}"
SUITE="${IMAGES_DEBIAN_SUITE:-trixie}"
AGENT_UID=10001
NONROOT_UID=65532
# Bump when a recipe below changes (part of every image's cache key).
RECIPE=1

LOG_TAG=images
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

# pin PACKAGE: the version tests/e2e/requirements.txt pins.
pin() { sed -n "s/^$1==\([^[:space:]]*\).*/\1/p" "$ROOT/tests/e2e/requirements.txt" | head -n1; }
agent_version() { pin openhands-agent-server; }

runtime_api_bin() {
  local target="${CARGO_TARGET_DIR:-$ROOT/target}"
  local bin="${RUNTIME_API_BIN:-$target/debug/runtime-api}"
  if [[ ! -x $bin ]]; then
    log "building the runtime-api binary (cargo build --bin runtime-api)"
    (cd "$ROOT" && cargo build --locked --bin runtime-api >&2) || die "cargo build failed"
    bin="$target/debug/runtime-api"
  fi
  echo "$bin"
}

# key IMAGE: a hash of everything the image is built from.
key() {
  {
    echo "recipe=$RECIPE image=$1"
    sed -n '/^# ---- recipe: '"$1"' ----$/,/^# ---- end ----$/p' "${BASH_SOURCE[0]}"
    case $1 in
      pause) go env GOVERSION GOARCH; cat "$ROOT/cluster/cmd/pause/main.go" "$ROOT/cluster/go.mod" ;;
      agent-server) echo "suite=$SUITE"; cat "$ROOT/tests/e2e/requirements.txt" "$ROOT/tests/e2e/constraints.txt" ;;
      runtime-api) sha256sum <"$(runtime_api_bin)" ;;
    esac
  } | sha256sum | cut -c1-16
}

# The tag: the upstream-style version where there is one, then the input hash.
tag() {
  case $1 in
    agent-server) echo "$(agent_version)-python-$(key "$1")" ;;
    runtime-api) echo "$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)-$(key "$1")" ;;
    *) key "$1" ;;
  esac
}

repository() {
  case $1 in
    agent-server) echo openhands/agent-server ;;
    runtime-api) echo openhands/runtime-api ;;
    pause) echo runtime-api/pause ;;
    *) die "unknown image '$1' (pause, agent-server, runtime-api)" ;;
  esac
}

layout() { echo "$CACHE/$1-$(key "$1")"; }

# package LAYOUT ROOTFS USER WORKDIR PORT ENV... -- ENTRYPOINT...: ROOTFS as a one-layer OCI image.
package() {
  local layout=$1 rootfs=$2 user=$3 workdir=$4 port=$5; shift 5
  local env=() entry=() args=() e
  while (($#)) && [[ $1 != -- ]]; do env+=("$1"); shift; done
  shift
  entry=("$@")
  local bundle="$layout.bundle"
  as_root rm -rf "$bundle"
  umoci init --layout "$layout.tmp" >&2
  umoci new --image "$layout.tmp:latest" >&2
  as_root umoci unpack --image "$layout.tmp:latest" "$bundle" >&2
  as_root rm -rf "$bundle/rootfs"
  as_root mv "$rootfs" "$bundle/rootfs"
  as_root umoci repack --image "$layout.tmp:latest" "$bundle" >&2
  args=(--image "$layout.tmp:latest" --config.user "$user" --config.workingdir "$workdir"
    --author runtime-api --architecture amd64 --os linux --history.created_by "scripts/images.sh")
  [[ -n $port ]] && args+=(--config.exposedports "$port/tcp")
  for e in "${env[@]}"; do args+=(--config.env "$e"); done
  for e in "${entry[@]}"; do args+=(--config.entrypoint "$e"); done
  as_root umoci config "${args[@]}" >&2
  as_root umoci gc --layout "$layout.tmp" >&2
  as_root rm -rf "$bundle"
  as_root chown -R "$(id -u):$(id -g)" "$layout.tmp"
  rm -rf "$layout"; mv "$layout.tmp" "$layout"
}

# ---- recipe: pause ----
build_pause() {
  local layout=$1 work=$2
  mkdir -p "$work/rootfs"
  (cd "$ROOT/cluster" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" \
    -o "$work/rootfs/pause" ./cmd/pause) >&2 || die "go build of cluster/cmd/pause failed"
  package "$layout" "$work/rootfs" 65535:65535 / "" -- /pause
}
# ---- end ----

# ---- recipe: agent-server ----
BASE_PACKAGES=python3,python3-venv,ca-certificates,bash,tmux,git,curl,jq,procps,less

# debian_root DIR: a Debian $SUITE root with $BASE_PACKAGES in DIR; the debootstrap result is
# cached (it is the slow part, and the same for every agent-server version).
debian_root() {
  local base
  base="$CACHE/base-$SUITE-$(echo "$SUITE $BASE_PACKAGES" | sha256sum | cut -c1-12)"
  if [[ ! -f $base.done ]]; then
    need_tools debootstrap=debootstrap
    log "debootstrap $SUITE (minbase + $BASE_PACKAGES) from $(debian_mirror)"
    as_root rm -rf "$base"
    as_root debootstrap --variant=minbase --include="$BASE_PACKAGES" \
      "$SUITE" "$base" "$(debian_mirror)" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap $SUITE failed (log above)"; }
    as_root rm -rf "$base/var/cache/apt/archives"/*.deb
    touch "$base.done"
  fi
  as_root cp -a "$base" "$1"
}
build_agent_server() {
  local layout=$1 work=$2 rootfs="$2/rootfs" version workspace
  version=$(agent_version)
  workspace=$(pin openhands-workspace)
  [[ -n $version && -n $workspace ]] || die "no openhands-agent-server or openhands-workspace pin in tests/e2e/requirements.txt"
  debian_root "$rootfs"
  log "installing openhands-agent-server==$version and openhands-workspace==$workspace into /agent-server/.venv"
  as_root cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  as_root cp "$ROOT/tests/e2e/constraints.txt" "$rootfs/tmp/constraints.txt"
  # The build (not the image) trusts what this machine trusts: its egress may be inspected.
  as_root cp -L "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$rootfs/tmp/host-ca.crt"
  mkdir -p "$CACHE/pip"
  as_root mkdir -p "$rootfs/root/.cache/pip"
  # A private mount namespace: /proc and the pip cache are mounted for the chroot only and
  # vanish with it, whatever happens.
  as_root unshare --mount --propagation private sh -euc '
    mount -t proc proc "$1/proc"
    mount --bind "$2" "$1/root/.cache/pip"
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/tmp/host-ca.crt LITELLM_LOCAL_MODEL_COST_MAP=True \
      PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 \
      chroot "$1" /bin/sh -euc "
      python3 -m venv /agent-server/.venv
      /agent-server/.venv/bin/pip install --disable-pip-version-check -q \
        -c /tmp/constraints.txt openhands-agent-server==$3 openhands-workspace==$5
      /agent-server/.venv/bin/python -c \"import openhands.agent_server, openhands.workspace\"
      groupadd -g $4 openhands
      useradd -m -u $4 -g $4 -s /bin/bash openhands
      mkdir -p /workspace/project
      chown -R $4:$4 /workspace /agent-server
      ln -s /agent-server/.venv/bin/agent-server /usr/local/bin/openhands-agent-server
      /usr/local/bin/openhands-agent-server --help >/dev/null
    "' sh "$rootfs" "$CACHE/pip" "$version" "$AGENT_UID" "$workspace" >&2 \
    || die "installing openhands-agent-server in the $SUITE root failed"
  as_root rm -rf "$rootfs/tmp/constraints.txt" "$rootfs/tmp/host-ca.crt" "$rootfs/var/lib/apt/lists"/* "$rootfs/var/cache/apt"/*.bin
  as_root sh -c ': >"$1/etc/resolv.conf"' sh "$rootfs"
  package "$layout" "$rootfs" "$AGENT_UID:$AGENT_UID" / 8000 \
    OH_ENABLE_VNC=false LOG_JSON=true LITELLM_LOCAL_MODEL_COST_MAP=True \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    -- /usr/local/bin/openhands-agent-server
}
# ---- end ----

# ---- recipe: runtime-api ----
build_runtime_api() {
  local layout=$1 work=$2 rootfs="$2/rootfs" bin lib
  bin=$(runtime_api_bin)
  mkdir -p "$rootfs"/{etc/ssl/certs,tmp,lib64}
  chmod 1777 "$rootfs/tmp"
  # The binary without its debug sections, and the C libraries it is linked against (what
  # distroless/cc provides).
  objcopy --strip-debug "$bin" "$rootfs/runtime-api"
  for lib in $(ldd "$bin" | awk '/=>/ { print $3 } /^[[:space:]]*\/lib/ { print $1 }'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  # Debian's Mozilla bundle only: not the certificates this machine added for itself.
  cat /usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$NONROOT_UID" "$NONROOT_UID" >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' "$NONROOT_UID" >"$rootfs/etc/group"
  package "$layout" "$rootfs" "$NONROOT_UID:$NONROOT_UID" / 8080 \
    BIND_ADDRESS=0.0.0.0 BACKEND=kubernetes -- /runtime-api
}
# ---- end ----

build_one() {
  local name=$1 layout work start
  repository "$name" >/dev/null
  layout=$(layout "$name")
  if [[ -f $layout/index.json ]]; then log "$name: cached in $layout"; return 0; fi
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.build-$name.lock"
  if command -v flock >/dev/null; then flock 8; fi
  if [[ -f $layout/index.json ]]; then log "$name: built meanwhile in $layout"; return 0; fi
  need_tools umoci=umoci
  work=$(mktemp -d "$CACHE/.work-$name.XXXXXX")
  start=$SECONDS
  log "$name: building $(repository "$name"):$(tag "$name")"
  case $name in
    pause) build_pause "$layout" "$work" ;;
    agent-server) build_agent_server "$layout" "$work" ;;
    runtime-api) build_runtime_api "$layout" "$work" ;;
  esac
  as_root rm -rf "$work"
  log "$name: built in $((SECONDS - start))s ($(du -sh "$layout" | cut -f1) compressed)"
  # Older layouts of the same image are superseded.
  local old
  for old in "$CACHE/$name"-*; do
    [[ $old == "$layout" || ! -d $old || $old == *.tmp || $old == *.bundle ]] || rm -rf "$old"
  done
}

ref() { echo "$1/$(repository "$2"):$(tag "$2")"; }

push_one() {
  local registry=$1 name=$2 ref
  build_one "$name"
  need_tools skopeo=skopeo
  ref=$(ref "$registry" "$name")
  if skopeo inspect --raw --tls-verify=false "docker://$ref" >/dev/null 2>&1; then
    log "$name: $ref already in the registry"
  else
    log "$name: pushing $ref"
    skopeo copy --quiet --dest-tls-verify=false "oci:$(layout "$name"):latest" "docker://$ref" >&2 \
      || die "skopeo copy to $ref failed"
  fi
  echo "$name=$ref"
}

ALL=(pause agent-server runtime-api)
cmd=${1:-}
shift || true
case $cmd in
  build)
    for name in "${@:-${ALL[@]}}"; do build_one "$name"; done ;;
  push)
    [[ -n ${1:-} ]] || die "usage: $0 push REGISTRY [IMAGE...]"
    registry=$1; shift
    [[ $# -gt 0 ]] || set -- "${ALL[@]}"
    for name in "$@"; do push_one "$registry" "$name"; done ;;
  ref)
    [[ $# == 2 ]] || die "usage: $0 ref REGISTRY IMAGE"
    ref "$1" "$2" ;;
  *)
    echo "usage: $0 {build [IMAGE...]|push REGISTRY [IMAGE...]|ref REGISTRY IMAGE}" >&2; exit 2 ;;
esac
