"""`kind: TrafficSplitter` on a real daemon: requests split by weight through the gateway, weights
changed by a hot reload with no failed request, an api in error giving its share to the others, a
shadow api getting copies, and what `get`, `get SPLITTER` and /metrics say."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.builders import write_project
from tests.load import KeepAliveClients
from tests.real_daemon import free_port, post_json, wait_until

NAMED = """
class PythonPredictor:
    def __init__(self, config):
        self.name = config["name"]

    def predict(self, payload):
        return {"api": self.name}
"""

BROKEN = """
class PythonPredictor:
    def __init__(self, config):
        raise RuntimeError("this api never starts")

    def predict(self, payload):
        return {}
"""


def api(name: str, port: int, path: str = "named.py", extra: str = "", sleep: float = 0) -> str:
    return (f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: {path}\n"
            f"    config:\n      name: {name}\n      sleep: {sleep}\n  networking:\n    local_port: {port}\n{extra}")


def splitter(name: str, port: int, targets: str) -> str:
    return f"- name: {name}\n  kind: TrafficSplitter\n  networking:\n    local_port: {port}\n  apis:\n{targets}"


def target(name: str, weight: int, shadow: bool = False) -> str:
    return f"    - name: {name}\n      weight: {weight}\n" + ("      shadow: true\n" if shadow else "")


def edit(path: Path, text: str) -> None:
    """Save as editors do: write a temp file, then rename it over the original."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def split_of(bodies: list, since: int = 0) -> dict[str, float]:
    counts = Counter(b["api"] for _, b in bodies[since:])
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()}


def test_weights_hold_over_10000_requests_and_change_by_hot_reload_with_no_failure(cli, tmp_path):
    port = free_port()
    text = api("a", port) + api("b", port) + splitter("ab", port, target("a", 70) + target("b", 30))
    project = write_project(tmp_path / "split", text, {"named.py": NAMED})
    metrics_port = free_port()  # set: the default metrics port may be another daemon's on this machine
    cli("up", "-d", "--backend", "process", "--metrics-port", str(metrics_port), "--wait", "60", str(project),
        check=True)

    with KeepAliveClients(port, "/ab", 8) as load:
        load.wait_served(10_000, timeout=240)
        first = load.bodies()[:10_000]
        shares = split_of(first)
        assert abs(shares["a"] - 0.70) <= 0.02 and abs(shares["b"] - 0.30) <= 0.02, shares
        print(f"10,000 requests through the splitter: a {shares['a']:.2%}, b {shares['b']:.2%} (70/30 configured)")

        saved, before = time.monotonic(), load.served()
        edit(project / "cortex.yaml", text.replace("weight: 70", "weight: 20").replace("weight: 30", "weight: 80"))
        wait_until(lambda: [t["weight"] for t in cli.api("ab")["targets"]] == [20, 80], 60, "the new weights")
        applied = load.served()
        load.wait_served(applied + 4000, timeout=120)
    assert set(load.outcomes()) == {"200"}, (load.outcomes(), load.failures()[:5])
    after = split_of(load.bodies(), applied)
    assert abs(after["a"] - 0.20) <= 0.03 and abs(after["b"] - 0.80) <= 0.03, after
    print(f"hot reload of the weights: applied {time.monotonic() - saved:.1f}s after the save, "
          f"{load.served()} requests, 0 failed; after it a {after['a']:.2%}, b {after['b']:.2%}; "
          f"{applied - before} served during the reload")

    shown = cli("get", "ab", check=True).out
    assert "traffic splitter: ab (live)" in shown
    rows = {line.split()[0]: line.split() for line in shown.splitlines() if line.startswith(("a ", "b "))}
    assert rows["a"][1:4] == ["20", "20%", "live"] and rows["b"][1:4] == ["80", "80%", "live"]
    assert int(rows["a"][4]) + int(rows["b"][4]) == load.served()  # every request counted once, per api
    listing = cli("get", check=True).out
    assert "TRAFFIC SPLITTER" in listing and "a:20 b:80" in listing
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    assert 'cortexd_splitter_requests_total{api="a",code="200",splitter="ab"}' in metrics
    assert 'cortexd_splitter_weight{api="b",shadow="false",splitter="ab"} 80.0' in metrics

    # a splitter of another project, deployed to the running daemon over its apis, then deleted
    other = write_project(tmp_path / "other", splitter("other", port, target("b", 100)), {})
    assert "created: traffic splitter 'other'" in cli("deploy", str(other), check=True).out
    code, _, body = post_json(f"http://127.0.0.1:{port}/other", {})
    assert code == 200 and json.loads(body) == {"api": "b"}
    cli("delete", "other", check=True)
    assert post_json(f"http://127.0.0.1:{port}/other", {})[0] == 404
    assert "no api named 'gone' (apis: a, b; traffic splitters: ab)" in cli("delete", "gone").err


def test_an_api_in_error_gives_its_share_to_the_others_and_a_shadow_gets_copies(cli, tmp_path):
    port = free_port()
    text = (api("a", port) + api("broken", port, "broken.py") + api("copy", port)
            + splitter("ab", port, target("a", 70) + target("broken", 30) + target("copy", 100, shadow=True))
            + splitter("only-broken", port, target("broken", 100)))
    project = write_project(tmp_path / "err", text, {"named.py": NAMED, "broken.py": BROKEN})
    cli("up", "-d", "--backend", "process", "--wait", "0", str(project), check=True)
    cli.wait_for(lambda s: any(a["name"] == "broken" and a["status"] == "error" for a in s["apis"])
                 and all(a["status"] == "live" for a in s["apis"] if a["name"] != "broken"),
                 timeout=120, what="api 'broken' in error, the others live")

    answers = [post_json(f"http://127.0.0.1:{port}/ab", {}) for _ in range(50)]
    assert {code for code, _, _ in answers} == {200}
    assert {json.loads(body)["api"] for _, _, body in answers} == {"a"}
    assert all(h.get("X-Request-Id") for _, h, _ in answers)

    code, headers, body = post_json(f"http://127.0.0.1:{port}/only-broken", {})
    assert code == 503 and headers.get("Retry-After") == "1"
    assert json.loads(body)["error"] == ("traffic splitter 'only-broken' has no api that can take requests now "
                                         "(api 'broken' is in error)")

    shown = cli("get", "ab", check=True).out
    assert "traffic splitter: ab (degraded)" in shown
    assert "api 'broken' is in error; its 30% goes to the others (now a 100%)" in shown

    def shadow_now() -> dict:
        return next(t for t in cli.api("ab")["targets"] if t["name"] == "copy")

    # every request was copied (weight 100): answered and counted, or dropped at the shadow's limit
    shadow = wait_until(lambda: (s := shadow_now())["requests"].get("total", 0) + s["dropped"] >= 50 and s,
                        30, "the shadow's copies counted")
    assert shadow["shadow"] and shadow["share"] == 0.0
    assert shadow["requests"].get("2xx", 0) + shadow["dropped"] == 50, shadow
    assert "broken:30(down)" in cli("get", check=True).out  # the listing marks the api that takes no traffic


SLOW = """
import time

class PythonPredictor:
    def __init__(self, config):
        self.name = config["name"]
        self.sleep = config.get("sleep", 0)

    def predict(self, payload):
        time.sleep(self.sleep)
        if payload.get("fail_shadow") and self.name == "shadow":
            raise RuntimeError("the shadow fails")
        return {"api": self.name}
"""


@pytest.mark.exclusive  # the answer's time is bounded (the primary's 1.5 s, not the shadow's 3 s)
def test_a_slow_failing_shadow_never_slows_or_fails_the_answer_and_limits_hold(cli, tmp_path):
    port = free_port()
    limit = "  autoscaling:\n    max_replicas: 1\n    max_replica_concurrency: 1\n"
    text = (api("main", port, "slow.py", limit, sleep=1.5) + api("shadow", port, "slow.py", limit, sleep=3)
            + splitter("ab", port, target("main", 100) + target("shadow", 100, shadow=True)))
    project = write_project(tmp_path / "shadow", text, {"slow.py": SLOW})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)

    # the shadow takes 3 s a request and fails; the answer comes in the primary's 1.5 s
    started = time.monotonic()
    code, headers, body = post_json(f"http://127.0.0.1:{port}/ab", {"fail_shadow": True})
    took = time.monotonic() - started
    assert code == 200 and json.loads(body) == {"api": "main"} and took < 2.8, (code, took)
    # the shadow is busy with that copy (max_replica_concurrency 1): the next copy is dropped, not queued
    code, _, _ = post_json(f"http://127.0.0.1:{port}/ab", {})
    assert code == 200

    # through the splitter, the primary's own limit holds: a second request at once gets its 503
    results: list[tuple[int, dict, bytes]] = []
    threads = [threading.Thread(target=lambda: results.append(post_json(f"http://127.0.0.1:{port}/ab", {})))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(code for code, _, _ in results) == [200, 503]
    refused = next(json.loads(body) for code, _, body in results if code == 503)
    assert "api 'main' is at its concurrency limit" in refused["error"] and refused["request_id"]

    shadow = wait_until(lambda: (s := next(t for t in cli.api("ab")["targets"] if t["name"] == "shadow"))
                        ["requests"].get("5xx", 0) >= 1 and s, 30, "the failed copy counted")
    assert shadow["dropped"] >= 1, shadow  # copies that found the shadow at its limit
    main = next(t for t in cli.api("ab")["targets"] if t["name"] == "main")
    assert main["requests"]["2xx"] == 3 and main["requests"]["5xx"] == 1  # the 503 is the primary's


def test_an_api_removed_under_load_gives_its_share_to_the_others_with_no_failed_request(cli, tmp_path):
    port = free_port()
    split = splitter("ab", port, target("a", 50) + target("b", 50))
    project = write_project(tmp_path / "rm", api("a", port) + api("b", port) + split, {"named.py": NAMED})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)

    with KeepAliveClients(port, "/ab", 4) as load:
        load.wait_served(500)
        edit(project / "cortex.yaml", api("a", port) + split)  # b goes; the splitter stays as it was
        shown = wait_until(lambda: (out := cli("get", "ab").out) and "is not deployed" in out and out, 60,
                           "b gone from the splitter")
        gone = load.served()
        load.wait_served(gone + 500)
    assert set(load.outcomes()) == {"200"}, (load.outcomes(), load.failures()[:5])
    assert {b["api"] for _, b in load.bodies()[gone:]} == {"a"}
    assert "api 'b' is not deployed; its 50% goes to the others (now a 100%)" in shown
    assert "traffic splitter: ab (degraded)" in shown
