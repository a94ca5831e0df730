#!/usr/bin/env bash
# scripts/buildkit.sh - print the folder holding BuildKit's `buildkitd` and `buildctl`, building
# them first if they are not cached.
#
#   BUILDKIT=$(scripts/buildkit.sh)      # then: "$BUILDKIT/buildkitd" ..., "$BUILDKIT/buildctl" ...
#
# BuildKit is what `docker build` runs on; with no Docker engine here, scripts/images.sh builds
# the Dockerfile with it directly (an OCI worker on Debian's runc). Both commands are built from
# the Go module github.com/moby/buildkit, pinned with all its dependencies in tools/buildkit/go.mod
# and go.sum (`tool` directives), into ${XDG_CACHE_HOME:-~/.cache}/runtime-api/tools/
# buildkit-<version>/. Only `go` is needed; modules come from the Go module proxy. Progress goes to
# stderr, the path alone to stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD="$ROOT/tools/buildkit"
CACHE="${RUNTIME_API_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runtime-api/tools}"

LOG_TAG=buildkit
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

VERSION=$(go_module_version "$MOD/go.mod" github.com/moby/buildkit)
[[ -n $VERSION ]] || die "cannot read the github.com/moby/buildkit version from $MOD/go.mod"
DIR="$CACHE/buildkit-$VERSION"

built() { [[ -x $DIR/buildkitd && -x $DIR/buildctl ]]; }
if built; then
  echo "$DIR"
  exit 0
fi

command -v go >/dev/null || die "go not found on PATH (needed to build BuildKit $VERSION)"
mkdir -p "$CACHE"
# One build at a time; whoever waits reuses the result.
exec 9>"$CACHE/.buildkit-build.lock"
if command -v flock >/dev/null; then flock 9; fi
if built; then
  echo "$DIR"
  exit 0
fi

TMP="$DIR.tmp.$$"
trap 'rm -rf "$TMP"' EXIT
log "building BuildKit $VERSION (buildkitd, buildctl) from the Go module proxy (first time only; a few minutes)"
start=$SECONDS
mkdir -p "$TMP"
LDFLAGS="-s -w -X github.com/moby/buildkit/version.Version=$VERSION"
(cd "$MOD" && CGO_ENABLED=0 go build -mod=readonly -trimpath -buildvcs=false -ldflags "$LDFLAGS" \
   -o "$TMP/" github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl) >&2 \
  || die "go build of BuildKit $VERSION failed"
"$TMP/buildctl" --version >/dev/null || die "the built buildctl does not run"
rm -rf "$DIR"
mv "$TMP" "$DIR"
log "built BuildKit $VERSION in $((SECONDS - start))s: $DIR"
echo "$DIR"
