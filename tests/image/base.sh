#!/usr/bin/env bash
# The base image's root filesystem, from Debian packages only: bookworm minbase plus
# Debian's Python (3.11, as the Dockerfile's default python:3.11-slim-bookworm), venv, pip
# and CA certificates. Usage: base.sh ROOTFS (an empty directory; run as root in a private
# mount namespace: debootstrap and the chroot mount /proc and /sys there).
# The image cache key of the base is this file's sha256: change it to rebuild the base.
set -euo pipefail
ROOTFS=$1
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
PACKAGES=(python3 python3-venv python3-pip python-is-python3 ca-certificates)

debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >&2
# apt inside the chroot resolves the mirror with the host's resolver; removed afterwards.
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"
trap 'umount "$ROOTFS/proc" 2>/dev/null || true' EXIT
# A clean environment in the chroot (the caller's TMPDIR and the like do not exist there).
in_root() { chroot "$ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
  DEBIAN_FRONTEND=noninteractive "$@"; }
in_root apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2
in_root apt-get clean
umount "$ROOTFS/proc"
trap - EXIT
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/*.log \
  "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/machine-id"
echo agentrun >"$ROOTFS/etc/hostname"
