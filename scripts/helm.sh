#!/usr/bin/env bash
# scripts/helm.sh - print the path of a Helm binary, building it first if it is not cached.
#
#   HELM=$(scripts/helm.sh)      # then: "$HELM" template ...
#
# Helm is built from its Go module (helm.sh/helm/v3), pinned with all its dependencies in
# tools/helm/go.mod and go.sum (a `tool` directive), into
# ${XDG_CACHE_HOME:-~/.cache}/runtime-api/tools/helm-<version>. Only `go` is needed; modules come
# from the Go module proxy (GOPROXY). Progress goes to stderr, the path alone to stdout.
# Version information is stamped the way Helm's own Makefile does it (version, and the default
# Kubernetes version of `helm template` = the client-go minor it is built against, plus one major).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD="$ROOT/tools/helm"
CACHE="${RUNTIME_API_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runtime-api/tools}"

LOG_TAG=helm
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

modver() { go_module_version "$MOD/go.mod" "$1"; }
VERSION=$(modver helm.sh/helm/v3)
[[ -n $VERSION ]] || die "cannot read the helm.sh/helm/v3 version from $MOD/go.mod"
BIN="$CACHE/helm-$VERSION"

if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || die "go not found on PATH (needed to build Helm $VERSION)"
mkdir -p "$CACHE"
# One build at a time; whoever waits reuses the result.
exec 9>"$CACHE/.helm-build.lock"
if command -v flock >/dev/null; then flock 9; fi
if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi

CLIENT_GO=$(modver k8s.io/client-go)          # v0.MINOR.PATCH
[[ $CLIENT_GO =~ ^v0\.([0-9]+)\. ]] || die "unexpected k8s.io/client-go version '$CLIENT_GO' in $MOD/go.mod"
KMAJOR=1 KMINOR=${BASH_REMATCH[1]}
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  LDFLAGS+=" -X $p.k8sVersionMajor=$KMAJOR -X $p.k8sVersionMinor=$KMINOR"
done

TMP="$BIN.tmp.$$"
trap 'rm -f "$TMP"' EXIT
log "building Helm $VERSION from the Go module proxy (first time only; a few minutes)"
start=$SECONDS
(cd "$MOD" && CGO_ENABLED=0 go build -mod=readonly -trimpath -buildvcs=false -ldflags "$LDFLAGS" \
   -o "$TMP" helm.sh/helm/v3/cmd/helm) >&2 || die "go build of helm.sh/helm/v3/cmd/helm $VERSION failed"
"$TMP" version --short >/dev/null 2>&1 || die "the built helm binary does not run"
mv -f "$TMP" "$BIN"
log "built $("$BIN" version --short) in $((SECONDS - start))s: $BIN"
echo "$BIN"
