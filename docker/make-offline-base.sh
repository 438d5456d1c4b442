#!/usr/bin/env bash
# Make cortexd's offline base image from Debian packages, for hosts that cannot pull
# python:3.11-slim from a registry (air-gapped machines, CI without registry access).
#
#   docker/make-offline-base.sh [NAME]        default NAME: cortexd/base:bookworm
#   (also: cortexd make-base-image [NAME])
#
# debootstrap needs only a Debian mirror (or apt proxy); the result is a minimal bookworm
# with python3 (3.11), venv and pip, imported as a single-layer image. Use it with
#   CORTEXD_BASE_IMAGE=cortexd/base:bookworm cortexd up
# The predictor Dockerfile creates its own venv on it (Debian's pip refuses system
# installs, PEP 668). Needs root (debootstrap chroots) and a running Docker engine.
set -euo pipefail

NAME="${1:-cortexd/base:bookworm}"
SUITE="${CORTEXD_DEBIAN_SUITE:-bookworm}"
MIRROR="${CORTEXD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "debootstrap is not installed. Install it with: apt-get install -y debootstrap" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "The Docker engine does not answer (docker info failed). Start it with dockerd (or systemctl start docker)." >&2
    exit 1
fi

ROOTFS="$(mktemp -d /tmp/cortexd-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT

echo "debootstrap $SUITE (minbase + python3) into $ROOTFS ..."
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR"

# Keep the image small: package caches and docs are not needed to run predictors.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*

echo "importing as $NAME ..."
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$NAME"
echo "made $NAME"
