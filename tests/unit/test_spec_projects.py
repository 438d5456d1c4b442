"""Deployed projects: what a deploy creates, updates, removes and leaves alone; why an API rolls."""

from __future__ import annotations

from pathlib import Path

from cortexd.daemon.projects import (
    conflicts,
    deploy_summary,
    load_project,
    merged,
    roll_reasons,
)
from cortexd.ui.text import deploy_lines

PREDICTOR = "class PythonPredictor:\n    def __init__(self, config): pass\n    def predict(self, payload): return 1\n"


def api(name: str, port: int = 8888, extra: str = "") -> str:
    return (f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n{extra}"
            f"  networking:\n    local_port: {port}\n")


def project(root: Path, yaml_text: str) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cortex.yaml").write_text(yaml_text)
    if not (root / "predictor.py").exists():
        (root / "predictor.py").write_text(PREDICTOR)
    return str(root)


def test_deploying_a_second_project_adds_its_apis_and_leaves_the_first_alone(tmp_path):
    first = load_project(project(tmp_path / "a", api("alpha")))
    second = load_project(project(tmp_path / "b", api("beta") + api("gamma")))
    after = merged([first], [second])
    assert [p.path for p in after] == [first.path, second.path]
    summary = deploy_summary([first], after, [second])
    assert (summary.created, summary.updated, summary.removed, summary.left_alone) == (
        ["beta", "gamma"], [], [], ["alpha"])


def test_deploying_a_project_again_updates_removes_and_keeps_in_place(tmp_path):
    first = load_project(project(tmp_path / "a", api("alpha")))
    second = load_project(project(tmp_path / "b", api("beta") + api("gamma")))
    again = load_project(project(tmp_path / "b", api("beta", extra="    config:\n      v: 2\n")))
    after = merged([first, second], [again])
    assert [p is again for p in after] == [False, True]
    summary = deploy_summary([first, second], after, [again])
    assert (summary.created, summary.updated, summary.removed, summary.unchanged, summary.left_alone) == (
        [], ["beta"], ["gamma"], [], ["alpha"])
    assert roll_reasons([first, second], after) == {"beta": "cortex.yaml changed"}


def test_a_roll_names_the_file_that_triggered_it(tmp_path):
    root = tmp_path / "a"
    before = load_project(project(root, api("alpha")))
    (root / "notes.txt").write_text("created after the version started")
    unchanged = load_project(before.path, shipped=before.shipped)
    assert unchanged.specs[0].spec_hash == before.specs[0].spec_hash
    (root / "predictor.py").write_text(PREDICTOR + "# edited\n")
    edited = load_project(before.path, shipped=before.shipped)
    assert roll_reasons([before], [edited]) == {"alpha": "predictor.py changed"}


def test_names_and_routes_used_by_two_projects_are_refused(tmp_path):
    first = load_project(project(tmp_path / "a", api("alpha")))
    clash = load_project(project(tmp_path / "b", api("alpha", port=9000)))
    [problem] = conflicts([first, clash])
    assert str(problem).startswith(f"{tmp_path}/b/cortex.yaml:1: api 'alpha': name: api name 'alpha' is already "
                                   f"used by the api at {tmp_path}/a/cortex.yaml:1")
    route = load_project(project(tmp_path / "c", api("other", extra="  networking:\n    endpoint: /alpha\n")
                                 .replace("  networking:\n    local_port: 8888\n", "")
                                 .replace("    endpoint: /alpha\n", "    endpoint: /alpha\n    local_port: 8888\n")))
    assert "endpoint /alpha on port 8888 is already used by api 'alpha'" in str(conflicts([first, route])[0])


def test_the_default_port_applies_to_apis_that_set_none(tmp_path):
    root = tmp_path / "a"
    project(root, "- name: a\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
            + api("b", port=9001))
    loaded = load_project(str(root), default_port=9000)
    assert [s.networking.local_port for s in loaded.specs] == [9000, 9001]


def test_deploying_with_nearest_pins_updates_the_api_and_a_reload_keeps_the_mode(tmp_path):
    from cortexd.daemon.projects import reload_projects

    exact = load_project(project(tmp_path / "a", api("alpha")))
    relaxed = load_project(exact.path, nearest_pins=True)  # `cortexd deploy --nearest-pins`
    assert relaxed.specs[0].nearest_pins and relaxed.specs[0].spec_hash != exact.specs[0].spec_hash
    assert deploy_summary([exact], [relaxed], [relaxed]).updated == ["alpha"]
    assert roll_reasons([exact], [relaxed]) == {"alpha": "nearest pins turned on"}
    assert roll_reasons([relaxed], [exact]) == {"alpha": "nearest pins turned off"}
    reloaded, problems = reload_projects([relaxed])
    assert not problems and reloaded[0].specs[0].spec_hash == relaxed.specs[0].spec_hash


def test_deploy_says_a_traffic_splitter_and_a_batch_api_as_what_they_are(tmp_path):
    splitter = ("- name: split\n  kind: TrafficSplitter\n  apis:\n    - name: alpha\n      weight: {}\n"
                "    - name: beta\n      weight: {}\n")
    batch = "- name: jobs\n  kind: BatchAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
    apis = api("alpha") + api("beta")
    first = load_project(project(tmp_path / "a", apis + splitter.format(60, 40) + batch))
    assert deploy_lines(deploy_summary([], [first], [first]).to_json()) == [
        "created: api 'alpha'", "created: api 'beta'", "created: batch api 'jobs'",
        "created: traffic splitter 'split'"]
    changed = load_project(project(tmp_path / "a", apis + splitter.format(50, 50) + batch))
    assert deploy_lines(deploy_summary([first], [changed], [changed]).to_json()) == [
        "updated: traffic splitter 'split'",  # no rolling update: a splitter has no replicas
        "unchanged: api 'alpha'", "unchanged: api 'beta'", "unchanged: batch api 'jobs'"]
    assert deploy_lines({"created": []}) == ["deployed: no apis"]
