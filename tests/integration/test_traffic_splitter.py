"""`kind: TrafficSplitter` on a real daemon: requests split by weight through the gateway, weights
changed by a hot reload with no failed request, an api in error giving its share to the others, a
shadow api getting copies, and what `get`, `get SPLITTER` and /metrics say."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from pathlib import Path

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


def api(name: str, port: int, path: str = "named.py", extra: str = "") -> str:
    return (f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: {path}\n"
            f"    config:\n      name: {name}\n  networking:\n    local_port: {port}\n{extra}")


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
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)

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
    metrics = urllib.request.urlopen(
        cli.status()["daemon"]["metrics_url"], timeout=10).read().decode()
    assert 'cortexd_splitter_requests_total{api="a",code="200",splitter="ab"}' in metrics
    assert 'cortexd_splitter_weight{api="b",shadow="false",splitter="ab"} 80.0' in metrics


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
