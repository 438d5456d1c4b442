"""Cold start on the Docker backend: `cortexd up` to the first 200, image not cached vs cached.

    python bench/docker_start.py [--base-image cortexd/base:bookworm] [--families python,onnx]

For each run: removes cortexd's predictor images (uncached run only; the base image stays), starts a
private daemon (its own CORTEXD_HOME) on a copy of examples/iris-classifier, and times from the
`cortexd up -d` call to the first 200 answered through the gateway; then `cortexd down`. Afterwards
it prints the size of each predictor image (building the families asked for that are missing).
Needs a running Docker engine; run by hand, never by the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.builders import iris_project

SAMPLE = {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.4, "petal_width": 0.3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cortexd(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CORTEXD_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cortexd", *args], env=env, capture_output=True, text=True)


def first_200(url: str, deadline: float) -> bool:
    body = json.dumps(SAMPLE).encode()
    while time.monotonic() < deadline:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    return False


def remove_predictor_images() -> None:
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                         capture_output=True, text=True, check=True).stdout.split()
    ours = [i for i in out if i.startswith("cortexd-")]
    if ours:
        subprocess.run(["docker", "rmi", "-f", *ours], capture_output=True, check=False)
    # and the layer cache, or the "uncached" build is answered from it in seconds
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=False)
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True, check=False)


def one_run(base_image: str, cached: bool) -> float:
    if not cached:
        remove_predictor_images()
    work = Path(tempfile.mkdtemp(prefix="cxd-bench-"))
    work.chmod(0o755)
    port = free_port()
    project = iris_project(work / "iris", port)
    home = work / "home"
    t0 = time.monotonic()
    try:
        up = cortexd(home, "up", "-d", "--backend", "docker", "--base-image", base_image, str(project))
        if up.returncode != 0:
            raise SystemExit(f"up failed: {up.stdout}{up.stderr}")
        if not first_200(f"http://127.0.0.1:{port}/iris-classifier", t0 + 900):
            raise SystemExit("no 200 within 900 s")
        return time.monotonic() - t0
    finally:
        cortexd(home, "down")
        shutil.rmtree(work, ignore_errors=True)


def image_sizes(base_image: str, families: list[str]) -> list[tuple[str, int]]:
    import docker

    from cortexd.backends.images import ImageBuilder

    client = docker.from_env()
    builder = ImageBuilder(client, base_image)
    out = []
    for family in families:
        tag = builder._ensure_plan(builder.plan_runtime(family, "cpu"), f"bench-{family}")
        out.append((tag, client.images.get(tag).attrs["Size"]))
    client.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-image", default=os.environ.get("CORTEXD_BASE_IMAGE", "cortexd/base:bookworm"))
    ap.add_argument("--families", default="python,onnx")
    ap.add_argument("--runs", type=int, default=2, help="cached runs after the uncached one")
    args = ap.parse_args()
    cold = one_run(args.base_image, cached=False)
    print(f"image not cached: up -> first 200 in {cold:.1f} s")
    for i in range(args.runs):
        warm = one_run(args.base_image, cached=True)
        print(f"image cached (run {i + 1}): up -> first 200 in {warm:.2f} s")
    for tag, size in image_sizes(args.base_image, args.families.split(",")):
        print(f"{tag}: {size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
