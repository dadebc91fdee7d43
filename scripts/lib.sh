# Shared helpers for the setup and test scripts. Sourced, not executed.

NESTBOX_ROOT="${NESTBOX_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
TOOLCHAIN_DIR="$NESTBOX_ROOT/.toolchain"
NODE_MAJOR_MIN=20
# The Node release installed from the npm registry when the machine has no Node >= 20.
NODE_FALLBACK_VERSION=20.20.2
NPM_FALLBACK_VERSION=10.9.9

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'nestbox: %s\n' "$*" >&2; exit 1; }

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# Prints the path of a Node.js >= 20 binary, or fails.
find_node() {
  local candidates=()
  [ -n "${NESTBOX_NODE:-}" ] && candidates+=("$NESTBOX_NODE")
  candidates+=("$TOOLCHAIN_DIR/node/bin/node")
  command -v node >/dev/null 2>&1 && candidates+=("$(command -v node)")
  local c
  for c in "${candidates[@]}"; do
    if [ -x "$c" ] && [ "$(node_major "$c")" -ge "$NODE_MAJOR_MIN" ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# Puts the chosen Node first on PATH so npm, npx and node-gyp all use it.
use_node() {
  local node
  node="$(find_node)" || die "Node.js >= $NODE_MAJOR_MIN not found; run ./nestbox setup"
  export PATH="$(dirname "$node"):$PATH"
  export NESTBOX_NODE="$node"
  # node-gyp builds native addons against these headers instead of downloading them.
  # Official Node builds trust only their bundled CAs; also trust the machine's store, as
  # Debian's own Node does (matters behind TLS-inspecting proxies with a local CA).
  if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
  fi
  local inc
  inc="$(cd "$(dirname "$node")/.." && pwd)"
  if [ -f "$inc/include/node/node.h" ]; then
    export npm_config_nodedir="$inc"
  fi
}

missing_debs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# Prints the first mirror URI this machine's apt sources use for Debian suite $1 (default
# bookworm), reading one-line (.list) and deb822 (.sources) files.
apt_mirror() {
  local suite="${1:-bookworm}" f files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ "${#files[@]}" -gt 0 ] || return 1
  awk -v suite="$suite" '
    /^[[:space:]]*#/ { next }
    /^deb[[:space:]]/ {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite) { print $i; exit }
      next
    }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (j = 2; j <= NF; j++) if ($j == suite && uri != "") { print uri; exit } }
    /^[[:space:]]*$/ { uri = "" }
  ' "${files[@]}"
}
