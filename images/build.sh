#!/usr/bin/env bash
# Builds the Nestbox guest: kernel (+ initramfs) and the `base` template root filesystem.
#
#   images/build.sh [--force] [--kernel debian|minimal]
#
# Output: $NESTBOX_DIR/images/base -> base-<time>-<hash>/ (symlink swapped atomically) holding
# rootfs.ext4, the kernel, an optional initrd.img and manifest.json. See images/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
NESTBOX_DIR=${NESTBOX_DIR:-/var/lib/nestbox}
IMAGES_DIR="$NESTBOX_DIR/images"
SUITE=bookworm
# Free space left in the guest root filesystem on top of what the image contains. The file is
# sparse and sandboxes write to qcow2 overlays, so unused space costs nothing on the host.
ROOTFS_FREE_MIB=${NESTBOX_ROOTFS_FREE_MIB:-2048}
# Smallest root filesystem: sandboxes' default disk (disk_size_mb 5120, E2B's size), so a
# default sandbox needs no resize; a larger disk_size_mb is grown by the agent at create.
ROOTFS_MIN_MIB=${NESTBOX_ROOTFS_MIN_MIB:-5120}
ENVD_BUNDLE=${NESTBOX_ENVD_BUNDLE:-"$REPO_DIR/packages/envd/dist/bundle"}
GUEST_INIT=/usr/local/sbin/nestbox-init
ENVD_PORT=49983
TOTAL_STEPS=8
# Bump when the minimal kernel's build commands change (its cache key is this + its config).
KERNEL_RECIPE_VERSION=1

ORIG_ARGS="$*"
FORCE=0
KERNEL_KIND=${NESTBOX_KERNEL:-debian}

usage() {
  cat <<EOF
Usage: images/build.sh [--force] [--kernel debian|minimal]

Builds the guest kernel and the 'base' template root filesystem into \$NESTBOX_DIR/images
(NESTBOX_DIR=${NESTBOX_DIR}). Must run as root.

  --force            rebuild even if the inputs did not change
  --kernel debian    Debian's linux-image-cloud-amd64 + a small initramfs (default; fast to build)
  --kernel minimal   a kernel built from Debian's linux-source-6.12 with the drivers built in
                     (boots faster, takes minutes to compile; cached separately)

Environment: NESTBOX_DIR, NESTBOX_NODE (node binary to copy into the guest; default: the node
on PATH), NESTBOX_APT_MIRROR (default: read from this machine's apt sources),
NESTBOX_ROOTFS_FREE_MIB (free space in the root filesystem, default 2048),
NESTBOX_ROOTFS_MIN_MIB (smallest root filesystem, default 5120: the default sandbox disk),
NESTBOX_ENVD_BUNDLE (envd bundle directory; default packages/envd/dist/bundle).
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --kernel)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      KERNEL_KIND=$2
      shift
      ;;
    --kernel=*) KERNEL_KIND=${1#--kernel=} ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$KERNEL_KIND" in
  debian | minimal) ;;
  *) echo "build.sh: --kernel must be 'debian' or 'minimal', not '$KERNEL_KIND'" >&2; exit 2 ;;
esac

die() {
  echo "build.sh: error: $*" >&2
  exit 1
}

BUILD_START=$(date +%s)
STEP_NO=0
STEP_START=0
STEP_NAME=""
step_done() {
  if [ "$STEP_NO" -gt 0 ]; then
    echo "      done in $(($(date +%s) - STEP_START))s"
  fi
}
step() {
  step_done
  STEP_NO=$((STEP_NO + 1))
  STEP_NAME=$1
  STEP_START=$(date +%s)
  echo "[$STEP_NO/$TOTAL_STEPS] $STEP_NAME"
}

# ---------------------------------------------------------------------------------------------
# Temporary build directory and cleanup. Everything is built under $WORK (on the same filesystem
# as the destination so the final rename is atomic); on any exit it is unmounted and removed.
WORK=""
# The original stderr, for messages from the EXIT trap: a signal can arrive while a step's output
# is redirected to its log file.
exec 3>&2
unmount_under() {
  local dir=$1 target
  # Deepest first; -l so a busy mount cannot keep us from removing the tree.
  while read -r target; do
    umount -l "$target" 2>/dev/null || umount -l "$target" || true
  done < <(awk -v d="$dir/" '{ gsub(/\\040/, " ", $5); if (index($5, d) == 1) print $5 }' \
    /proc/self/mountinfo | sort -r)
}
still_mounted_under() {
  awk -v d="$1/" '{ if (index($5, d) == 1) { found = 1 } } END { exit !found }' /proc/self/mountinfo
}
# Long steps run in the background and are waited for: bash runs a trap only after the foreground
# command ends, and debootstrap/dpkg ignore SIGINT, so Ctrl-C would otherwise go unnoticed for
# minutes. `wait` returns at once on a trapped signal.
CHILD_PID=""
run_child() {
  "$@" &
  CHILD_PID=$!
  local status=0
  wait "$CHILD_PID" || status=$?
  CHILD_PID=""
  return "$status"
}
kill_tree() { # pid: our own child and its descendants, children first
  local pid=$1 child
  # shellcheck disable=SC2013 # the file is a space-separated list of pids
  for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
    kill_tree "$child"
  done
  kill -TERM "$pid" 2>/dev/null || true
}
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$CHILD_PID" ]; then
    kill_tree "$CHILD_PID"
    wait "$CHILD_PID" 2>/dev/null || true
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    unmount_under "$WORK"
    if still_mounted_under "$WORK"; then
      echo "build.sh: WARNING: mounts remain under $WORK; not deleting it" >&3
    else
      rm -rf --one-file-system "$WORK"
    fi
  fi
  if [ "$status" -ne 0 ]; then
    # shellcheck disable=SC2016 # the quotes are literal text, $STEP_NAME does expand
    echo "build.sh: FAILED${STEP_NAME:+ during step '$STEP_NAME'} (exit $status)" >&3
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
step "checking prerequisites"
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot and device nodes need it); try: sudo $0 $ORIG_ARGS"

missing_pkgs=()
need_cmd() { # command package
  command -v "$1" >/dev/null 2>&1 || missing_pkgs+=("$2")
}
need_cmd debootstrap debootstrap
need_cmd mkfs.ext4 e2fsprogs
need_cmd cpio cpio
need_cmd depmod kmod
need_cmd gzip gzip
need_cmd apt-get apt
need_cmd dpkg-deb dpkg
need_cmd sha256sum coreutils
need_cmd chroot coreutils
need_cmd flock util-linux
# debootstrap verifies the archive's Release signature with this keyring.
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing_pkgs+=(debian-archive-keyring)
if [ "$KERNEL_KIND" = minimal ]; then
  need_cmd make build-essential
  need_cmd gcc build-essential
  need_cmd bc bc
  need_cmd bison bison
  need_cmd flex flex
  need_cmd xz xz-utils
  [ -f /usr/include/libelf.h ] || missing_pkgs+=(libelf-dev)
  [ -f /usr/include/openssl/opensslv.h ] || missing_pkgs+=(libssl-dev)
  compgen -G "/usr/src/linux-source-6.12.tar.*" >/dev/null || missing_pkgs+=(linux-source-6.12)
fi
if [ ${#missing_pkgs[@]} -gt 0 ]; then
  mapfile -t missing_pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | sort -u)
  die "missing system packages: ${missing_pkgs[*]}
  install them with: apt-get install -y --no-install-recommends ${missing_pkgs[*]}"
fi

NODE_BIN=${NESTBOX_NODE:-$(command -v node || true)}
if [ -z "$NODE_BIN" ] || [ ! -x "$NODE_BIN" ]; then
  die "no node binary found (set NESTBOX_NODE or put node on PATH)"
fi
NODE_BIN=$(readlink -f "$NODE_BIN")
NODE_VERSION=$("$NODE_BIN" --version)

# The mirror debootstrap uses: this machine's own apt sources (one-line and deb822 formats), so
# the repository never names a registry host.
apt_source_pairs() { # prints "URI SUITE" for every enabled deb source
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      print $i, $(i + 1)
    }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: paragraphs separated by blank lines; Enabled: no switches one off.
    awk 'function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no") {
          n = split(uris, u, " "); m = split(suites, s, " ")
          for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) print u[a], s[b]
        }
        types = ""; uris = ""; suites = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:" { $1 = ""; types = $0 }
      tolower($1) == "uris:" { $1 = ""; uris = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { flush() }' "$f"
  done
}
APT_PAIRS=$(apt_source_pairs)
MIRROR=${NESTBOX_APT_MIRROR:-$(awk -v s="$SUITE" '$2 == s { print $1; exit }' <<<"$APT_PAIRS")}
SECURITY_MIRROR=$(awk -v s="$SUITE-security" '$2 == s { print $1; exit }' <<<"$APT_PAIRS")
[ -n "$MIRROR" ] || die "no '$SUITE' entry in /etc/apt/sources.list{,.d/*}; set NESTBOX_APT_MIRROR"
echo "      node $NODE_VERSION ($NODE_BIN), mirror $MIRROR, kernel: $KERNEL_KIND"

# ---------------------------------------------------------------------------------------------
step "checking the envd bundle"
if [ ! -f "$ENVD_BUNDLE/envd.mjs" ] && [ -z "${NESTBOX_ENVD_BUNDLE:-}" ]; then
  echo "      $ENVD_BUNDLE missing: running 'npm run bundle -w @nestbox/envd'"
  command -v npm >/dev/null 2>&1 || die "npm not found, cannot build the envd bundle"
  (cd "$REPO_DIR" && npm run bundle -w @nestbox/envd) || die "'npm run bundle -w @nestbox/envd' failed"
fi
[ -f "$ENVD_BUNDLE/envd.mjs" ] ||
  die "envd bundle not found at $ENVD_BUNDLE/envd.mjs even after 'npm run bundle -w @nestbox/envd'"

# ---------------------------------------------------------------------------------------------
step "hashing inputs"
# Everything that changes the result: the recipe (this script, guest files, package list, kernel
# config), the envd bundle, the node binary and the kernel choice. Package versions from the
# archive are not inputs: use --force to pick up updates.
hash_tree() { # dir: stable listing of relative path, type and content hash
  (cd "$1" && find . \( -type f -o -type l \) -print0 | LC_ALL=C sort -z |
    while IFS= read -r -d '' f; do
      if [ -L "$f" ]; then
        printf 'L %s %s\n' "$f" "$(readlink "$f")"
      else
        printf 'F %s %s %s\n' "$f" "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -d' ' -f1)"
      fi
    done)
}
INPUT_HASH=$({
  echo "format 1"
  echo "kernel $KERNEL_KIND"
  echo "suite $SUITE"
  echo "rootfs-free-mib $ROOTFS_FREE_MIB"
  echo "rootfs-min-mib $ROOTFS_MIN_MIB"
  echo "recipe"
  sha256sum <"$SCRIPT_DIR/build.sh"
  sha256sum <"$SCRIPT_DIR/packages.txt"
  hash_tree "$SCRIPT_DIR/guest"
  hash_tree "$SCRIPT_DIR/kernel"
  echo "envd"
  hash_tree "$ENVD_BUNDLE"
  echo "node $NODE_VERSION"
  sha256sum <"$NODE_BIN"
} | sha256sum | cut -d' ' -f1)
SHORT_HASH=${INPUT_HASH:0:12}
echo "      inputs hash $INPUT_HASH"

# One build at a time per NESTBOX_DIR (`nestbox up` and `nestbox image build` may race). The
# up-to-date check comes after the lock: the other build may just have produced this very image.
mkdir -p "$IMAGES_DIR"
exec 9>"$IMAGES_DIR/.build.lock"
if ! flock -n 9; then
  echo "      another image build is running in $IMAGES_DIR; waiting for it"
  flock 9
fi

CURRENT_MANIFEST="$IMAGES_DIR/base/manifest.json"
if [ "$FORCE" -eq 0 ] && [ -f "$CURRENT_MANIFEST" ] &&
  grep -q "\"hash\": \"$INPUT_HASH\"" "$CURRENT_MANIFEST"; then
  step_done
  echo "base image up to date (hash $SHORT_HASH) at $IMAGES_DIR/base; use --force to rebuild"
  exit 0
fi

mkdir -p "$IMAGES_DIR" "$NESTBOX_DIR/cache"
WORK=$(mktemp -d "$IMAGES_DIR/.build-XXXXXX")
ROOT="$WORK/root"
OUT="$WORK/out"
mkdir -p "$ROOT" "$OUT"

# ---------------------------------------------------------------------------------------------
step "debootstrap --variant=minbase $SUITE (this takes a minute)"
mapfile -t GUEST_PACKAGES < <(grep -v '^[[:space:]]*\(#\|$\)' "$SCRIPT_DIR/packages.txt")
INCLUDE=$(IFS=,; echo "${GUEST_PACKAGES[*]}")
mkdir -p "$NESTBOX_DIR/cache/debootstrap"
if ! run_child debootstrap --variant=minbase --include="$INCLUDE" \
  --cache-dir="$NESTBOX_DIR/cache/debootstrap" \
  "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  tail -n 30 "$WORK/debootstrap.log" >&2
  [ -f "$ROOT/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2
  die "debootstrap failed (see above)"
fi
# debootstrap unmounts what it mounted, but make sure before we go on.
unmount_under "$ROOT"

# ---------------------------------------------------------------------------------------------
step "configuring the guest (user, sudo, node, envd, init)"
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo nestbox >"$ROOT/etc/hostname"
: >"$ROOT/etc/fstab"
{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  [ -z "$SECURITY_MIRROR" ] || echo "deb $SECURITY_MIRROR $SUITE-security main"
} >"$ROOT/etc/apt/sources.list"

# The default user, as on E2B: uid 1000, passwordless sudo.
in_root useradd --create-home --uid 1000 --user-group --shell /bin/bash --groups sudo user
echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' >"$ROOT/etc/sudoers.d/user"
chmod 0440 "$ROOT/etc/sudoers.d/user"

# The host's node: envd's native addons (node-pty, fs-xattr) are built for its ABI.
install -m 0755 "$NODE_BIN" "$ROOT/usr/local/bin/node"
if in_root /lib64/ld-linux-x86-64.so.2 --list /usr/local/bin/node | grep -q 'not found'; then
  in_root /lib64/ld-linux-x86-64.so.2 --list /usr/local/bin/node >&2 || true
  die "node's shared libraries are missing in the guest; add their packages to images/packages.txt"
fi

mkdir -p "$ROOT/opt/nestbox"
cp -a "$ENVD_BUNDLE" "$ROOT/opt/nestbox/envd"
chown -R 0:0 "$ROOT/opt/nestbox/envd"

install -D -m 0755 "$SCRIPT_DIR/guest/nestbox-init" "$ROOT$GUEST_INIT"
install -D -m 0755 "$SCRIPT_DIR/guest/supervise-envd" "$ROOT/usr/local/lib/nestbox/supervise-envd"

# Smaller image: no docs, man pages or translations now or after later apt installs (the
# copyright files stay).
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/nestbox-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/*.log \
  "$ROOT"/var/cache/debconf/*-old "$ROOT"/debootstrap
# Machine identity is per sandbox; an empty machine-id is the documented "generate at boot"
# marker, and nothing in the guest needs a persistent one.
: >"$ROOT/etc/machine-id"

# ---------------------------------------------------------------------------------------------
KERNEL_FILE=""
INITRD_FILE=""
KERNEL_ACPI=true
KERNEL_VERSION=""
apt_download() { # into the current directory, through this machine's apt configuration
  apt-get -q -o APT::Sandbox::User=root download "$@" >/dev/null
}

build_kernel_debian() {
  local kdir="$WORK/kernel" meta pkg kver moddir
  mkdir -p "$kdir/x" "$kdir/bb" "$kdir/initramfs"
  meta=linux-image-cloud-amd64
  pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  [ -n "$pkg" ] || die "cannot resolve $meta to a kernel package (is apt-get update done?)"
  (cd "$kdir" && apt_download "$pkg" busybox-static) || die "apt-get download $pkg busybox-static failed"
  dpkg-deb -x "$kdir/$pkg"_*.deb "$kdir/x"
  dpkg-deb -x "$kdir"/busybox-static_*.deb "$kdir/bb"
  kver=$(ls "$kdir/x/lib/modules")
  KERNEL_VERSION="$kver (Debian $pkg)"
  depmod -b "$kdir/x" "$kver"
  moddir="$kdir/x/lib/modules/$kver"

  # Modules the initramfs loads, dependencies first (modules.dep lists each module's full
  # dependency closure, the ones to load first last).
  local want=(virtio_mmio virtio_blk virtio_net) order=() m line dep seen=" "
  grep -qE '/ext4\.ko' "$moddir/modules.builtin" || want+=(ext4)
  for m in "${want[@]}"; do
    line=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$moddir/modules.dep") || die "module $m not in $pkg"
    local deps i
    read -r -a deps <<<"${line#*:}"
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
      dep=${deps[$i]}
      [[ "$seen" == *" $dep "* ]] || { order+=("$dep"); seen+="$dep "; }
    done
    dep=${line%%:*}
    [[ "$seen" == *" $dep "* ]] || { order+=("$dep"); seen+="$dep "; }
  done

  local ird="$kdir/initramfs"
  mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
  install -m 0755 "$kdir/bb/bin/busybox" "$ird/bin/busybox"
  install -m 0755 "$SCRIPT_DIR/guest/initramfs-init" "$ird/init"
  mknod -m 0600 "$ird/dev/console" c 5 1
  : >"$ird/modules.load"
  for dep in "${order[@]}"; do
    case "$dep" in
      *.ko) cp "$moddir/$dep" "$ird/lib/modules/" ;;
      *.ko.xz) xz -dc "$moddir/$dep" >"$ird/lib/modules/$(basename "${dep%.xz}")" ;;
      *.ko.zst) zstd -qdc "$moddir/$dep" >"$ird/lib/modules/$(basename "${dep%.zst}")" ;;
      *) die "unexpected module file $dep" ;;
    esac
    basename "${dep%.ko*}.ko" >>"$ird/modules.load"
  done
  echo "      initramfs modules: $(tr '\n' ' ' <"$ird/modules.load")"
  (cd "$ird" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --quiet --reproducible) | gzip -9n >"$OUT/initrd.img"

  install -m 0644 "$kdir/x/boot/vmlinuz-$kver" "$OUT/vmlinuz"
  KERNEL_FILE=vmlinuz
  INITRD_FILE=initrd.img
  # Debian's kernel finds the virtio-mmio devices through QEMU's ACPI tables.
  KERNEL_ACPI=true
  # The full module tree goes into the guest so modprobe works there (overlay, nf_tables, ...).
  mkdir -p "$ROOT/lib/modules"
  cp -a "$moddir" "$ROOT/lib/modules/"
  install -D -m 0644 "$kdir/x/boot/config-$kver" "$ROOT/boot/config-$kver"
}

build_kernel_tree() { # source dir, jobs; runs as a background child (see run_child)
  local kdir=$1 jobs=$2
  cd "$kdir"
  make -s tinyconfig >/dev/null
  scripts/kconfig/merge_config.sh -m -O . .config "$SCRIPT_DIR/kernel/minimal.config" >/dev/null
  make -s olddefconfig >/dev/null
  # merge_config silently drops options whose dependencies are unmet; catch that here.
  local opt missing=""
  while read -r opt; do
    grep -qx "$opt" .config || missing+=" $opt"
  done < <(grep -E '^CONFIG_[A-Z0-9_]+=y' "$SCRIPT_DIR/kernel/minimal.config")
  [ -z "$missing" ] || { echo "build.sh: kernel config lost:$missing" >&2; exit 1; }
  echo "      compiling linux $(make -s kernelversion) with $jobs jobs (about 3 minutes on 2 cores)"
  make -j"$jobs" vmlinux >"$WORK/kernel-build.log" 2>&1 ||
    { tail -n 40 "$WORK/kernel-build.log" >&2; exit 1; }
  make -s kernelrelease >"$WORK/kernelrelease"
}

build_kernel_minimal() {
  local tarball src_pkg_version key cache kdir jobs tarballs
  mapfile -t tarballs < <(compgen -G "/usr/src/linux-source-6.12.tar.*")
  tarball=${tarballs[0]}
  src_pkg_version=$(dpkg-query -W -f '${Version}' linux-source-6.12 2>/dev/null || echo unknown)
  # The kernel depends only on its source and config, so it is cached apart from the root
  # filesystem: rebuilding the image for a new envd does not recompile the kernel.
  key=$({
    echo "$src_pkg_version"
    echo "$KERNEL_RECIPE_VERSION"
    sha256sum <"$SCRIPT_DIR/kernel/minimal.config"
  } | sha256sum | cut -c1-16)
  cache="$NESTBOX_DIR/cache/kernel-minimal-$key"
  if [ -f "$cache/vmlinux" ]; then
    echo "      using cached kernel $cache"
  else
    kdir="$WORK/linux"
    mkdir -p "$kdir"
    echo "      unpacking $tarball"
    run_child tar -xf "$tarball" -C "$kdir" --strip-components=1
    jobs=$(nproc)
    run_child build_kernel_tree "$kdir" "$jobs" || die "kernel build failed"
    mkdir -p "$cache.tmp"
    install -m 0644 "$kdir/vmlinux" "$cache.tmp/vmlinux"
    install -m 0644 "$kdir/.config" "$cache.tmp/config"
    install -m 0644 "$WORK/kernelrelease" "$cache.tmp/release"
    rm -rf "$cache"
    mv "$cache.tmp" "$cache"
    rm -rf "$kdir"
  fi
  install -m 0644 "$cache/vmlinux" "$OUT/vmlinux"
  install -D -m 0644 "$cache/config" "$ROOT/boot/config-nestbox-minimal"
  KERNEL_FILE=vmlinux
  # Built without ACPI: QEMU must run with acpi=off and put the devices on the command line.
  KERNEL_ACPI=false
  KERNEL_VERSION="$(cat "$cache/release" 2>/dev/null || echo 6.12) (minimal, linux-source-6.12 $src_pkg_version)"
}

step "kernel ($KERNEL_KIND)"
"build_kernel_$KERNEL_KIND"
echo "      $KERNEL_VERSION"

# ---------------------------------------------------------------------------------------------
step "root filesystem image (mkfs.ext4 -d)"
USED_KIB=$(du -sk --apparent-size "$ROOT" | cut -f1)
# ext4 metadata and the journal need room beyond the files themselves.
SIZE_MIB=$(((USED_KIB * 12 / 10) / 1024 + ROOTFS_FREE_MIB + 64))
[ "$SIZE_MIB" -ge "$ROOTFS_MIN_MIB" ] || SIZE_MIB=$ROOTFS_MIN_MIB
# lazy_*_init=0: the guest kernel would otherwise zero inode tables in the background after
# boot, which is slow under TCG and grows every sandbox's overlay.
mkfs.ext4 -q -F -L nestbox-root -m 0 -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 \
  -d "$ROOT" "$OUT/rootfs.ext4" "${SIZE_MIB}M" >/dev/null
echo "      rootfs.ext4: ${SIZE_MIB} MiB (contents $((USED_KIB / 1024)) MiB, $(du -sm "$OUT/rootfs.ext4" | cut -f1) MiB on disk)"

# ---------------------------------------------------------------------------------------------
step "manifest and install"
CMDLINE="root=/dev/vda rw init=$GUEST_INIT panic=-1 quiet"
BUILT_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
BUILD_SECONDS=$(($(date +%s) - BUILD_START))
json_str() { # minimal JSON string escaping for the values we write
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}
size_of() { stat -c %s "$1"; }
{
  echo "{"
  echo "  \"name\": \"base\","
  echo "  \"hash\": \"$INPUT_HASH\","
  echo "  \"builtAt\": \"$BUILT_AT\","
  echo "  \"buildSeconds\": $BUILD_SECONDS,"
  echo "  \"kernelKind\": \"$KERNEL_KIND\","
  echo "  \"kernelVersion\": $(json_str "$KERNEL_VERSION"),"
  echo "  \"kernel\": \"$KERNEL_FILE\","
  if [ -n "$INITRD_FILE" ]; then
    echo "  \"initrd\": \"$INITRD_FILE\","
  else
    echo "  \"initrd\": null,"
  fi
  echo "  \"rootfs\": \"rootfs.ext4\","
  echo "  \"rootfsFormat\": \"raw\","
  echo "  \"cmdline\": \"$CMDLINE\","
  echo "  \"acpi\": $KERNEL_ACPI,"
  echo "  \"sizes\": {"
  echo "    \"kernel\": $(size_of "$OUT/$KERNEL_FILE"),"
  [ -z "$INITRD_FILE" ] || echo "    \"initrd\": $(size_of "$OUT/$INITRD_FILE"),"
  echo "    \"rootfs\": $(size_of "$OUT/rootfs.ext4"),"
  echo "    \"rootfsContents\": $((USED_KIB * 1024))"
  echo "  },"
  echo "  \"nodeVersion\": \"$NODE_VERSION\","
  echo "  \"suite\": \"$SUITE\","
  echo "  \"guest\": { \"address\": \"169.254.0.21\", \"prefixLength\": 30, \"gateway\": \"169.254.0.22\", \"envdPort\": $ENVD_PORT }"
  echo "}"
} >"$OUT/manifest.json"

# New directory per build; the `base` symlink is swapped with a rename, so readers see either the
# old or the new image, never a half-written one. The previous build is kept because running
# sandboxes' overlays may still reference its rootfs; older ones are removed.
FINAL_NAME="base-$(date -u +%Y%m%d%H%M%S)-$SHORT_HASH"
mv "$OUT" "$IMAGES_DIR/$FINAL_NAME"
PREVIOUS=""
if [ -L "$IMAGES_DIR/base" ]; then
  PREVIOUS=$(readlink "$IMAGES_DIR/base")
elif [ -e "$IMAGES_DIR/base" ]; then
  PREVIOUS="base-legacy-$(date +%s)"
  mv "$IMAGES_DIR/base" "$IMAGES_DIR/$PREVIOUS"
fi
ln -sfn "$FINAL_NAME" "$IMAGES_DIR/.base.new"
mv -T "$IMAGES_DIR/.base.new" "$IMAGES_DIR/base"
for old in "$IMAGES_DIR"/base-*; do
  name=$(basename "$old")
  [ "$name" = "$FINAL_NAME" ] || [ "$name" = "$PREVIOUS" ] || rm -rf --one-file-system "$old"
done
step_done
echo "base image built in $(($(date +%s) - BUILD_START))s (hash $SHORT_HASH): $IMAGES_DIR/base -> $FINAL_NAME"
