"""What a user watches: Prometheus metrics, prediction monitoring, the live view, logs.

Real daemon (process backend), real HTTP on loopback; the live view runs in a real
pseudo-terminal (python's pty module) the way a user's terminal runs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.builders import write_project
from tests.real_daemon import REPO, free_port, http, post_json

YAML = """
- name: labels
  kind: RealtimeAPI
  predictor:
    type: python
    path: labels.py
  networking:
    local_port: {port}
  monitoring:
    model_type: classification
    key: label
- name: prices
  kind: RealtimeAPI
  predictor:
    type: python
    path: prices.py
  networking:
    local_port: {port}
  monitoring:
    model_type: regression
"""

LABELS = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        print("labelling", payload, flush=True)
        if "label" not in payload:
            return ["no", "label"]  # unreadable for monitoring, still a 200
        return {"label": payload["label"], "score": 0.5}
"""

PRICES = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return payload["x"] * 2
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


@pytest.fixture
def project(tmp_path):
    port = free_port()
    root = write_project(tmp_path / "obs", YAML.format(port=port), {"labels.py": LABELS, "prices.py": PRICES})
    return root, f"http://127.0.0.1:{port}"


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_and_monitoring_after_requests(cli, project):
    root, base = project
    metrics_port = free_port()
    cli("up", "-d", "--backend", "process", "--metrics-port", str(metrics_port), "--wait", "90",
        str(root), check=True)
    for label in ["cat", "cat", "dog", "cat"]:
        assert post_json(f"{base}/labels", {"label": label})[0] == 200
    assert post_json(f"{base}/labels", {"other": 1})[0] == 200
    assert http("POST", f"{base}/labels", b"{broken", {"Content-Type": "application/json"})[0] == 400
    for x in [1, 2, 3, 10]:
        assert post_json(f"{base}/prices", {"x": x})[0] == 200
    assert post_json(f"{base}/prices", {"y": 1})[0] == 500  # KeyError in the predictor

    samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    req = "cortexd_requests_total"
    assert samples[(req, (("api", "labels"), ("code", "200")))] == 5
    assert samples[(req, (("api", "labels"), ("code", "400")))] == 1
    assert samples[(req, (("api", "prices"), ("code", "200")))] == 4
    assert samples[(req, (("api", "prices"), ("code", "500")))] == 1
    assert samples[("cortexd_request_duration_seconds_count", (("api", "labels"),))] == 6
    assert samples[("cortexd_request_duration_seconds_bucket", (("api", "prices"), ("le", "+Inf")))] == 5
    assert samples[("cortexd_replicas", (("api", "labels"), ("state", "ready")))] == 1
    assert samples[("cortexd_autoscaler_recommended_replicas", (("api", "prices"),))] == 1
    assert samples[("cortexd_in_flight_requests", (("api", "labels"),))] == 0
    assert samples[("cortexd_monitoring_class_total", (("api", "labels"), ("class", "cat")))] == 3
    assert samples[("cortexd_monitoring_class_total", (("api", "labels"), ("class", "dog")))] == 1
    assert samples[("cortexd_monitoring_unreadable_total", (("api", "labels"),))] == 1
    assert samples[("cortexd_monitoring_value", (("api", "prices"), ("stat", "max")))] == 20.0
    assert samples[("cortexd_monitoring_value", (("api", "prices"), ("stat", "avg")))] == 8.0

    # the same model through the CLI: status snapshot, get API, -o json
    labels = cli.api("labels")
    assert labels["requests"]["codes"] == {"200": 5, "400": 1}
    assert labels["requests"]["p50_ms"] > 0
    mon = labels["requests"]["monitoring"]
    assert mon["classes"] == [{"class": "cat", "count": 3}, {"class": "dog", "count": 1}]
    detail = cli("get", "labels", check=True).out
    assert "monitoring (classification, key 'label'): 4 predictions, 1 unreadable" in detail
    assert re.search(r"^cat\s+3$", detail, re.MULTILINE) and re.search(r"^dog\s+1$", detail, re.MULTILINE)
    assert "(200: 5, 400: 1)" in detail and "latency:    p50 " in detail
    prices = cli("get", "prices", check=True).out
    assert prices.splitlines()[-1].split() == ["2", "20", "8", "4", "20"]
    assert cli.status()["daemon"]["metrics_url"] == f"http://127.0.0.1:{metrics_port}/metrics"

    # status without a terminal: one plain frame
    frame = cli("status", check=True).out
    assert "labels" in frame and "live" in frame and "\x1b[" not in frame
    assert "classification [label]: cat 3 · dog 1 · 1 unreadable" in " ".join(frame.split())

    # logs: every line carries its replica; --since leaves out what came before
    logs = cli("logs", "labels", "--since", "10m", check=True).out
    assert "labelling {'label': 'dog'}" in logs and " | " in logs.splitlines()[0]
    time.sleep(4)  # the log clock samples once a second: 'dog' is over a second older than --since
    assert post_json(f"{base}/labels", {"label": "fresh"})[0] == 200
    time.sleep(0.2)
    recent = cli("logs", "labels", "--since", "3s", check=True).out
    assert "labelling {'label': 'fresh'}" in recent and "'dog'" not in recent


def _spawn_in_pty(args: list[str], env: dict) -> tuple[subprocess.Popen, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "cortexd", *args], stdin=slave, stdout=slave,
                            stderr=slave, env={**env, "TERM": "xterm-256color"}, cwd=str(REPO),
                            start_new_session=True)
    os.close(slave)
    return proc, master


def _read_until(master: int, proc: subprocess.Popen, predicate, timeout: float) -> str:
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if predicate(ANSI.sub("", buf.decode("utf-8", "replace"))):
                return ANSI.sub("", buf.decode("utf-8", "replace"))
        elif proc.poll() is not None:
            break
    raise AssertionError(f"timed out; the terminal showed:\n{ANSI.sub('', buf.decode('utf-8', 'replace'))}")


def _drain(master: int, proc: subprocess.Popen, timeout: float) -> str:
    buf = b""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                buf += os.read(master, 65536)
            except OSError:
                break
    return ANSI.sub("", buf.decode("utf-8", "replace"))


def test_foreground_up_shows_the_live_view_in_a_terminal(cli, project):
    root, base = project
    proc, master = _spawn_in_pty(["up", "--backend", "process", "--metrics-port", "0", str(root)], cli.env)
    try:
        _read_until(master, proc, lambda s: re.search(r"labels\s+live", s)
                    and re.search(r"prices\s+live", s) and "IN-FL" in s and "P99" in s
                    and "GPU" in s, timeout=90)
        assert post_json(f"{base}/labels", {"label": "cat"})[0] == 200
        _read_until(master, proc, lambda s: "classification [label]: cat 1" in s, timeout=10)
        # Ctrl-C as the terminal sends it: a graceful shutdown, exit 0
        os.killpg(proc.pid, signal.SIGINT)
        _drain(master, proc, 60)
        assert proc.wait(timeout=60) == 0
        assert not (cli.home / "cortexd.sock").exists()
        # the live view had the terminal; the daemon's log went to its file
        assert "[labels] deploying 1 replica(s)" in (cli.home / "daemon.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)


def test_status_live_view_against_a_running_daemon(cli, project):
    root, _ = project
    cli("up", "-d", "--backend", "process", "--metrics-port", "0", "--wait", "90", str(root), check=True)
    proc, master = _spawn_in_pty(["status", "--interval", "0.3"], cli.env)
    try:
        # the whole frame: both APIs, then the events below them
        _read_until(master, proc, lambda s: re.search(r"labels\s+live", s)
                    and re.search(r"prices\s+live", s) and "events" in s, timeout=30)
        os.killpg(proc.pid, signal.SIGINT)
        _drain(master, proc, 10)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    assert json.loads(cli("get", "-o", "json", check=True).out)["apis"]  # the daemon keeps running
