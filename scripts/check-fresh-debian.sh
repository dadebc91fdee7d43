#!/usr/bin/env bash
# Checks that `./nestbox setup` works on a fresh Debian 12: debootstraps a minimal bookworm
# into a temporary directory, clones this repository's HEAD into it and runs setup in a chroot.
# Slow (several minutes, downloads packages), so it is a manual check, not part of the tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || die "needs debootstrap (apt-get install debootstrap)"

# The mirror comes from this machine's apt sources, never from a name written here.
mirror="$(apt_mirror bookworm)"
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*"

root="$(mktemp -d /tmp/nbx-fresh-debian.XXXXXX)"
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ "${KEEP:-0}" = 1 ]; then
    note "kept $root for inspection (mounts still in place)"
    return
  fi
  for m in dev/pts dev proc sys; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
step "debootstrap bookworm into $root (mirror $mirror)"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
cp /etc/resolv.conf "$root/etc/resolv.conf"
# A fresh machine of this kind trusts the same CAs as this one (the npm registry may sit behind
# a TLS-inspecting proxy with a local CA), so carry the trust store over.
mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
step "cloning HEAD"
git clone -q "$NESTBOX_ROOT" "$root/root/nestbox"
step "running ./nestbox setup in the chroot"
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb \
  bash -c 'cd /root/nestbox && ./nestbox setup && ./nestbox --help >/dev/null && ./nestbox envd --version'
step "fresh Debian 12 setup: OK"
