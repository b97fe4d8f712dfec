#!/bin/sh
# Installs the Debian packages hearth needs to build, test and run, if any
# are missing: QEMU (microVMs under TCG or KVM), the image builder's tools
# (debootstrap, busybox-static, e2fsprogs, cpio, xz, zstd, lz4), the root
# disk and network tools (xfsprogs, iptables, iproute2, kmod) and
# PostgreSQL (store tests), Chromium (dashboard browser tests), Node.js
# with npm when the machine has none (front-end build, E2B SDK suite), and
# the deployment tests' tools: Caddy (reverse proxy in front of hearth),
# podman with runc (the container image; crun cannot run under hybrid
# cgroups), dpkg and systemd-analyze (the .deb and its units), and the
# code interpreter's Python packages (its server's tests run real Jupyter
# kernels on the host).
# Quiet when all are present.
# Usage: scripts/deps.sh   (as root, or with sudo available)
set -eu

PKGS="qemu-system-x86 qemu-system-common qemu-utils debootstrap busybox-static e2fsprogs xfsprogs \
iptables iproute2 kmod cpio xz-utils zstd lz4 ca-certificates postgresql \
chromium curl caddy podman runc systemd \
python3-ipykernel python3-jupyter-client python3-numpy python3-pandas python3-matplotlib"

# Go is not taken from apt (Debian 12 ships 1.19; hearth needs 1.26).
if ! command -v go >/dev/null 2>&1; then
	echo "deps.sh: Go 1.26 or newer is required and not on PATH." >&2
	echo "  Install the official Go release into /usr/local/go and add /usr/local/go/bin to PATH." >&2
	exit 1
fi
# Node.js: any machine-provided node/npm is kept; otherwise Debian's.
if ! command -v npm >/dev/null 2>&1; then
	PKGS="$PKGS nodejs npm"
fi

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
