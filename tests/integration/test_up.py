"""End to end on the process backend: `cortexd up -d`, requests through the gateway, `down`.

Real daemon, real replica processes, real HTTP on loopback.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import pytest

from tests.builders import LOGGING_ECHO_PREDICTOR, write_project
from tests.real_daemon import REPO, free_port, http, pid_alive, post_json, replica_pids, session_members

SAMPLE = {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.4, "petal_width": 0.3}


def test_quickstart_iris_example(cli, tmp_path):
    # the README's quickstart, on a copy of the example moved to a free port
    project = tmp_path / "iris"
    shutil.copytree(REPO / "examples" / "iris-classifier", project)
    port = free_port()
    text = (project / "cortex.yaml").read_text().replace(
        "  compute:", f"  networking:\n    local_port: {port}\n  compute:")
    (project / "cortex.yaml").write_text(text)

    up = cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    assert "iris-classifier" in up.out and "live" in up.out, up.out

    status, headers, body = post_json(f"http://127.0.0.1:{port}/iris-classifier", SAMPLE)
    # a str prediction is answered as text/plain, as Cortex does
    assert (status, body) == (200, b"setosa")
    assert headers["Content-Type"].startswith("text/plain")
    assert headers.get("X-Request-Id")

    snap = cli.status()
    (api,) = snap["apis"]
    assert api["status"] == "live"
    assert (api["replicas"]["ready"], api["replicas"]["requested"]) == (1, 1)
    assert api["url"] == f"http://127.0.0.1:{port}/iris-classifier"

    table = cli("get", check=True).out
    assert "iris-classifier" in table and "live" in table and "1/1" in table

    pred = cli("predict", "iris-classifier", "@" + str(project / "sample.json"), check=True)
    assert pred.out.strip() == "setosa"

    again = cli("up", "-d", "--backend", "process", str(project))
    assert again.code == 1 and "already running" in again.err

    pids = replica_pids(snap)
    assert pids and all(pid_alive(p) for p in pids)
    down = cli("down", check=True)
    assert "stopped" in down.out
    assert not (cli.home / "cortexd.sock").exists()
    for pid in pids:
        assert not pid_alive(pid) and session_members(pid) == []
    gone = cli("get")
    assert gone.code == 3 and "no cortexd daemon is running" in gone.err


@pytest.mark.xdist_group("newcomer")  # port 8888, the legacy format's default, is the README quickstart's too
def test_legacy_example_served_at_deployment_endpoint(cli, tmp_path):
    project = tmp_path / "legacy"
    shutil.copytree(REPO / "examples" / "legacy-iris", project)
    shutil.copytree(REPO / "examples" / "iris-classifier", tmp_path / "iris-classifier")
    # the legacy format has no local_port: it is served on the default port 8888
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8888)) == 0:
            pytest.skip("port 8888 is in use on this machine")
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    status, _, body = post_json("http://127.0.0.1:8888/iris/classifier", SAMPLE)
    assert (status, body) == (200, b'"setosa"')  # legacy answers are JSON, as Cortex's Flask server's
    api = cli.api("classifier")
    assert api["kind"] == "api" and api["endpoint"] == "/iris/classifier"


ERRORS_YAML = """
- name: echo
  kind: RealtimeAPI
  predictor:
    type: python
    path: echo.py
  networking:
    local_port: {port}

- name: raises
  kind: RealtimeAPI
  predictor:
    type: python
    path: raises.py
  networking:
    local_port: {port}

- name: slow
  kind: RealtimeAPI
  predictor:
    type: python
    path: slow.py
  networking:
    local_port: {port}
  autoscaling:
    max_replica_concurrency: 1

- name: crashy
  kind: RealtimeAPI
  predictor:
    type: python
    path: crashy.py
  networking:
    local_port: {port}
"""

RAISES = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        raise ValueError("secret internals: this must not reach the client")
"""

SLOW = """
import time

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        time.sleep(5)  # long enough to see it in flight (`cortexd get`) and send the next one
        return "done"
"""

CRASHY = """
import os

class PythonPredictor:
    def __init__(self, config):
        print("crashy started", os.getpid(), flush=True)

    def predict(self, payload):
        if payload.get("die"):
            os._exit(3)
        return os.getpid()
"""


@pytest.fixture
def errors_project(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "errors", ERRORS_YAML.format(port=port), {
        "echo.py": LOGGING_ECHO_PREDICTOR, "raises.py": RAISES, "slow.py": SLOW, "crashy.py": CRASHY})
    cli("up", "-d", "--backend", "process", "--wait", "90", str(project), check=True)
    snap = cli.status()
    assert all(a["status"] == "live" for a in snap["apis"]), snap
    return f"http://127.0.0.1:{port}"


def test_request_errors_get_the_right_status(cli, errors_project):
    base = errors_project
    status, _, body = post_json(f"{base}/echo", {"a": 1})
    assert (status, json.loads(body)) == (200, {"echo": {"a": 1}})

    status, _, body = http("POST", f"{base}/nope", b"{}", {"Content-Type": "application/json"})
    assert status == 404
    for name in ("/echo", "/raises", "/slow", "/crashy"):
        assert name in body.decode()

    status, _, body = http("POST", f"{base}/echo", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and "invalid JSON" in body.decode()

    status, _, body = http("POST", f"{base}/echo", b"x" * (33 * 2**20),
                           {"Content-Type": "application/octet-stream"})
    assert status == 413

    status, headers, body = post_json(f"{base}/raises", {})
    assert status == 500 and "Traceback" not in body.decode()
    assert headers.get("X-Request-Id")

    # the traceback is in the API's logs, with the predictor's prints of other APIs in theirs
    logs = cli("logs", "raises", check=True).out
    assert "Traceback" in logs and "ValueError" in logs
    assert "echo got {'a': 1}" in cli("logs", "echo", check=True).out

    unknown = cli("logs", "nope")
    assert unknown.code == 1 and "no api named 'nope'" in unknown.err


def test_concurrency_limit_answers_503_with_retry_after(cli, errors_project):
    base = errors_project
    results = []

    def call():
        results.append(post_json(f"{base}/slow", {}))

    first = threading.Thread(target=call)
    first.start()
    # the first request holds the only slot: seen in flight, not assumed after a fixed sleep
    deadline = time.monotonic() + 10
    while cli.api("slow")["requests"].get("in_flight", 0) < 1:
        assert time.monotonic() < deadline, "the first request never reached the gateway"
        time.sleep(0.05)
    status, headers, body = post_json(f"{base}/slow", {})
    first.join()
    assert status == 503 and headers.get("Retry-After")
    assert "concurrency" in body.decode()
    assert results[0][0] == 200


def test_crashed_replica_is_restarted(cli, errors_project):
    base = errors_project
    status, _, body = post_json(f"{base}/crashy", {})
    first_pid = json.loads(body)
    status, _, _ = post_json(f"{base}/crashy", {"die": True})
    assert status in (502, 503)
    snap = cli.wait_for(
        lambda s: any(a["name"] == "crashy" and a["status"] == "live" and a["replicas"]["restarts"] >= 1
                      for a in s["apis"]),
        timeout=60, what="crashy to be restarted")
    status, _, body = post_json(f"{base}/crashy", {})
    assert status == 200 and json.loads(body) != first_pid
    # the other APIs were not touched
    assert all(a["replicas"]["restarts"] == 0 for a in snap["apis"] if a["name"] != "crashy")


def test_predictor_failing_in_init_shows_error_with_traceback(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "bad", f"""
- name: bad-init
  kind: RealtimeAPI
  predictor:
    type: python
    path: bad.py
  networking:
    local_port: {port}
""", {"bad.py": "class PythonPredictor:\n    def __init__(self, config):\n"
                "        raise RuntimeError('weights not found at /models/x')\n"
                "    def predict(self, payload):\n        return 1\n"})
    up = cli("up", "-d", "--backend", "process", "--wait", "60", str(project))
    assert up.code == 1 and "not serving: bad-init" in up.err, up
    snap = cli.wait_for(lambda s: s["apis"][0]["status"] == "error", timeout=60, what="error status")
    reason = snap["apis"][0]["reason"]
    assert "weights not found at /models/x" in reason
    status, _, body = post_json(f"http://127.0.0.1:{port}/bad-init", {})
    # clients get the category; the traceback is for `get` and `logs` (issue 9.1)
    assert status == 503 and "weights not found" not in body.decode()
    assert json.loads(body)["error"] == ("the API is not ready: its predictor failed to start; "
                                         "see `cortexd get bad-init`")
    assert "RuntimeError: weights not found" in cli("logs", "bad-init", check=True).out
    table = cli("get", check=True).out
    assert "error" in table and "weights not found" in table


def test_validate_reports_file_line_and_exit_code(cli, tmp_path):
    good = cli("validate", str(REPO / "examples" / "iris-classifier"))
    assert good.code == 0 and "iris-classifier" in good.out
    bad = write_project(tmp_path / "bad", """- name: x
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  autoscaling:
    min_replicas: three
""", {"predictor.py": "class PythonPredictor:\n  pass\n"})
    result = cli("validate", str(bad))
    assert result.code == 1
    assert f"{bad / 'cortex.yaml'}:7" in result.err and "min_replicas" in result.err
    up = cli("up", "-d", str(bad))
    assert up.code == 1 and "min_replicas" in up.err
    assert not (cli.home / "cortexd.sock").exists()
