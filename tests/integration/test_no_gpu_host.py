"""`compute.gpu` on this host, which has no GPU (issue 17 item 3): the API is in `error` at once with
what to do, in `up`, `get API` and the client's 503; `deploy --cpu-only` then serves it on the CPU
and says so. Real daemon, process backend, real HTTP on loopback."""

from __future__ import annotations

import json
import time

import pytest

from cortexd.nvml import read_inventory
from tests.builders import write_project
from tests.real_daemon import free_port, post_json

pytestmark = pytest.mark.skipif(bool(read_inventory().devices), reason="this host has a GPU")

# says which devices it was given: none, on the CPU
PREDICTOR = """
import os


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"doubled": payload["x"] * 2, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
"""

ON_CPU = "compute.gpu: 1 requested; running on CPU (--cpu-only): this host has no GPU"


def test_a_gpu_api_fails_at_once_here_and_serves_on_the_cpu_with_the_switch(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "detector", (
        "- name: detector\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
        f"  compute:\n    gpu: 1\n  networking:\n    local_port: {port}\n"), {"predictor.py": PREDICTOR})
    url = f"http://127.0.0.1:{port}/detector"

    started = time.monotonic()
    up = cli("up", "-d", "--backend", "process", "--wait", "60", str(project))
    waited = time.monotonic() - started
    # `up` says it before the daemon starts, and --wait ends on the error, not after 60 s
    assert up.code == 1 and "not serving: detector" in up.err
    assert "note: api 'detector' requests compute.gpu: 1, but this host has no NVIDIA GPU" in up.out
    assert waited < 30, f"up --wait took {waited:.1f}s"
    api = cli.api("detector")
    assert (api["status"], api["failure"]) == ("error", "no_gpu_on_host")
    detail = cli("get", "detector", check=True).out
    assert "remove compute.gpu from its configuration" in detail and "cortexd deploy --cpu-only" in detail

    code, headers, body = post_json(url, {"x": 21})
    assert code == 503 and "Retry-After" in headers
    error = json.loads(body)["error"]
    assert "this host has no GPU" in error and "--cpu-only" in error and "Traceback" not in error

    deployed = cli("deploy", "--cpu-only", str(project), check=True)
    assert "updated (rolling update): api 'detector'" in deployed.out
    assert f"notice: api 'detector': {ON_CPU}" in deployed.out
    cli.wait_for(lambda s: s["apis"][0]["status"] == "live", what="detector live on the CPU")
    code, _, body = post_json(url, {"x": 21})
    assert code == 200 and json.loads(body) == {"doubled": 42, "cuda_visible_devices": ""}
    detail = cli("get", "detector", check=True).out
    assert ON_CPU in detail.splitlines()
    assert cli.api("detector")["gpu_note"] == ON_CPU
