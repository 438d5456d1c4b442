"""Driving a BatchAPI on a real daemon from tests: a project whose predictor writes its items' ids
to the file its job's config names, and the job endpoint's calls (submit, status, wait for the end)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.builders import write_project
from tests.real_daemon import free_port, http, post_json, wait_until

PREDICTOR = """
import json, os, time

class PythonPredictor:
    def __init__(self, config, job_spec):
        self.out = config["out"]
        self.sleep = float(config.get("sleep", 0))
        self.job_id = job_spec["job_id"]

    def predict(self, payload, batch_id):
        time.sleep(self.sleep)
        with open(self.out, "a") as f:
            f.write("".join(f"{item['id']}\\n" for item in payload))

    def on_job_complete(self):
        with open(self.out + ".complete", "a") as f:
            f.write(self.job_id + "\\n")
"""


def batch_api(port: int, predictor_extra: str = "") -> str:
    return ("- name: batch\n  kind: BatchAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
            f"{predictor_extra}  networking:\n    local_port: {port}\n")


def serve(cli, tmp_path: Path, predictor: str = PREDICTOR, up_args: tuple[str, ...] = ()) -> tuple[int, Path, Path]:
    """A BatchAPI project served by a fresh daemon (`up_args`: more of `up`'s options): (its port,
    its folder, the output file path)."""
    port = free_port()
    project = write_project(tmp_path / "batch", batch_api(port), {"predictor.py": predictor})
    cli("up", "-d", "--backend", "process", "--wait", "60", *up_args, str(project), check=True)
    return port, project, tmp_path / "out.txt"


def submit(port: int, body: dict, query: str = "") -> tuple[int, dict]:
    code, _, answer = post_json(f"http://127.0.0.1:{port}/batch{query}", body)
    return code, json.loads(answer)


def status(port: int, job_id: str) -> dict:
    code, _, body = http("GET", f"http://127.0.0.1:{port}/batch?jobID={job_id}")
    assert code == 200, body
    return json.loads(body)["job_status"]


def wait_done(port: int, job_id: str, timeout: float = 60) -> dict:
    return wait_until(lambda: (s := status(port, job_id))["end_time"] and s, timeout, f"job {job_id} to end")


def items(n: int) -> list[dict]:
    return [{"id": i} for i in range(n)]


def answers(port: int) -> bool:
    """Whether the daemon answers on the BatchAPI's port."""
    try:
        http("GET", f"http://127.0.0.1:{port}/batch", timeout=1)
        return True
    except OSError:
        return False
