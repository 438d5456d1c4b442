"""`cortexd deploy PATH` next to other projects, what rolls an API (and what does not), `up --port`.

Real daemon, real replica processes, real HTTP on loopback (issue 10, items 6-9).
"""

from __future__ import annotations

import json
import threading
import time

from tests.builders import write_project
from tests.real_daemon import free_port, post_json

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        self.name = config.get("name", "?")

    def predict(self, payload):
        return {"from": self.name}
"""

# writes beside its code on every request: an output file, a cache, a sqlite db; every name is
# neutral (no *.db, *.log), so only the shipped rule keeps them from rolling the API
WRITER = """
import os, sqlite3

HERE = os.path.dirname(os.path.abspath(__file__))


class PythonPredictor:
    def __init__(self, config):
        self.n = 0

    def predict(self, payload):
        self.n += 1
        with open(os.path.join(HERE, "predictions.out"), "a") as f:
            f.write(f"{self.n}\\n")
        with open(os.path.join(HERE, "cache.json"), "w") as f:
            f.write('{"n": %d}' % self.n)
        os.makedirs(os.path.join(HERE, "cache"), exist_ok=True)
        with open(os.path.join(HERE, "cache", f"{self.n % 3}.bin"), "wb") as f:
            f.write(b"x" * self.n)
        db = sqlite3.connect(os.path.join(HERE, "store.bin"))
        db.execute("create table if not exists t (n int)")
        db.execute("insert into t values (?)", (self.n,))
        db.commit()
        db.close()
        return {"n": self.n, "version": VERSION}


VERSION = 1
"""


def api_yaml(name: str, port: int, who: str) -> str:
    return (f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
            f"    config:\n      name: {who}\n  networking:\n    local_port: {port}\n")


def events(cli) -> list[str]:
    return [e["message"] for e in cli.status()["events"]]


def test_two_projects_deployed_one_after_the_other_both_serve(cli, tmp_path):
    port = free_port()
    first = write_project(tmp_path / "first", api_yaml("alpha", port, "first"), {"predictor.py": PREDICTOR})
    second = write_project(tmp_path / "second", api_yaml("beta", port, "second") + api_yaml("gamma", port, "second"),
                           {"predictor.py": PREDICTOR})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(first), check=True)

    # `up` while a daemon runs points to deploy
    again = cli("up", "-d", "--backend", "process", str(second))
    assert again.code == 1
    assert f"run `cortexd deploy {second}`" in again.err and "Traceback" not in again.err

    deployed = cli("deploy", str(second), check=True)
    assert deployed.out.splitlines() == ["created: api 'beta'", "created: api 'gamma'",
                                         "left alone (other projects): api 'alpha'"]
    cli.wait_for(lambda s: [a["status"] for a in s["apis"]] == ["live"] * 3, what="three apis live")
    for name, who in (("alpha", "first"), ("beta", "second"), ("gamma", "second")):
        assert post_json(f"http://127.0.0.1:{port}/{name}", {})[2] == json.dumps({"from": who}).encode().replace(
            b": ", b":"), name

    # gamma leaves the second project's cortex.yaml: only gamma goes
    (second / "cortex.yaml").write_text(api_yaml("beta", port, "second"))
    snap = cli.wait_for(lambda s: sorted(a["name"] for a in s["apis"]) == ["alpha", "beta"], what="gamma removed")
    assert all(a["status"] == "live" for a in snap["apis"])
    assert post_json(f"http://127.0.0.1:{port}/alpha", {})[0] == 200
    assert post_json(f"http://127.0.0.1:{port}/beta", {})[0] == 200
    assert post_json(f"http://127.0.0.1:{port}/gamma", {})[0] == 404

    # deploying the second again: beta unchanged, alpha left alone; an edit shows as an update
    assert cli("deploy", str(second), check=True).out.splitlines() == [
        "unchanged: api 'beta'", "left alone (other projects): api 'alpha'"]
    (second / "cortex.yaml").write_text(api_yaml("beta", port, "second-v2"))
    out = cli("deploy", str(second), check=True).out
    # the deploy rolls it, unless the watcher saw the save first (then the deploy finds it current)
    rolled = [m for m in events(cli) if m == "rolling api beta: cortex.yaml changed"]
    assert len(rolled) == 1
    assert "updated (rolling update): api 'beta'" in out or "unchanged: api 'beta'" in out
    cli.wait_for(lambda s: post_json(f"http://127.0.0.1:{port}/beta", {})[2] == b'{"from":"second-v2"}',
                 what="beta v2 serving")
    # both projects are watched: an edit to the first still rolls alpha
    (first / "cortex.yaml").write_text(api_yaml("alpha", port, "first-v2"))
    cli.wait_for(lambda s: any("rolling api alpha: cortex.yaml changed" in e["message"] for e in s["events"]),
                 what="alpha rolled")


def test_a_name_used_by_another_project_is_refused(cli, tmp_path):
    port = free_port()
    first = write_project(tmp_path / "first", api_yaml("alpha", port, "first"), {"predictor.py": PREDICTOR})
    other = write_project(tmp_path / "other", api_yaml("alpha", free_port(), "other"), {"predictor.py": PREDICTOR})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(first), check=True)
    refused = cli("deploy", str(other))
    assert refused.code == 1
    assert f"{other}/cortex.yaml:1: api 'alpha': name: api name 'alpha' is already used by the api at " \
           f"{first}/cortex.yaml:1" in refused.err
    assert post_json(f"http://127.0.0.1:{port}/alpha", {})[0] == 200


def test_files_a_predictor_writes_never_roll_it_and_a_code_edit_rolls_once(cli, tmp_path):
    port = free_port()
    yaml_text = ("- name: writer\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
                 f"  networking:\n    local_port: {port}\n")
    project = write_project(tmp_path / "w", yaml_text, {"predictor.py": WRITER, "labels.txt": "a\n",
                                                        "lookup.db": "v1"})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    url = f"http://127.0.0.1:{port}/writer"

    failures, answers, stop = [], [], threading.Event()

    def client() -> None:
        while not stop.is_set() and len(answers) < 2000:
            status, _, body = post_json(url, {})
            (answers if status == 200 else failures).append(body)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    # writes beside the code for several debounce intervals (0.5 s), and enough of them: a
    # count waited for, not assumed from a time (a loaded machine serves fewer per second)
    started, deadline = time.monotonic(), time.monotonic() + 60
    while (len(answers) < 40 or time.monotonic() - started < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    assert not failures and len(answers) >= 40, (len(answers), failures[:3])
    for name in ("predictions.out", "cache.json", "cache", "store.bin"):
        assert (project / name).exists(), name
    time.sleep(1)
    assert not any("rolling" in m for m in events(cli)), events(cli)
    [api] = cli.status()["apis"]
    assert api["status"] == "live"

    (project / "predictor.py").write_text(WRITER.replace("VERSION = 1", "VERSION = 2"))
    cli.wait_for(lambda s: any(json.loads(post_json(url, {})[2]).get("version") == 2 for _ in [0]),
                 timeout=60, what="version 2 serving")
    rolls = [m for m in events(cli) if m.startswith("rolling api")]
    assert rolls == ["rolling api writer: predictor.py changed"]
    # a file the version shipped with counts as the sources do
    (project / "labels.txt").write_text("a\nb\n")
    cli.wait_for(lambda s: any(e["message"] == "rolling api writer: labels.txt changed" for e in s["events"]),
                 what="labels.txt roll")
    # whatever its name: a shipped *.db is the version's file too (issue 10.7)
    (project / "lookup.db").write_text("v2")
    cli.wait_for(lambda s: any(e["message"] == "rolling api writer: lookup.db changed" for e in s["events"]),
                 what="lookup.db roll")


LEGACY = """\
- kind: api
  name: legacy
  python:
    predictor: predictor.py
"""

LEGACY_PREDICTOR = """
def predict(sample, metadata):
    return "ok"
"""


def test_up_port_sets_the_default_local_port_and_predictor_image_is_noticed(cli, tmp_path):
    port = free_port()
    legacy = write_project(tmp_path / "legacy", LEGACY, {"predictor.py": LEGACY_PREDICTOR})
    imaged = write_project(tmp_path / "imaged", api_yaml("imaged", port, "x").replace(
        "    path: predictor.py\n", "    path: predictor.py\n    image: example/custom:1\n"),
        {"predictor.py": PREDICTOR})
    cli("up", "-d", "--backend", "process", "--port", str(port), "--wait", "60", str(legacy), check=True)
    status, _, body = post_json(f"http://127.0.0.1:{port}/legacy", {"x": 1})
    assert status == 200, body
    [api] = cli.status()["apis"]
    assert api["url"] == f"http://127.0.0.1:{port}/legacy"

    cli("deploy", str(imaged), check=True)
    cli.wait_for(lambda s: len(s["apis"]) == 2, what="two apis")
    notices = [m for m in events(cli) if "predictor.image" in m]
    assert len(notices) == 1 and "ignored on the process backend" in notices[0]
    # a reload does not repeat it
    (imaged / "predictor.py").write_text(PREDICTOR + "\n# edited\n")
    cli.wait_for(lambda s: any("rolling api imaged" in e["message"] for e in s["events"]), what="imaged rolled")
    assert len([m for m in events(cli) if "predictor.image" in m]) == 1


def test_up_port_out_of_range_is_a_usage_error(cli, tmp_path):
    project = write_project(tmp_path / "p", LEGACY, {"predictor.py": LEGACY_PREDICTOR})
    result = cli("up", "-d", "--backend", "process", "--port", "70000", str(project))
    assert result.code == 2
    assert "--port 70000: expected a port number between 1 and 65535" in result.err
    assert "Traceback" not in result.err
