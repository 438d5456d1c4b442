"""Legacy `kind: api` / `kind: deployment` documents, and the kinds cortexd refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexd.spec.load import load_documents
from cortexd.spec.units import Percent
from tests.builders import config_problems as problems


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "predictor.py").write_text("def predict(sample, metadata):\n    return 1\n")
    return tmp_path


def load(project: Path, text: str):
    return load_documents(text, "cortex.yaml", str(project))




SEED_SHAPE = """\
- kind: deployment
  name: iris

- kind: api
  name: classifier
  python_path: lib
  python:
    predictor: predictor.py
  tracker:
    key: label
    model_type: classification
  compute:
    min_replicas: 2
    max_replicas: 4
    init_replicas: 3
    cpu: 500m
    gpu: 1
    mem: 1Gi
  metadata:
    model: model.json
    threshold: 0.5
"""


def test_seed_shape_translates_to_a_legacy_apispec(project):
    (project / "lib").mkdir()
    (api,) = load(project, SEED_SHAPE).apis
    assert (api.name, api.kind, api.source_line) == ("classifier", "api", 4)
    p = api.predictor
    assert p.type == "legacy"
    assert p.path == str(project / "predictor.py")
    assert p.python_path == str(project / "lib")
    assert p.config == {"model": "model.json", "threshold": 0.5}
    assert p.model_path is None and (p.processes_per_replica, p.threads_per_process) == (1, 1)
    assert api.networking.endpoint == "/iris/classifier"
    assert (api.compute.cpu, api.compute.gpu, api.compute.mem) == (0.5, 1, 2**30)
    a = api.autoscaling
    assert (a.min_replicas, a.max_replicas, a.init_replicas) == (2, 4, 3)
    assert a.target_cpu_utilization == 80
    # everything else: the RealtimeAPI defaults
    assert (a.target_replica_concurrency, a.max_replica_concurrency, a.window) == (1.0, 1024, 60.0)
    assert (api.update_strategy.max_surge, api.update_strategy.max_unavailable) == (Percent(25), Percent(25))
    assert (api.monitoring.model_type, api.monitoring.key) == ("classification", "label")
    assert api.raw["kind"] == "api" and api.raw["predictor"]["type"] == "legacy"
    assert api.runtime_spec().predictor.type == "legacy"


def test_cortex_0_10_predictor_shape(project):
    (project / "model.onnx").write_bytes(b"")
    text = """\
- kind: api
  name: sentiment
  predictor:
    path: predictor.py
    model: model.onnx
    python_path: .
    metadata: {labels: [neg, pos]}
  compute:
    target_cpu_utilization: 50
"""
    (api,) = load(project, text).apis
    p = api.predictor
    assert (p.type, p.path, p.model_path, p.python_path) == (
        "legacy", str(project / "predictor.py"), str(project / "model.onnx"), str(project))
    assert p.config == {"labels": ["neg", "pos"]}
    assert api.networking.endpoint == "/sentiment"  # no deployment entry
    assert api.autoscaling.target_cpu_utilization == 50
    assert (api.autoscaling.min_replicas, api.autoscaling.max_replicas, api.autoscaling.init_replicas) == (1, 100, 1)
    assert api.monitoring is None


def test_s3_model_in_legacy_shape(project):
    text = "- kind: api\n  name: a\n  predictor: {type: python, path: predictor.py, model: s3://bucket/model.pkl}\n"
    assert load(project, text).apis[0].predictor.model_path == "s3://bucket/model.pkl"


def test_minimal_legacy_api_defaults(project):
    (api,) = load(project, "- kind: api\n  name: my-api\n  python:\n    predictor: predictor.py\n").apis
    assert api.networking.endpoint == "/my-api"
    assert api.autoscaling.target_cpu_utilization == 80
    assert (api.compute.cpu, api.compute.gpu, api.compute.mem) == (0.2, 0, None)
    assert api.predictor.config == {}


def test_explicit_endpoint_wins_and_is_normalised(project):
    text = "- kind: deployment\n  name: d\n- kind: api\n  name: a\n  endpoint: custom/path/\n" \
           "  python: {predictor: predictor.py}\n"
    assert load(project, text).apis[0].networking.endpoint == "/custom/path"


def test_deployment_entry_may_come_after_the_apis(project):
    text = "- kind: api\n  name: a\n  python: {predictor: predictor.py}\n- kind: deployment\n  name: dep\n"
    assert load(project, text).apis[0].networking.endpoint == "/dep/a"


def test_legacy_and_realtime_apis_in_one_file(project):
    text = SEED_SHAPE.replace("  python_path: lib\n", "") + \
        "- name: modern\n  kind: RealtimeAPI\n  predictor: {type: python, path: predictor.py}\n"
    assert [(a.name, a.kind, a.predictor.type) for a in load(project, text).apis] == [
        ("classifier", "api", "legacy"), ("modern", "RealtimeAPI", "python")]


# -- errors use the legacy field names ------------------------------------------------


def test_legacy_schema_errors_name_legacy_fields(project):
    text = """\
- kind: api
  name: a
  python:
    predictor: predictor.py
  compute:
    min_replicas: many
    target_cpu_utilization: 120
  tracker:
    model_type: ranking
  replicas: 2
"""
    assert problems(project, text) == [
        "cortex.yaml:6:19: api 'a': compute.min_replicas: expected an integer; found the string 'many'",
        "cortex.yaml:7:29: api 'a': compute.target_cpu_utilization: expected a value <= 100; found 120",
        "cortex.yaml:9:17: api 'a': tracker.model_type: expected one of classification, regression; found "
        "the string 'ranking'",
        "cortex.yaml:10:3: api 'a': replicas: unknown field 'replicas' (valid fields here: kind, name, endpoint, "
        "python_path, python, predictor, tracker, compute, metadata)",
    ]


def test_legacy_rule_errors_are_mapped_back_to_legacy_fields(project):
    text = """\
- kind: api
  name: a
  python:
    predictor: missing.py
  compute:
    min_replicas: 5
    max_replicas: 2
"""
    assert problems(project, text) == [
        f"cortex.yaml:4:16: api 'a': python.predictor: file not found: {project / 'missing.py'} (relative paths "
        f"start at the cortex.yaml folder, {project})",
        "cortex.yaml:6:19: api 'a': compute.min_replicas: expected a value <= max_replicas (2); found 5",
    ]


def test_legacy_0_10_rule_errors_are_mapped_back(project):
    text = "- kind: api\n  name: a\n  predictor:\n    path: predictor.py\n    model: weights/\n"
    assert problems(project, text) == [
        f"cortex.yaml:5:12: api 'a': predictor.model: not found: {project / 'weights'} (relative paths start "
        f"at the cortex.yaml folder, {project})"]
    text = "- kind: api\n  name: a\n  predictor:\n    path: predictor.py\n  endpoint: /x/../y\n"
    assert problems(project, text) == [
        "cortex.yaml:5:13: api 'a': endpoint: expected a URL path such as \"/iris-classifier\" (letters, digits, "
        "\"-\", \"_\", \".\", \"~\" and single \"/\" between segments; no \".\" or \"..\" segments, no query "
        "string); found the string '/x/../y'",
    ]


def test_legacy_predictor_is_required_once(project):
    assert problems(project, "- kind: api\n  name: a\n") == [
        "cortex.yaml:1:3: api 'a': python: missing required field; expected python: {predictor: <path to the "
        "predictor python file>} (or predictor: {path: ...})"]
    text = "- kind: api\n  name: a\n  python: {predictor: predictor.py}\n  predictor: {path: predictor.py}\n"
    assert problems(project, text) == [
        "cortex.yaml:4:3: api 'a': predictor: give the predictor either as python.predictor or as predictor.path "
        "(Cortex 0.10-0.12), not both"]


def test_legacy_predictor_type_must_be_python(project):
    text = "- kind: api\n  name: a\n  predictor: {type: tensorflow, path: predictor.py}\n"
    assert problems(project, text) == [
        "cortex.yaml:3:21: api 'a': predictor.type: expected 'python'; found the string 'tensorflow'"]


def test_legacy_duplicate_metadata_refused(project):
    text = "- kind: api\n  name: a\n  metadata: {a: 1}\n  predictor: {path: predictor.py, metadata: {b: 2}}\n"
    assert problems(project, text) == [
        "cortex.yaml:4:35: api 'a': predictor.metadata: metadata is given twice (at the top level and in "
        "predictor); keep one"]


def test_legacy_endpoint_collisions_are_detected(project):
    text = "- kind: deployment\n  name: d\n- kind: api\n  name: a\n  python: {predictor: predictor.py}\n" \
           "- name: b\n  kind: RealtimeAPI\n  predictor: {type: python, path: predictor.py}\n" \
           "  networking: {endpoint: /d/a}\n"
    assert problems(project, text) == [
        "cortex.yaml:9:26: api 'b': networking.endpoint: endpoint /d/a on port 8888 is already used by api 'a' "
        "(cortex.yaml:3); give one of them another networking.endpoint or networking.local_port"]


def test_deployment_entries(project):
    text = "- kind: deployment\n- kind: deployment\n  name: b\n  extra: 1\n"
    assert problems(project, text) == [
        "cortex.yaml:1:3: name: missing required field; expected deployment name, used in legacy API endpoints "
        "(/<deployment_name>/<api_name>)",
        "cortex.yaml:2:9: api 'b': kind: only one kind: deployment entry is allowed per file (the first is on "
        "line 1)",
        "cortex.yaml:4:3: api 'b': extra: unknown field 'extra' (valid fields here: kind, name)",
    ]


# -- kinds ------------------------------------------------------------------------------


SERVED = "it serves RealtimeAPI, BatchAPI, TrafficSplitter, api (legacy), deployment (legacy)"


@pytest.mark.parametrize(("kind", "said"), [
    ("TaskAPI", "TaskAPI (introduced in Cortex 0.27, a later release than the 0.23 cortexd follows) is not "
                "served by cortexd"),
    ("AsyncAPI", "AsyncAPI (introduced in Cortex 0.31, a later release than the 0.23 cortexd follows) is not "
                 "served by cortexd"),
])
def test_every_cortex_kind_not_served_is_refused_alike_naming_its_release(project, kind, said):
    text = f"- name: x\n  kind: {kind}\n  predictor: {{type: python, path: predictor.py}}\n"
    assert problems(project, text) == [f"cortex.yaml:2:9: api 'x': kind: {said}; {SERVED}"]


def test_kind_names_from_before_cortex_0_19_name_what_they_became(project):
    text = "- name: x\n  kind: SyncAPI\n- name: y\n  kind: APISplitter\n"
    assert problems(project, text) == [
        "cortex.yaml:2:9: api 'x': kind: SyncAPI is the name Cortex used for RealtimeAPI before its 0.19 "
        "release: use kind: RealtimeAPI",
        "cortex.yaml:4:9: api 'y': kind: APISplitter is the name Cortex used for TrafficSplitter before its "
        "0.19 release: use kind: TrafficSplitter"]


def test_a_near_miss_of_a_kind_is_suggested(project):
    (message,) = problems(project, "- name: x\n  kind: realtimeAPI\n")
    assert message.endswith("found the string 'realtimeAPI'; did you mean 'RealtimeAPI'?")


def test_missing_and_unknown_kinds_list_the_valid_kinds(project):
    text = "- name: x\n  predictor: {type: python, path: predictor.py}\n- name: y\n  kind: Realtime\n"
    assert problems(project, text) == [
        "cortex.yaml:1:3: api 'x': kind: missing required field; expected one of RealtimeAPI, BatchAPI, "
        "TrafficSplitter, api (legacy), deployment (legacy)",
        "cortex.yaml:4:9: api 'y': kind: unknown kind; expected one of RealtimeAPI, BatchAPI, TrafficSplitter, "
        "api (legacy), deployment (legacy); found the string 'Realtime'; did you mean 'RealtimeAPI'?",
    ]


def test_refused_kinds_do_not_hide_other_apis_problems(project):
    text = "- name: x\n  kind: TaskAPI\n- name: y\n  kind: RealtimeAPI\n  predictor: {type: python, path: nope.py}\n"
    msgs = problems(project, text)
    assert len(msgs) == 2
    assert msgs[0].endswith(f"is not served by cortexd; {SERVED}")
    assert msgs[1].startswith("cortex.yaml:5:35: api 'y': predictor.path: file not found")


def test_kind_of_the_wrong_type(project):
    assert problems(project, "- name: x\n  kind: [RealtimeAPI]\n") == [
        "cortex.yaml:2:9: api 'x': kind: expected one of RealtimeAPI, BatchAPI, TrafficSplitter, api (legacy), "
        "deployment (legacy); found a list of 1 item"]
