"""An exported BatchAPI job's pods, run here as a kubelet would run them (issue 18's cluster path):
the ConfigMap's keys as files in a folder, each index of the Indexed Job one `batch_worker`
process with JOB_COMPLETION_INDEX, then the on_job_complete Job. Every item is predicted once
across the pods, the job's config reaches the predictor, a batch that keeps failing is tried its
attempts and makes its pod exit with the status the podFailurePolicy fails the index on.
(The image itself runs in tests/docker/test_podman_play.py; here the runtime spec has host paths.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from cortexd.kube.export import export_kubernetes
from cortexd.kube.manifests import ExportOptions
from cortexd.spec import load_config
from predictor_runtime.batch_worker import BATCHES_FAILED, INDEX_ENV
from tests.builders import write_project

REPO = Path(__file__).resolve().parents[2]
PREDICTOR = """
import json, os

class PythonPredictor:
    def __init__(self, config, job_spec):
        self.out, self.fail, self.job = config["out"], config.get("fail"), job_spec

    def predict(self, payload, batch_id):
        with open(self.out, "a") as f:
            f.write(json.dumps({"items": payload, "pod": os.environ["JOB_COMPLETION_INDEX"]}) + "\\n")
        if self.fail in payload:
            raise ValueError("this item never works")

    def on_job_complete(self):
        with open(self.out + ".complete", "w") as f:
            json.dump(self.job, f)
"""
YAML = "- name: scorer\n  kind: BatchAPI\n  predictor:\n    type: python\n    path: predictor.py\n"


def exported_pods(tmp_path: Path, submission: dict,
                  predictor: str = PREDICTOR) -> tuple[Path, list[str], list[str], Path]:
    """(the ConfigMap as a folder, the Job's worker args, the completion Job's, the runtime spec)."""
    project = write_project(tmp_path / "p", YAML, {"predictor.py": predictor})
    (tmp_path / "job.json").write_text(json.dumps(submission))
    (spec,) = load_config([str(project)]).batch_apis
    export_kubernetes([spec], "127.0.0.1:5000/t", ExportOptions(), tmp_path / "k8s",
                      jobs={"scorer": tmp_path / "job.json"})
    config_map, job = yaml.safe_load_all((tmp_path / "k8s" / "scorer.yaml").read_text())
    (complete,) = yaml.safe_load_all((tmp_path / "k8s" / "on-job-complete" / "scorer.yaml").read_text())
    mounted = tmp_path / "configmap"
    mounted.mkdir()
    for key, value in config_map["data"].items():
        (mounted / key).write_text(value)
    runtime = tmp_path / "spec.json"
    runtime.write_text(spec.runtime_spec().dumps())  # the image's has in-image paths; same fields
    return mounted, job_args(job), job_args(complete), runtime


def job_args(job: dict) -> list[str]:
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "predictor_runtime.batch_worker"]
    return c["args"]


def run_pod(args: list[str], mounted: Path, runtime: Path, index: int) -> subprocess.CompletedProcess:
    args = [str(runtime) if a == "/etc/cortexd/spec.json" else str(mounted) if a == "/etc/cortexd/job" else a
            for a in args]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), INDEX_ENV: str(index)}
    return subprocess.run([sys.executable, "-m", "predictor_runtime.batch_worker", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_the_pods_predict_every_item_once_then_on_job_complete_runs(tmp_path):
    out = tmp_path / "out.jsonl"
    submission = {"workers": 2, "item_list": {"items": list(range(7)), "batch_size": 2}, "config": {"out": str(out)}}
    mounted, worker, complete, runtime = exported_pods(tmp_path, submission)
    for index in range(2):  # completions: 2 shares
        done = run_pod(worker, mounted, runtime, index)
        assert done.returncode == 0, done.stderr
    seen = lines(out)
    assert sorted(i for batch in seen for i in batch["items"]) == list(range(7))
    assert sorted((b["pod"], b["items"]) for b in seen) == [
        ("0", [0, 1]), ("0", [4, 5]), ("1", [2, 3]), ("1", [6])]
    assert not Path(str(out) + ".complete").exists()
    assert run_pod(complete, mounted, runtime, 0).returncode == 0
    job_spec = json.loads(Path(str(out) + ".complete").read_text())
    assert (job_spec["api_name"], job_spec["workers"], job_spec["total_batch_count"]) == ("scorer", 2, 4)


def test_a_batch_that_keeps_failing_fails_its_pods_index_after_its_attempts(tmp_path):
    out = tmp_path / "out.jsonl"
    submission = {"workers": 1, "item_list": {"items": [1, 2, 3], "batch_size": 1},
                  "config": {"out": str(out), "fail": 2}}
    mounted, worker, _, runtime = exported_pods(tmp_path, submission)
    done = run_pod(worker, mounted, runtime, 0)
    assert done.returncode == BATCHES_FAILED
    assert "batch 1 failed 3 time(s); last error: ValueError: this item never works" in done.stderr
    assert [b["items"] for b in lines(out)] == [[1], [2], [2], [2], [3]]


def test_the_completion_job_of_a_predictor_without_on_job_complete_loads_nothing(tmp_path):
    marker = tmp_path / "constructed"
    predictor = ("class PythonPredictor:\n    def __init__(self, config):\n"
                 f"        open({str(marker)!r}, 'w').close()\n"
                 "    def predict(self, payload):\n        pass\n")
    mounted, _, complete, runtime = exported_pods(
        tmp_path, {"workers": 1, "item_list": {"items": [1], "batch_size": 1}}, predictor)
    done = run_pod(complete, mounted, runtime, 0)
    assert (done.returncode, marker.exists()) == (0, False), done.stderr
    assert "has no on_job_complete(): nothing to do" in done.stderr
