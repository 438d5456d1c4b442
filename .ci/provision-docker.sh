#!/usr/bin/env bash
# Provision a Docker engine and cortexd's offline base image for the docker test tier.
# Idempotent: does nothing that is already done. Called by .ci/run, which requires the docker tier
# (CORTEXD_REQUIRE_DOCKER=1: its tests fail, not skip, without an engine; docs/architecture.md, Tests).
#
#   1. install what is missing from Debian in one apt-get call: docker.io, debootstrap, chromium
#      (the browser tier, tests/browser), podman and catatonit (tests/docker/test_podman_play.py),
#      docker-registry (.ci/provision-registry.sh);
#      `docker info` fails -> start dockerd in the background (log: $CORTEXD_DOCKERD_LOG), wait for it (<= 60 s);
#   2. build the offline base image (docker/make-offline-base.sh) if it is absent;
#   3. print the CORTEXD_BASE_IMAGE hint (tests/docker/conftest.py also finds it by name).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE="${CORTEXD_OFFLINE_BASE:-cortexd/base:bookworm}"
LOG="${CORTEXD_DOCKERD_LOG:-/var/log/cortexd-ci-dockerd.log}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    echo "provision-docker: installing $* ..."
    # apt on a fresh machine can be busy at boot: wait for its lock rather than fail
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
        --no-install-recommends "$@"
}

# what Debian must bring, in one apt-get call (apt may be busy at boot: one wait for its lock):
# the engine, debootstrap for the offline base image, Chromium for the browser tier (tests/browser),
# podman to run the exported manifests as an independent reader (tests/docker/test_podman_play.py)
# and catatonit, its pods' pause process (a Recommends, left out by --no-install-recommends)
missing=()
command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v catatonit >/dev/null 2>&1 || missing+=(catatonit)
# and the local registry provision-registry.sh starts next (it installs it itself when run alone)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
    echo "provision-docker: starting dockerd (log: $LOG) ..."
    as_root sh -c "nohup dockerd >>'$LOG' 2>&1 &"
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "provision-docker: dockerd did not answer within 60 s; last lines of $LOG:" >&2
        tail -n 30 "$LOG" >&2 || true
        exit 1
    fi
fi
echo "provision-docker: engine up ($(docker version --format '{{.Server.Version}}'))"

if docker image inspect "$BASE" >/dev/null 2>&1; then
    echo "provision-docker: offline base image $BASE present"
else
    echo "provision-docker: building offline base image $BASE ..."
    as_root bash docker/make-offline-base.sh "$BASE"
fi
echo "export CORTEXD_BASE_IMAGE=$BASE"
