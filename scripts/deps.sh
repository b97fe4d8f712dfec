#!/bin/sh
# Installs the Debian packages hearth needs to build, test and run, if any
# are missing: QEMU (microVMs under TCG or KVM), the image builder's tools
# (debootstrap, busybox-static, e2fsprogs, cpio, xz, zstd, lz4), the root
# disk and network tools (xfsprogs, iptables, iproute2, kmod) and
# PostgreSQL (multi-host control plane tests). Quiet when all are present.
# Usage: scripts/deps.sh   (as root, or with sudo available)
set -eu

PKGS="qemu-system-x86 qemu-utils debootstrap busybox-static e2fsprogs xfsprogs \
iptables iproute2 kmod cpio xz-utils zstd lz4 ca-certificates postgresql"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "deps.sh: need root to install:$missing" >&2; exit 1; }
	SUDO=sudo
fi
echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO apt-get install -y -q --no-install-recommends $missing
