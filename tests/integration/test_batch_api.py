"""`kind: BatchAPI` on a real daemon: a job of 1,000 items in batches of 10 on 2 workers, every
item processed once (the predictor writes its items' ids to a file of the job's config); bad
submissions answered 400; listers, dryRun, a job's status and stop, in HTTP and in the CLI; a batch
that keeps failing and a worker that dies; onnx and tensorflow predictors; and the job machinery's
items/s against a plain loop. (A daemon SIGKILLed mid-job: tests/faults/test_batch_faults.py.)"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.batch_jobs import batch_api, items, serve, status, submit, wait_done
from tests.builders import write_project
from tests.real_daemon import free_port, http, wait_until


def test_a_job_of_1000_items_processes_each_once_and_bad_submissions_get_400(cli, tmp_path):
    port, project, out = serve(cli, tmp_path)

    started = time.monotonic()
    code, job = submit(port, {"workers": 2, "item_list": {"items": items(1000), "batch_size": 10},
                              "config": {"out": str(out)}})
    assert code == 200, job
    assert (job["api_name"], job["workers"], job["total_batch_count"]) == ("batch", 2, 100)
    done = wait_done(port, job["job_id"])
    elapsed = time.monotonic() - started
    assert done["status"] == "status_succeeded", done
    assert done["batch_metrics"]["succeeded"] == 100 and done["batch_metrics"]["failed"] == 0
    seen = Counter(int(line) for line in out.read_text().split())
    assert set(seen) == set(range(1000)) and set(seen.values()) == {1}
    wait_until(lambda: Path(str(out) + ".complete").exists(), 20, "on_job_complete")
    assert Path(str(out) + ".complete").read_text().split() == [job["job_id"]]  # once
    print(f"1,000 items in batches of 10 on 2 workers: {elapsed:.2f}s from submission to the end "
          f"({1000 / elapsed:.0f} items/s)")

    for body, said in [
        ({"workers": 1}, "specify exactly one of the following keys"),
        ({"workers": 1, "item_list": {"items": [1], "batch_size": 1},
          "file_path_lister": {"s3_paths": ["x"], "batch_size": 1}}, "but not more than one at the same time"),
        ({"workers": 1, "item_list": {"items": ["x" * 200_000, "y" * 100_000], "batch_size": 2}},
         "exceeds the 262144 bytes limit"),
        ({"workers": 1, "delimited_files": {"s3_paths": ["missing/"], "batch_size": 2}}, "no files match"),
    ]:
        code, answer = submit(port, body)
        assert code == 400 and said in answer["error"], (code, answer)
    assert http("GET", f"http://127.0.0.1:{port}/batch?jobID=nope")[0] == 404


def metrics(port: int) -> dict:
    code, _, body = http("GET", f"http://127.0.0.1:{port}/metrics")
    assert code == 200, body
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_listers_dry_run_and_stop(cli, tmp_path):
    metrics_port = free_port()  # scraped below: a port of its own, not the default another daemon may hold
    port, project, out = serve(cli, tmp_path, up_args=("--metrics-port", str(metrics_port)))
    data = project / "data"  # read when a job is submitted
    data.mkdir()
    for name, ids in (("a.json", range(0, 5)), ("b.json", range(5, 8)), ("skip.txt", range(100, 101))):
        (data / name).write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))

    lister = {"s3_paths": ["data/"], "includes": ["**.json"], "batch_size": 2}
    code, dry = submit(port, {"workers": 1, "file_path_lister": lister}, "?dryRun=true")
    assert code == 200 and dry["files"] == ["data/a.json", "data/b.json"] and dry["batches"] == 1
    code, job = submit(port, {"workers": 1, "delimited_files": {**lister, "s3_paths": [f"file://{data}/"]},
                              "config": {"out": str(out)}})
    assert code == 200, job
    assert wait_done(port, job["job_id"])["status"] == "status_succeeded"
    assert sorted(int(x) for x in out.read_text().split()) == list(range(8))

    listing = cli("get", check=True).out
    assert "BATCH API" in listing and f"batch      1     0        http://127.0.0.1:{port}/batch" in listing, listing
    shown = cli("get", "batch", check=True).out
    assert job["job_id"] in shown and "status_succeeded" in shown and "4/4" in shown, shown
    shown = cli("get", "batch", job["job_id"], check=True).out
    assert "batches:    4 succeeded, 0 failed, 0 running, 0 queued, of 4" in shown, shown
    missing = cli("get", "batch", "nope")
    assert missing.code != 0 and "unable to find batch job nope" in missing.err, missing
    frame = cli("status", check=True).out  # the live view, one plain frame: the ended job's row
    row = next(line for line in frame.splitlines() if job["job_id"] in line).split()
    assert row[:3] == [job["job_id"], "succeeded", "4/4"], frame
    samples = metrics(metrics_port)
    assert samples[("cortexd_batch_job_batches", (("api", "batch"), ("job_id", job["job_id"]),
                                                  ("state", "succeeded")))] == 4
    assert samples[("cortexd_batch_items_succeeded_total", (("api", "batch"),))] == 8
    assert samples[("cortexd_batch_jobs", (("api", "batch"), ("status", "status_succeeded")))] == 1

    code, slow = submit(port, {"workers": 1, "item_list": {"items": items(50), "batch_size": 1},
                               "config": {"out": str(out), "sleep": 0.5}})
    # 5 of 50 done: a bar long enough to draw (1 of 50 may round to no glyph at all)
    wait_until(lambda: status(port, slow["job_id"])["batch_metrics"]["succeeded"] >= 5, 30, "5 batches done")
    frame = cli("status", check=True).out  # a running job: its bar, its batches done of 50, its worker
    row = next(line for line in frame.splitlines() if slow["job_id"] in line)
    assert re.search(r"[━╸] *\d+% +\d+/50 +0 +1 ", row), frame
    running = (("api", "batch"), ("job_id", slow["job_id"]))
    assert metrics(metrics_port)[("cortexd_batch_job_workers", running)] == 1
    shown = cli("get", "batch", slow["job_id"], check=True).out
    assert re.search(r"progress: +\d+/50 \(\d+%\) batches done, \d+s elapsed", shown), shown
    assert cli("delete", "batch", slow["job_id"], check=True).out.strip() == f"stopped job {slow['job_id']}"
    assert status(port, slow["job_id"])["status"] == "status_stopped"
    code, slow = submit(port, {"workers": 1, "item_list": {"items": items(50), "batch_size": 1},
                               "config": {"out": str(out), "sleep": 0.5}})
    code, _, answer = http("DELETE", f"http://127.0.0.1:{port}/batch?jobID={slow['job_id']}")
    assert code == 200 and json.loads(answer) == {"message": f"stopped job {slow['job_id']}"}
    assert status(port, slow["job_id"])["status"] == "status_stopped"
    assert http("DELETE", f"http://127.0.0.1:{port}/batch?jobID={slow['job_id']}")[0] == 400


FLAKY = """
import os

class PythonPredictor:
    def __init__(self, config, job_spec):
        self.out = config["out"]

    def predict(self, payload, batch_id):
        if payload[0]["id"] == 3:
            raise ValueError("item 3 never works")
        if payload[0]["id"] == 5 and not os.path.exists(self.out + ".crashed"):
            open(self.out + ".crashed", "w").close()
            os._exit(9)  # the worker dies mid-batch, once
        with open(self.out, "a") as f:
            f.write(f"{payload[0]['id']}\\n")
"""


def test_a_failing_batch_is_recorded_failed_and_a_dead_worker_replaced(cli, tmp_path):
    port, project, out = serve(cli, tmp_path, FLAKY)
    code, job = submit(port, {"workers": 2, "item_list": {"items": items(10), "batch_size": 1},
                              "config": {"out": str(out)}})
    assert code == 200, job
    done = wait_done(port, job["job_id"])
    assert done["status"] == "status_completed_with_failures", done
    assert (done["batch_metrics"]["succeeded"], done["batch_metrics"]["failed"]) == (9, 1)
    assert done["failed_batches"] == [{"batch": 3, "error": "ValueError: item 3 never works"}]
    assert sorted(int(x) for x in out.read_text().split()) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert "worker-" in cli.daemon_log() and "exited with code 9" in cli.daemon_log()
    logs = cli("logs", "batch", job["job_id"], check=True).out  # the workers' output: the failed batches'
    assert "ValueError: item 3 never works" in logs and f"{job['job_id']}/worker-" in logs, logs
    assert cli("logs", "batch", check=True).out == logs  # its newest job's


def test_job_machinery_items_per_second_against_a_plain_loop(cli, tmp_path):
    port, project, out = serve(cli, tmp_path)
    n, size = 2000, 10
    started = time.monotonic()
    code, job = submit(port, {"workers": 2, "item_list": {"items": items(n), "batch_size": size},
                              "config": {"out": str(out)}})
    assert code == 200
    wait_done(port, job["job_id"])
    job_rate = n / (time.monotonic() - started)
    sys.path.insert(0, str(project))
    try:
        from predictor import PythonPredictor
    finally:
        sys.path.pop(0)
    plain = PythonPredictor({"out": str(tmp_path / "loop.txt")}, {"job_id": "loop"})
    all_items = items(n)
    started = time.monotonic()
    for b in range(0, n, size):
        plain.predict(all_items[b:b + size], str(b))
    loop_rate = n / (time.monotonic() - started)
    print(f"{n} items in batches of {size}: job (2 workers, submission to end) {job_rate:.0f} items/s; "
          f"plain loop calling the same predictor {loop_rate:.0f} items/s")
    assert job_rate > 50



MODEL_PREDICTOR = """
import json

LABELS = ["setosa", "versicolor", "virginica"]


class {cls}:
    def __init__(self, {client}, config, job_spec):
        self.client, self.out = {client}, config["out"]

    def predict(self, payload, batch_id):
        with open(self.out, "a") as f:
            for item in payload:
                f.write(json.dumps({{"id": item["id"], "label": LABELS[self.label(item)]}}) + "\\n")

    def label(self, item):
{label}
"""
LABEL = {
    "onnx": "        row = [item[k] for k in ('sepal_length', 'sepal_width', 'petal_length', 'petal_width')]\n"
            "        return self.client.predict(row)[0][0]",
    "tensorflow": "        sample = {k: v for k, v in item.items() if k != 'id'}\n"
                  "        return int(self.client.predict(sample)['class_ids'][0])",
}


@pytest.mark.parametrize(("kind", "cls"), [("onnx", "ONNXPredictor"), ("tensorflow", "TensorFlowPredictor")])
def test_model_batch_apis_classify_every_item_once(cli, tmp_path, request, kind, cls):
    model = request.getfixturevalue("onnx_files")["logreg"] if kind == "onnx" else request.getfixturevalue("tf_model")
    port = free_port()
    yaml = batch_api(port, f"    model_path: {model}\n").replace("type: python", f"type: {kind}")
    source = MODEL_PREDICTOR.format(cls=cls, client=f"{kind}_client", label=LABEL[kind])
    project = write_project(tmp_path / kind, yaml, {"predictor.py": source})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    out = tmp_path / "labels.jsonl"
    setosa = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    code, job = submit(port, {"workers": 1, "item_list": {"items": [{**setosa, "id": i} for i in range(20)],
                                                          "batch_size": 5}, "config": {"out": str(out)}})
    assert code == 200, job
    assert wait_done(port, job["job_id"])["status"] == "status_succeeded"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == list(range(20)) and {r["label"] for r in rows} == {"setosa"}
