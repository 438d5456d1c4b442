"""`kind: TrafficSplitter`: its fields, Cortex 0.23's rules (and shadows'), each problem with file:line,
and its apis checked against what the daemon serves (daemon/projects.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexd.daemon.projects import conflicts, load_project, settled_splitters
from cortexd.errors import ConfigError
from cortexd.spec.load import load_documents
from tests.builders import config_problems

PREDICTOR = "class PythonPredictor:\n    def __init__(self, config): pass\n    def predict(self, payload): return 1\n"


def api(name: str, port: int = 8888) -> str:
    return (f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
            f"  networking:\n    local_port: {port}\n")


def splitter(name: str, *targets: str, extra: str = "") -> str:
    """targets: "name:weight" or "name:weight:shadow"."""
    lines = [f"- name: {name}\n  kind: TrafficSplitter\n{extra}  apis:\n"]
    for t in targets:
        n, w, *shadow = t.split(":")
        lines.append(f"    - name: {n}\n      weight: {w}\n" + ("      shadow: true\n" if shadow else ""))
    return "".join(lines)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "predictor.py").write_text(PREDICTOR)
    return tmp_path


def test_cortex_example_shape_loads_with_its_defaults(folder):
    loaded = load_documents(api("a") + api("b") + splitter("ab", "a:30", "b:70"), "cortex.yaml", str(folder))
    assert [a.name for a in loaded.apis] == ["a", "b"]
    (s,) = loaded.splitters
    assert (s.name, s.networking.endpoint, s.networking.local_port) == ("ab", "/ab", 8888)
    assert [(t.name, t.weight, t.shadow, t.line) for t in s.targets] == [("a", 30, False, 18), ("b", 70, False, 20)]
    assert s.source_line == 15 and s.shadow is None and loaded.outside_targets() == []


def test_endpoint_and_local_port_as_a_realtime_api_has_them(folder):
    text = api("a", 9001) + splitter("ab", "a:100", extra="  networking:\n    endpoint: v1/ab/\n    local_port: 9001\n")
    (s,) = load_documents(text, "cortex.yaml", str(folder)).splitters
    assert (s.networking.endpoint, s.networking.local_port) == ("/v1/ab", 9001)
    (s,) = load_documents(api("a") + splitter("ab", "a:100"), "cortex.yaml", str(folder),
                          default_port=7000).splitters
    assert s.networking.local_port == 7000


def test_weights_must_sum_to_100(folder):
    problems = config_problems(folder, api("a") + api("b") + splitter("ab", "a:30", "b:60"))
    assert problems == ["cortex.yaml:17:3: traffic splitter 'ab': apis: expected the weights of the apis to "
                        "sum to 100; found 90 (a: 30, b: 60)"]


def test_a_shadow_weight_is_outside_the_sum_and_one_shadow_at_most(folder):
    text = api("a") + api("b") + api("c") + splitter("ab", "a:100", "b:50:shadow", "c:10:shadow")
    assert config_problems(folder, text) == [
        "cortex.yaml:32:15: traffic splitter 'ab': apis[2].shadow: only one api of a splitter may be a shadow "
        "(apis[1] is one already)"]
    (s,) = load_documents(api("a") + api("b") + splitter("ab", "a:100", "b:50:shadow"), "cortex.yaml",
                          str(folder)).splitters
    assert s.shadow is not None and s.shadow.name == "b" and [t.name for t in s.primaries] == ["a"]


def test_duplicate_targets_and_bad_fields_are_located(folder):
    text = api("a") + splitter("ab", "a:50", "a:50") + "    - name: a\n      weight: 101\n      extra: 1\n"
    problems = config_problems(folder, text)
    assert "cortex.yaml:16:15: traffic splitter 'ab': apis[2].weight: expected a value <= 100; found 101" in problems
    assert any(p.startswith("cortex.yaml:17:7: traffic splitter 'ab': apis[2].extra: unknown field 'extra'")
               for p in problems)
    problems = config_problems(folder, api("a") + splitter("ab", "a:50", "a:50"))
    assert problems == ["cortex.yaml:13:13: traffic splitter 'ab': apis[1].name: api 'a' is listed twice "
                        "(also apis[0]); list each api once, with its whole weight"]


def test_missing_apis_and_an_empty_list(folder):
    assert config_problems(folder, "- name: ab\n  kind: TrafficSplitter\n") == [
        "cortex.yaml:1:3: traffic splitter 'ab': apis: missing required field; expected the Realtime APIs to "
        "route to: each one in the same configuration file or already deployed; the weights of the apis that "
        "are not shadows sum to 100"]
    assert config_problems(folder, "- name: ab\n  kind: TrafficSplitter\n  apis: []\n") == [
        "cortex.yaml:3:9: traffic splitter 'ab': apis: expected at least 1 item; found a list of 0 items"]


def test_a_splitter_cannot_target_a_splitter_or_itself(folder):
    text = api("a") + splitter("one", "a:100") + splitter("two", "one:50", "two:50")
    problems = config_problems(folder, text)
    assert problems == [
        "cortex.yaml:16:13: traffic splitter 'two': apis[0].name: 'one' is a traffic splitter; a splitter routes "
        "to Realtime APIs only",
        "cortex.yaml:18:13: traffic splitter 'two': apis[1].name: a traffic splitter cannot route to itself; "
        "name a Realtime API"]


def test_a_splitter_name_or_route_clashing_with_an_api(folder):
    problems = config_problems(folder, api("a") + api("b") + splitter("a", "b:100"))
    assert "cortex.yaml:15:9: traffic splitter 'a': name: name 'a' is already used by the api at cortex.yaml:1; " \
           "the names of apis and traffic splitters must be unique" in problems
    text = api("a") + splitter("ab", "a:100", extra="  networking:\n    endpoint: /a\n")
    assert config_problems(folder, text) == [
        "cortex.yaml:11:15: traffic splitter 'ab': networking.endpoint: endpoint /a on port 8888 is already used "
        "by api 'a' (cortex.yaml:1); give one of them another networking.endpoint or networking.local_port"]


def test_apis_outside_the_file_are_left_to_the_daemon(folder):
    loaded = load_documents(splitter("ab", "a:30", "b:70"), "cortex.yaml", str(folder))
    assert [(s.name, n) for s, n in loaded.outside_targets()] == [("ab", "a"), ("ab", "b")]


def write(root: Path, text: str) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cortex.yaml").write_text(text)
    (root / "predictor.py").write_text(PREDICTOR)
    return str(root)


def test_the_daemon_refuses_apis_no_project_serves_with_their_line(tmp_path):
    apis = load_project(write(tmp_path / "apis", api("a") + api("b")))
    split = load_project(write(tmp_path / "split", splitter("ab", "a:30", "c:70")))
    assert split.names == ["ab"] and split.hashes() == {"ab": split.splitters[0].spec_hash}
    (problem,) = conflicts([apis, split])
    assert str(problem) == (f"{tmp_path / 'split' / 'cortex.yaml'}:6: traffic splitter 'ab': apis[1].name: no "
                            "Realtime API named 'c' is in this configuration or deployed (apis: a, b)")
    assert conflicts([apis, load_project(write(tmp_path / "ok", splitter("ab", "a:30", "b:70")))]) == []


def test_an_api_removed_after_its_splitter_was_deployed_is_let_go(tmp_path):
    """Its share goes to the others (the gateway's business); a new or changed splitter is checked."""
    apis = load_project(write(tmp_path / "apis", api("a") + api("b")))
    split = load_project(write(tmp_path / "split", splitter("ab", "a:30", "b:70")))
    without_b = load_project(write(tmp_path / "apis", api("a")))
    assert conflicts([without_b, split], settled_splitters([apis, split])) == []
    assert len(conflicts([without_b, split])) == 1


def test_a_splitter_named_like_an_api_of_another_project(tmp_path):
    apis = load_project(write(tmp_path / "apis", api("a") + api("b")))
    split = load_project(write(tmp_path / "split", splitter("a", "b:100")))
    problems = [str(p) for p in conflicts([apis, split])]
    assert any("traffic splitter 'a': name: name 'a' is already used by the api" in p for p in problems)


def test_validate_lists_splitters_and_what_the_daemon_must_serve(folder, capsys):
    from cortexd.cli import main

    (folder / "cortex.yaml").write_text(api("a") + splitter("ab", "a:70", "x:30"))
    assert main(["validate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "ok: traffic splitter 'ab' (a:70 x:30) at http://127.0.0.1:8888/ab" in out
    assert "note: traffic splitter 'ab': api 'x' is not in this configuration" in out
    assert out.strip().endswith("1 api(s) valid, 1 traffic splitter(s) valid")


def test_a_broken_splitter_is_a_config_error_not_a_traceback(folder):
    with pytest.raises(ConfigError):
        load_documents("- name: ab\n  kind: TrafficSplitter\n  apis: [{name: 3, weight: x}, 7]\n", "cortex.yaml",
                       str(folder))


def test_a_deploy_checks_a_splitters_apis_against_what_is_deployed_not_its_own_project(tmp_path):
    from cortexd.daemon.projects import load_projects, merged

    apis = load_project(write(tmp_path / "apis", api("a") + api("b")))
    path = write(tmp_path / "split", splitter("ab", "a:30", "b:70"))
    with pytest.raises(ConfigError, match="no Realtime API named 'a'"):
        load_projects([path])  # `up` of the splitter alone: its apis are nowhere
    incoming = load_projects([path], whole=False)  # a deploy: the daemon serves `apis`
    assert conflicts(merged([apis], incoming)) == []
