# scripts/lib/common.sh - the helpers every script of the project shares, sourced, never run.
#
#   LOG_TAG=images; source "$ROOT/scripts/lib/common.sh"
#
# log/die print `[LOG_TAG] ...` on stderr (stdout stays free for what a script prints for `eval`);
# as_root runs a command as root (directly, or through sudo); apt_install installs the Debian
# packages that are missing (need_tools: those of the missing commands), in one apt-get call (with an `apt-get update` retry when the lists
# are stale); debian_mirror is the archive this machine's apt uses.

log() { printf '[%s] %s\n' "${LOG_TAG:-runtime-api}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${LOG_TAG:-runtime-api}" "$*" >&2; exit 1; }

as_root() {
  if [[ $(id -u) == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "root is needed to run: $*"; fi
}

# go_module_version GOMOD MODULE: the version of MODULE that the go.mod file GOMOD requires (read
# from the file: no network needed).
go_module_version() { awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$1"; }

# apt_install PACKAGE...: install those not installed yet.
apt_install() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
    || { as_root apt-get update >&2 \
      && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; } \
    || die "apt-get install ${missing[*]} failed"
}

# need_tools CMD=PACKAGE...: install the Debian packages of the commands that are missing.
need_tools() {
  local pair packages=()
  for pair in "$@"; do command -v "${pair%%=*}" >/dev/null || packages+=("${pair#*=}"); done
  ((${#packages[@]} == 0)) || apt_install "${packages[@]}"
}

# The Debian mirror this machine's apt uses (deb-src lines and debootstrap use the same host).
debian_mirror() {
  local uri=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1 ~ /^deb(-src)?$/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/ && $i !~ /security/) { print $i; exit } }' \
      /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}
