"""Autoscaling, rolling updates and hot reload on real processes (issue: autoscaling/rollouts/reload).

Each test runs the real daemon (`cortexd up -d --backend process`), drives load with
real HTTP on loopback and edits the project's files as an editor would; the daemon's
file watcher picks the edits up (no `cortexd deploy`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.builders import write_project
from tests.load import KeepAliveClients
from tests.real_daemon import free_port, pid_alive, post_json, wait_until

VERSIONED = """
import os, socket, time

class PythonPredictor:
    def __init__(self, config):
        self.version = config["version"]
        time.sleep(config.get("init_s", 0))

    def predict(self, payload):
        time.sleep(payload.get("sleep", 0) if isinstance(payload, dict) else 0)
        # host + pid names the replica on both backends (containers have their own pid space)
        return {{"version": self.version, "pid": f"{{socket.gethostname()}}:{{os.getpid()}}",
                 "code": {code!r}}}
"""


def api_yaml(name: str, port: int, version: str, extra: str = "", path: str | None = None) -> str:
    return f"""
- name: {name}
  kind: RealtimeAPI
  predictor:
    type: python
    path: {path or name + '.py'}
    config:
      version: {version}
  networking:
    local_port: {port}
{extra}"""


def edit(path: Path, text: str) -> None:
    """Save as editors do: write a temp file, then rename it over the original."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def replica_ids(snap: dict, api: str) -> set[str]:
    (a,) = [a for a in snap["apis"] if a["name"] == api]
    return {r["id"] for r in a["replica_list"]}


def test_load_step_scales_up_then_back_down(cli, tmp_path):
    port = free_port()
    extra = """  autoscaling:
    min_replicas: 1
    max_replicas: 3
    target_replica_concurrency: 1
    window: 10s
    upscale_stabilization_period: 0s
    downscale_stabilization_period: 0s
"""
    project = write_project(tmp_path / "scale", api_yaml("busy", port, "v1", extra),
                            {"busy.py": VERSIONED.format(code="busy")})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)

    t0 = time.monotonic()
    with KeepAliveClients(port, "/busy", 4, {"sleep": 0.2}) as load:
        # 4 requests in flight against a target of 1 per replica: the autoscaler asks for more
        wait_until(lambda: cli.api("busy")["replicas"]["ready"] >= 2, 60, "a second ready replica")
        scaled_at = time.monotonic() - t0
        wait_until(lambda: len({b["pid"] for _, b in load.bodies()[-20:]}) >= 2, 30,
                   "answers from two replicas")
    assert set(load.outcomes()) == {"200"}, load.failures()[:5]
    api = cli.api("busy")
    assert api["replicas"]["requested"] <= 3
    assert "busy" in api["last_decision"] or api["last_decision"], api
    print(f"load step -> second replica serving in {scaled_at:.1f}s")

    # idle: back to min_replicas
    wait_until(lambda: cli.api("busy")["replicas"]["requested"] == 1
               and len(cli.api("busy")["replica_list"]) == 1, 90, "scale down to 1")


def test_rolling_update_under_load_has_no_failed_request_and_spares_other_apis(cli, tmp_path):
    port = free_port()
    rolled = """  autoscaling:
    min_replicas: 2
    max_replicas: 2
  update_strategy:
    max_surge: 1
    max_unavailable: 0
"""
    other = """  autoscaling:
    min_replicas: 1
    max_replicas: 1
"""
    text = api_yaml("rolled", port, "v1", rolled) + api_yaml("other", port, "v1", other)
    project = write_project(tmp_path / "roll", text, {
        "rolled.py": VERSIONED.format(code="rolled"), "other.py": VERSIONED.format(code="other")})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    before = cli.status()
    other_ids = replica_ids(before, "other")

    with KeepAliveClients(port, "/rolled", 3, {"sleep": 0.02}) as load:
        wait_until(lambda: load.latest(), 10, "first answers")
        saved = time.monotonic()
        edit(project / "cortex.yaml", text.replace("version: v1", "version: v2", 1))
        wait_until(lambda: (load.latest() or {}).get("version") == "v2", 60, "v2 answering")
        first_v2 = time.monotonic() - saved
        snap = cli.wait_for(
            lambda s: all(a["status"] == "live" for a in s["apis"])
            and len(replica_ids(s, "rolled")) == 2
            and not (replica_ids(s, "rolled") & replica_ids(before, "rolled")),
            timeout=60, what="the rollout to finish")
        done = time.monotonic() - saved
        # answers after the rollout, counted (a loaded machine serves fewer in a fixed time)
        load.wait_served(load.served() + 20)
    assert set(load.outcomes()) == {"200"}, (load.outcomes(), load.failures()[:5])
    # once the first v2 answer came, only v2 answered after the old replicas drained
    assert all(b["version"] == "v2" for at, b in load.bodies() if at > saved + done)
    assert replica_ids(snap, "other") == other_ids, "an unchanged API was restarted"
    print(f"save -> first v2 answer {first_v2:.1f}s, rollout finished {done:.1f}s, "
          f"{load.served()} requests, 0 failed")


def test_broken_edits_keep_the_old_version_serving_and_fixing_resumes(cli, tmp_path):
    port = free_port()
    text = api_yaml("steady", port, "v1")
    project = write_project(tmp_path / "broken", text, {"steady.py": VERSIONED.format(code="steady")})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    url = f"http://127.0.0.1:{port}/steady"
    cfg = project / "cortex.yaml"

    # 1. YAML syntax error: rejected with file:line, old version serves
    edit(cfg, text + "  compute: [unclosed\n")
    snap = cli.wait_for(lambda s: s["daemon"]["config_error"], timeout=20, what="the config error")
    assert f"{cfg}:" in snap["daemon"]["config_error"]
    assert snap["apis"][0]["status"] == "live"
    status, _, body = post_json(url, {})
    assert status == 200 and json.loads(body)["version"] == "v1"
    assert "configuration rejected" in cli("get", check=True).out + json.dumps(snap["events"])

    # 2. schema error: the field path and line
    edit(cfg, text.replace("local_port: ", "local_port: not-a-port #"))
    snap = cli.wait_for(lambda s: "local_port" in (s["daemon"]["config_error"] or ""), timeout=20,
                        what="the schema error")
    assert f"{cfg}:" in snap["daemon"]["config_error"]
    assert post_json(url, {})[0] == 200

    # 3. predictor that raises in __init__: the new replica fails, the old one keeps serving
    bad_init = VERSIONED.format(code="steady").replace(
        'self.version = config["version"]', 'raise RuntimeError("cannot load weights v2")')
    edit(cfg, text)  # a valid config again
    edit(project / "steady.py", bad_init)
    snap = cli.wait_for(lambda s: "cannot load weights v2" in (s["apis"][0]["reason"] or ""),
                        timeout=60, what="the __init__ failure to be reported")
    assert snap["daemon"]["config_error"] is None
    assert f"{project / 'steady.py'}\", line" in snap["apis"][0]["reason"]
    for _ in range(5):
        status, _, body = post_json(url, {})
        assert status == 200 and json.loads(body)["version"] == "v1"

    # 4. a syntax error in the predictor file: same, with the file and line
    edit(project / "steady.py", "class PythonPredictor:\n    def __init__(self, config)\n        pass\n")
    snap = cli.wait_for(lambda s: "SyntaxError" in (s["apis"][0]["reason"] or ""),
                        timeout=60, what="the syntax error to be reported")
    assert "steady.py" in snap["apis"][0]["reason"] and "line 2" in snap["apis"][0]["reason"]
    assert post_json(url, {})[0] == 200

    # 5. fixed: the rollout resumes and the new code serves
    edit(project / "steady.py", VERSIONED.format(code="fixed"))
    wait_until(lambda: json.loads(post_json(url, {})[2]).get("code") == "fixed", 60, "the fixed code")
    cli.wait_for(lambda s: s["apis"][0]["status"] == "live" and s["apis"][0]["reason"] is None,
                 timeout=60, what="live again")


def test_editing_one_predictor_rolls_only_that_api(cli, tmp_path):
    port = free_port()
    text = api_yaml("first", port, "v1") + api_yaml("second", port, "v1")
    project = write_project(tmp_path / "two", text, {
        "first.py": VERSIONED.format(code="first-1"), "second.py": VERSIONED.format(code="second-1")})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    before = cli.status()
    edit(project / "first.py", VERSIONED.format(code="first-2"))
    wait_until(lambda: json.loads(post_json(f"http://127.0.0.1:{port}/first", {})[2])["code"] == "first-2",
               60, "the edited predictor to serve")
    after = cli.wait_for(lambda s: all(a["status"] == "live" for a in s["apis"]), 60, what="live")
    assert replica_ids(after, "second") == replica_ids(before, "second")
    assert replica_ids(after, "first") != replica_ids(before, "first")
    status, _, body = post_json(f"http://127.0.0.1:{port}/second", {})
    assert json.loads(body)["code"] == "second-1"


LEGACY_BURN = """
import os, time

def predict(sample, metadata):
    end = time.process_time() + 0.02  # 20 ms of CPU per request
    while time.process_time() < end:
        pass
    return {"pid": os.getpid()}
"""


@pytest.mark.xdist_group("newcomer")  # port 8888, the legacy format's default, is the README quickstart's too
def test_legacy_api_scales_up_on_cpu_utilization(cli, tmp_path):
    project = write_project(tmp_path / "legacy-cpu", """
- kind: api
  name: burner
  endpoint: /burner
  python:
    predictor: burner.py
  compute:
    cpu: 100m
    min_replicas: 1
    max_replicas: 2
    target_cpu_utilization: 50
""", {"burner.py": LEGACY_BURN})
    # the legacy format has no local_port; the daemon's default port is the gateway's
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8888)) == 0:
            pytest.skip("port 8888 is in use on this machine")
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    t0 = time.monotonic()
    with KeepAliveClients(8888, "/burner", 2) as load:
        # one replica busy all the time uses ~1 CPU = ~1000% of its 100m request
        wait_until(lambda: cli.api("burner")["replicas"]["ready"] == 2, 60, "a second replica")
    assert set(load.outcomes()) == {"200"}, load.failures()[:5]
    api = cli.api("burner")
    assert "cpu" in api["last_decision"].lower(), api["last_decision"]
    print(f"legacy CPU scale-up in {time.monotonic() - t0:.1f}s: {api['last_decision']}")


def test_removed_api_drains_its_in_flight_request_then_goes(cli, tmp_path):
    port = free_port()
    text = api_yaml("kept", port, "v1") + api_yaml("dropped", port, "v1")
    project = write_project(tmp_path / "drop", text, {
        "kept.py": VERSIONED.format(code="kept"), "dropped.py": VERSIONED.format(code="dropped")})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    pids = [int(r["backend"]["pid"]) for r in cli.api("dropped")["replica_list"]]
    results = []
    slow = threading.Thread(target=lambda: results.append(
        post_json(f"http://127.0.0.1:{port}/dropped", {"sleep": 3})))
    slow.start()
    # the request is in flight before the API goes (a fixed sleep may not be enough under load)
    wait_until(lambda: cli.api("dropped")["requests"]["in_flight"] >= 1, 10, "the slow request in flight")
    edit(project / "cortex.yaml", api_yaml("kept", port, "v1"))
    cli.wait_for(lambda s: [a["name"] for a in s["apis"]] == ["kept"], 20, what="the API removed")
    slow.join()
    assert results[0][0] == 200, results  # the request in flight finished on the draining replica
    wait_until(lambda: not any(pid_alive(p) for p in pids), 30, "the removed API's replica to stop")
    status, _, body = post_json(f"http://127.0.0.1:{port}/dropped", {})
    assert status == 404 and "/kept" in body.decode()
    assert post_json(f"http://127.0.0.1:{port}/kept", {})[0] == 200


MODELS_PREDICTOR = """
class PythonPredictor:
    def __init__(self, config, python_client):
        self.client = python_client

    def load_model(self, model_path):
        with open(model_path + "/weights.txt") as f:
            return f.read().strip()

    def predict(self, payload):
        return {"weights": self.client.get_model(payload["model"], payload.get("version", "latest"))}
"""


def test_get_api_shows_the_models_each_replica_holds(cli, tmp_path):
    port = free_port()
    root = tmp_path / "models"
    for name, version in (("small", 1), ("small", 2), ("large", 1)):
        d = root / "store" / name / str(version)
        d.mkdir(parents=True)
        (d / "weights.txt").write_text(f"{name}-v{version}")
    project = write_project(root, f"""
- name: zoo
  kind: RealtimeAPI
  predictor:
    type: python
    path: zoo.py
    models:
      dir: store
      cache_size: 1
      disk_cache_size: 2
  networking:
    local_port: {port}
""", {"zoo.py": MODELS_PREDICTOR})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    status, _, body = post_json(f"http://127.0.0.1:{port}/zoo", {"model": "small"})
    assert (status, json.loads(body)) == (200, {"weights": "small-v2"})
    api = cli.api("zoo")
    ((rid, info),) = api["models"].items()
    assert info["models"]["small"]["versions"] == [1, 2]
    assert info["models"]["small"]["loaded_versions"] == [2]
    assert info["model_cache"]["in_memory"] == [["small", 2]]
    post_json(f"http://127.0.0.1:{port}/zoo", {"model": "large"})
    table = cli("get", "zoo", check=True).out
    assert "MODEL" in table and "IN MEMORY" in table
    large_row = next(line for line in table.splitlines() if " large " in line)
    small_row = next(line for line in table.splitlines() if " small " in line)
    assert large_row.split()[-1] == "1" and small_row.split()[-1] == "-", table  # LRU: small evicted
    assert "1 of cache_size 1 in memory" in table
    unknown = cli("get", "nope")
    assert unknown.code == 1 and "no api named 'nope'" in unknown.err


def test_an_edit_to_a_taken_port_is_rejected_visibly_and_the_old_port_keeps_serving(cli, tmp_path):
    port = free_port()
    text = api_yaml("mover", port, "v1")
    project = write_project(tmp_path / "mover", text, {"mover.py": VERSIONED.format(code="m")})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        edit(project / "cortex.yaml", text.replace(f"local_port: {port}", f"local_port: {taken}"))
        snap = cli.wait_for(lambda s: s["daemon"]["config_error"], timeout=20, what="the rejection")
    assert f"port {taken} is already in use" in snap["daemon"]["config_error"]
    assert any("configuration rejected" in e["message"] for e in snap["events"])
    assert post_json(f"http://127.0.0.1:{port}/mover", {})[0] == 200


def test_a_deleted_api_stays_deleted_when_a_file_is_saved(cli, tmp_path):
    port = free_port()
    text = api_yaml("stays", port, "v1") + api_yaml("goes", port, "v1")
    project = write_project(tmp_path / "del", text, {
        "stays.py": VERSIONED.format(code="s1"), "goes.py": VERSIONED.format(code="g")})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    cli("delete", "goes", check=True)
    edit(project / "stays.py", VERSIONED.format(code="s2"))
    wait_until(lambda: json.loads(post_json(f"http://127.0.0.1:{port}/stays", {})[2])["code"] == "s2",
               60, "the edit to roll")
    assert [a["name"] for a in cli.status()["apis"]] == ["stays"]
    cli("deploy", str(project), check=True)  # an explicit deploy brings it back
    cli.wait_for(lambda s: [a["name"] for a in s["apis"]] == ["goes", "stays"], 30, what="redeploy")


def test_a_second_signal_forces_shutdown_past_a_long_request(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "long", api_yaml("long", port, "v1"),
                            {"long.py": VERSIONED.format(code="l")})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    snap = cli.status()
    daemon_pid = snap["daemon"]["pid"]
    replica = int(snap["apis"][0]["replica_list"][0]["backend"]["pid"])
    outcome = []

    def long_request():
        try:
            outcome.append(post_json(f"http://127.0.0.1:{port}/long", {"sleep": 50}, timeout=90)[0])
        except OSError as e:  # the forced shutdown cuts it: that is the point
            outcome.append(e)

    slow = threading.Thread(target=long_request, daemon=True)
    slow.start()
    time.sleep(0.5)
    os.kill(daemon_pid, signal.SIGTERM)
    time.sleep(0.5)
    os.kill(daemon_pid, signal.SIGTERM)
    # forced: no waiting for the 50 s request (nor the 10 s drain) before replicas are killed
    wait_until(lambda: not pid_alive(daemon_pid), 8, "the daemon to exit")
    assert not pid_alive(replica)
    slow.join(timeout=10)
    assert outcome and outcome[0] != 200
