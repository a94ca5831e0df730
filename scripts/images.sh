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
#   runtime-api   the repository's Dockerfile, built by BuildKit (scripts/buildkit.sh: buildkitd
#                 with an OCI worker on Debian's runc) from Cargo.toml, Cargo.lock and src/, its
#                 two base images replaced by the stand-ins below (BuildKit named contexts):
#                 Docker Hub and gcr.io cannot be reached from here
#   rust-builder  stand-in for the Dockerfile's builder base rust:<version>-slim-bookworm: Debian
#                 bookworm minbase with gcc and libc6-dev, and this machine's Rust toolchain
#                 (rustc, cargo, the x86_64 standard library; the version the Dockerfile names)
#                 where the official image keeps it (RUSTUP_HOME, CARGO_HOME=/usr/local/cargo)
#   distroless-cc stand-in for gcr.io/distroless/cc-debian12:nonroot: the files of the bookworm
#                 packages that image is made of (libc6, libgcc-s1, libstdc++6, libssl3, tzdata,
#                 netbase, base-files), Debian's Mozilla CA bundle, /tmp, user nonroot 65532
#
# Needs root (debootstrap, chroot, buildkitd), Debian's debootstrap, umoci, skopeo and runc
# (installed with apt-get when missing), and Go (BuildKit). Progress goes to stderr. See
# cluster/README.md ("Images").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${IMAGES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runtime-api/images}"
SUITE="${IMAGES_DEBIAN_SUITE:-trixie}"
AGENT_UID=10001
NONROOT_UID=65532
# Bump when a recipe below changes (part of every image's cache key).
RECIPE=1
# The Debian release of the Dockerfile's base images (bookworm = Debian 12).
DOCKERFILE_SUITE=bookworm

LOG_TAG=images
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

# pin PACKAGE: the version tests/e2e/requirements.txt pins.
pin() { sed -n "s/^$1==\([^[:space:]]*\).*/\1/p" "$ROOT/tests/e2e/requirements.txt" | head -n1; }
agent_version() { pin openhands-agent-server; }

# The Dockerfile's base images: `FROM <image> [AS name]` lines, in order (builder, then runtime).
dockerfile_bases() { awk 'toupper($1) == "FROM" { print $2 }' "$ROOT/Dockerfile"; }
# The Rust version the Dockerfile's builder image names (rust:1.95-slim-bookworm -> 1.95).
dockerfile_rust() { dockerfile_bases | sed -n 's/^rust:\([0-9.]*\)-.*/\1/p' | head -n1; }
# What the Dockerfile builds from: its context after .dockerignore (Cargo.toml, Cargo.lock, src/).
dockerfile_inputs() {
  (cd "$ROOT" && find Dockerfile .dockerignore Cargo.toml Cargo.lock src -type f | LC_ALL=C sort \
    | xargs sha256sum)
}

# key IMAGE: a hash of everything the image is built from.
key() {
  {
    echo "recipe=$RECIPE image=$1"
    sed -n '/^# ---- recipe: '"$1"' ----$/,/^# ---- end ----$/p' "${BASH_SOURCE[0]}"
    case $1 in
      pause) go env GOVERSION GOARCH; cat "$ROOT/cluster/cmd/pause/main.go" "$ROOT/cluster/go.mod" ;;
      agent-server) echo "suite=$SUITE"; cat "$ROOT/tests/e2e/requirements.txt" "$ROOT/tests/e2e/constraints.txt" ;;
      rust-builder) echo "suite=$DOCKERFILE_SUITE"; rustc --version ;;
      distroless-cc) echo "suite=$DOCKERFILE_SUITE" ;;
      runtime-api)
        dockerfile_inputs
        go_module_version "$ROOT/tools/buildkit/go.mod" github.com/moby/buildkit
        key rust-builder; key distroless-cc ;;
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
    rust-builder) echo runtime-api/rust-builder ;;
    distroless-cc) echo runtime-api/distroless-cc ;;
    *) die "unknown image '$1' (pause, agent-server, runtime-api, rust-builder, distroless-cc)" ;;
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

# debian_base [SUITE PACKAGES]: the path of a cached Debian SUITE (default $SUITE) minbase root
# with PACKAGES (default $BASE_PACKAGES), debootstrapped first if missing (it is the slow part, and
# the same for every image version built on it).
debian_base() {
  local suite=${1:-$SUITE} packages=${2:-$BASE_PACKAGES} base
  base="$CACHE/base-$suite-$(echo "$suite $packages" | sha256sum | cut -c1-12)"
  if [[ ! -f $base.done ]]; then
    need_tools debootstrap=debootstrap
    log "debootstrap $suite (minbase + $packages) from $(debian_mirror)"
    as_root rm -rf "$base"
    as_root debootstrap --variant=minbase --include="$packages" \
      "$suite" "$base" "$(debian_mirror)" >"$CACHE/debootstrap-$suite.log" 2>&1 \
      || { tail -n 30 "$CACHE/debootstrap-$suite.log" >&2; die "debootstrap $suite failed (log above)"; }
    as_root rm -rf "$base/var/cache/apt/archives"/*.deb "$base/var/lib/apt/lists"/*
    touch "$base.done"
  fi
  echo "$base"
}
# debian_root DIR [SUITE PACKAGES]: a copy of that root in DIR.
debian_root() { as_root cp -a "$(debian_base "${2:-}" "${3:-}")" "$1"; }

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

# ---- recipe: rust-builder ----
# What the Dockerfile's builder stage needs of rust:<version>-slim-bookworm: gcc (the linker),
# libc6-dev, CA certificates and a Rust toolchain on PATH, with CARGO_HOME=/usr/local/cargo (the
# Dockerfile's cache mounts are under it).
DOCKERFILE_BUILDER_PACKAGES=gcc,libc6-dev,ca-certificates,tzdata,netbase

build_rust_builder() {
  local layout=$1 work=$2 rootfs="$2/rootfs" want host sysroot triple=x86_64-unknown-linux-gnu
  want=$(dockerfile_rust)
  host=$(rustc --version | awk '{ print $2 }')
  [[ -n $want ]] || die "the Dockerfile names no rust:<version>-... builder image"
  [[ $host == "$want" || $host == "$want".* ]] \
    || die "the Dockerfile builds with Rust $want, this machine's rustc is $host: the stand-in would lie"
  debian_root "$rootfs" "$DOCKERFILE_SUITE" "$DOCKERFILE_BUILDER_PACKAGES"
  sysroot=$(rustc --print sysroot)
  local toolchain="/usr/local/rustup/toolchains/$host-$triple"
  log "rust-builder: Rust $host from $sysroot into $toolchain"
  as_root mkdir -p "$rootfs$toolchain/bin" "$rootfs$toolchain/lib/rustlib" "$rootfs/usr/local/cargo/bin"
  as_root cp -L "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$rootfs$toolchain/bin/"
  as_root cp -L "$sysroot"/lib/*.so* "$rootfs$toolchain/lib/"
  as_root cp -a "$sysroot/lib/rustlib/$triple" "$rootfs$toolchain/lib/rustlib/"
  # On PATH as rustup's proxies are (a symlink would not do: rustc finds its libraries and
  # sysroot from the path it was started by).
  local tool
  for tool in rustc cargo; do
    printf '#!/bin/sh\nexec %s "$@"\n' "$toolchain/bin/$tool" | as_root tee "$rootfs/usr/local/cargo/bin/$tool" >/dev/null
    as_root chmod 0755 "$rootfs/usr/local/cargo/bin/$tool"
  done
  # The build (not an image it makes) trusts what this machine trusts: cargo fetches crates
  # through this machine's egress, which may be inspected.
  as_root cp -L "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # (/proc mounted: rustc finds its libraries through $ORIGIN, which needs /proc/self/exe.)
  as_root unshare --mount --propagation private sh -euc '
    mount -t proc proc "$1/proc"
    env -i PATH=/usr/local/cargo/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$1" sh -c "rustc --version && cargo --version"
  ' sh "$rootfs" >&2 || die "the toolchain does not run in the $DOCKERFILE_SUITE root"
  package "$layout" "$rootfs" 0:0 / "" \
    RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo RUST_VERSION="$host" \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --
}
# ---- end ----

# ---- recipe: distroless-cc ----
# The Debian packages gcr.io/distroless/cc-debian12 is made of (no shell, no package manager).
DISTROLESS_PACKAGES=(base-files netbase tzdata libc6 libgcc-s1 libstdc++6 libssl3)

build_distroless_cc() {
  local layout=$1 work=$2 rootfs="$2/rootfs" base
  base=$(debian_base "$DOCKERFILE_SUITE" "$DOCKERFILE_BUILDER_PACKAGES")
  mkdir -p "$rootfs"/{etc/ssl/certs,tmp,home/nonroot}
  chmod 1777 "$rootfs/tmp"
  # The merged-/usr links (/lib -> usr/lib, ...), then every path those packages installed
  # (directories without their other contents).
  local link
  for link in "$base"/*; do
    [[ -L $link ]] || continue
    cp -a "$link" "$rootfs/"
    mkdir -p "$rootfs/$(readlink "$link")"
  done
  as_root chroot "$base" dpkg-query -L "${DISTROLESS_PACKAGES[@]}" | LC_ALL=C sort -u \
    | while read -r path; do [[ -e $base$path || -L $base$path ]] && echo ".$path"; done \
    | as_root tar -C "$base" --no-recursion -cf - -T - \
    | as_root tar -C "$rootfs" --keep-directory-symlink -xf -
  # Debian's Mozilla bundle, as update-ca-certificates makes it (not this machine's additions).
  cat /usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$NONROOT_UID" "$NONROOT_UID" >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' "$NONROOT_UID" >"$rootfs/etc/group"
  chown "$NONROOT_UID:$NONROOT_UID" "$rootfs/home/nonroot"
  package "$layout" "$rootfs" "$NONROOT_UID:$NONROOT_UID" /home/nonroot "" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --
}
# ---- end ----

# stop_buildkitd: stops the buildkitd build_runtime_api started, and waits for it to exit.
stop_buildkitd() {
  local pid
  pid=$(cat "${BUILDKITD_PID_FILE:-/nonexistent}" 2>/dev/null) || return 0
  as_root kill "$pid" 2>/dev/null || return 0
  while as_root kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

# manifest_digest IMAGE: the digest of the manifest IMAGE's layout holds (its only one).
manifest_digest() {
  grep -o '"digest":"sha256:[0-9a-f]*"' "$(layout "$1")/index.json" | head -n1 | cut -d'"' -f4
}

# ---- recipe: runtime-api ----
# `docker build .`, run by BuildKit: buildkitd (root, an OCI worker on Debian's runc, the host's
# network for cargo's downloads) for this build only, its state under the cache so that the
# Dockerfile's cache mounts (cargo registry, target/) make the next build incremental. Each of the
# Dockerfile's base images is replaced by its stand-in (a named context, as `docker buildx build
# --build-context` does), read from its OCI layout.
build_runtime_api() {
  local layout=$1 work=$2 buildkit state="$CACHE/buildkit" sock="$2/buildkitd.sock" bases i
  need_tools runc=runc
  buildkit=$("$ROOT/scripts/buildkit.sh")
  mapfile -t bases < <(dockerfile_bases)
  [[ ${#bases[@]} == 2 ]] || die "expected two FROM lines in the Dockerfile (builder, runtime), found ${#bases[@]}"
  mkdir -p "$state"
  # Its own pid file (the daemon, not a shell around it), and none of this script's descriptors:
  # it must not keep the image's build lock.
  as_root sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$work/buildkitd.pid" \
    "$buildkit/buildkitd" --root "$state" --addr "unix://$sock" \
    --oci-worker=true --containerd-worker=false --oci-worker-net=host \
    --oci-worker-gc --oci-worker-gc-keepstorage 8000 8>&- >"$work/buildkitd.log" 2>&1 &
  BUILDKITD_PID_FILE="$work/buildkitd.pid"
  trap stop_buildkitd EXIT
  trap 'exit 143' TERM INT
  for ((i = 0; i < 100; i++)); do
    "$buildkit/buildctl" --addr "unix://$sock" debug workers >/dev/null 2>&1 && break
    kill -0 $! 2>/dev/null || { tail -n 20 "$work/buildkitd.log" >&2; die "buildkitd exited (log above)"; }
    sleep 0.2
  done
  log "runtime-api: building the Dockerfile (${bases[0]} -> rust-builder, ${bases[1]} -> distroless-cc)"
  local status=0
  "$buildkit/buildctl" --addr "unix://$sock" build --progress plain \
    --frontend dockerfile.v0 --local context="$ROOT" --local dockerfile="$ROOT" \
    --oci-layout builder="$(layout rust-builder)" --oci-layout runtime="$(layout distroless-cc)" \
    --opt "context:${bases[0]}=oci-layout://builder@$(manifest_digest rust-builder)" \
    --opt "context:${bases[1]}=oci-layout://runtime@$(manifest_digest distroless-cc)" \
    --output "type=oci,dest=$work/out,tar=false,name=openhands/runtime-api" >&2 || status=$?
  stop_buildkitd
  trap - EXIT TERM INT
  ((status == 0)) || { tail -n 20 "$work/buildkitd.log" >&2; die "the Dockerfile build failed (above)"; }
  as_root chown -R "$(id -u):$(id -g)" "$work/out"
  # One tag, `latest`, as the other layouts have.
  skopeo copy --quiet "oci:$work/out" "oci:$layout.tmp:latest" >&2 \
    || die "copying the built image into $layout failed"
  rm -rf "$layout"; mv "$layout.tmp" "$layout"
}
# ---- end ----

build_one() {
  local name=$1 layout work start
  repository "$name" >/dev/null
  layout=$(layout "$name")
  if [[ -f $layout/index.json ]]; then log "$name: cached in $layout"; return 0; fi
  # The images it is built from, first (each under its own lock).
  [[ $name != runtime-api ]] || { build_one rust-builder; build_one distroless-cc; }
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
    rust-builder) build_rust_builder "$layout" "$work" ;;
    distroless-cc) build_distroless_cc "$layout" "$work" ;;
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

# What the real node's registry gets (the stand-ins are build inputs only).
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
