#!/usr/bin/env bash
# Provision a local image registry for the docker tier's `cortexd build --push` test
# (tests/docker/test_build_push.py): Debian's docker-registry package, bound to 127.0.0.1:5000
# only, without authentication (loopback only; Docker pushes to 127.0.0.0/8 over plain HTTP).
# Idempotent: does nothing if a registry already answers there. Called by .ci/run.
set -euo pipefail

ADDR="${CORTEXD_TEST_REGISTRY:-127.0.0.1:5000}"
CONFIG=/etc/docker/registry/config.yml
LOG="${CORTEXD_REGISTRY_LOG:-/var/log/cortexd-ci-registry.log}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
answers() { python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$ADDR/v2/', timeout=2)" 2>/dev/null; }

if answers; then
    echo "provision-registry: a registry answers at $ADDR"
    exit 0
fi
if ! command -v docker-registry >/dev/null 2>&1; then
    echo "provision-registry: installing docker-registry ..."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
        --no-install-recommends docker-registry
fi
# Debian's config listens on every interface (:5000) and asks for htpasswd credentials:
# bind it to loopback and drop the auth section
as_root python3 - "$CONFIG" "$ADDR" <<'PY'
import sys
path, addr = sys.argv[1], sys.argv[2]
out, skipping = [], False
for line in open(path).read().splitlines():
    top = line[:1] not in ("", " ", "\t", "#")
    if top:
        skipping = line.startswith("auth:")
    if skipping:
        continue
    if line.strip().startswith("addr:") and not top:
        line = line[: len(line) - len(line.lstrip())] + f"addr: {addr}"
    out.append(line)
open(path, "w").write("\n".join(out) + "\n")
PY
echo "provision-registry: starting docker-registry on $ADDR (log: $LOG) ..."
as_root sh -c "nohup runuser -u docker-registry -- docker-registry serve '$CONFIG' >>'$LOG' 2>&1 &"
for _ in $(seq 30); do
    answers && break
    sleep 1
done
if ! answers; then
    echo "provision-registry: no registry answers at $ADDR within 30 s; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
fi
echo "provision-registry: registry up at $ADDR"
