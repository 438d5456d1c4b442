"""`kind: BatchAPI` (Cortex 0.23's docs/deployments/batch-api/api-configuration.md): its fields, the rules
it shares with a RealtimeAPI's predictor, its own (one process, one thread per worker), each problem with
file:line; a project carrying it, and `build`/`export kubernetes` refusing it by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexd.daemon.projects import load_project
from cortexd.spec.load import load_documents
from tests.builders import config_problems

PREDICTOR = ("class PythonPredictor:\n    def __init__(self, config, job_spec): pass\n"
             "    def predict(self, payload, batch_id): pass\n")


def batch(name: str = "b", extra: str = "", predictor_extra: str = "") -> str:
    return (f"- name: {name}\n  kind: BatchAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
            f"{predictor_extra}{extra}")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "predictor.py").write_text(PREDICTOR)
    return tmp_path


def test_cortex_example_shape_loads_with_its_defaults(folder):
    text = batch("image-classifier", extra="  compute:\n    cpu: 1\n",
                 predictor_extra="    config:\n      dest: s3://bucket/out\n")
    loaded = load_documents(text, "cortex.yaml", str(folder))
    assert loaded.apis == ()
    (b,) = loaded.batch_apis
    assert (b.name, b.kind, b.predictor.type, b.predictor.config) == (
        "image-classifier", "BatchAPI", "python", {"dest": "s3://bucket/out"})
    assert (b.networking.endpoint, b.networking.local_port, b.compute.cpu, b.source_line) == (
        "/image-classifier", 8888, 1.0, 1)
    assert b.predictor.path == str(folder / "predictor.py")


def test_onnx_and_tensorflow_predictors_take_their_model_path(folder):
    (folder / "model.onnx").write_bytes(b"onnx")
    text = batch("o", predictor_extra="    model_path: model.onnx\n").replace("type: python", "type: onnx")
    (b,) = load_documents(text, "cortex.yaml", str(folder)).batch_apis
    assert (b.predictor.type, b.predictor.model_path) == ("onnx", str(folder / "model.onnx"))
    problems = config_problems(folder, batch("t").replace("type: python", "type: tensorflow"))
    assert len(problems) == 1 and problems[0].startswith("cortex.yaml:3:3: batch api 't': predictor")


def test_realtime_only_sections_are_unknown_fields(folder):
    problems = config_problems(folder, batch(extra="  autoscaling:\n    min_replicas: 2\n  update_strategy:\n"
                                                   "    max_surge: 1\n"))
    assert problems == [
        "cortex.yaml:6:3: batch api 'b': autoscaling: unknown field 'autoscaling' (valid fields here: name, kind, "
        "predictor, networking, compute)",
        "cortex.yaml:8:3: batch api 'b': update_strategy: unknown field 'update_strategy' (valid fields here: name, "
        "kind, predictor, networking, compute)"]


@pytest.mark.parametrize("key", ["processes_per_replica", "threads_per_process"])
def test_one_process_and_one_thread_per_worker(folder, key):
    assert config_problems(folder, batch(predictor_extra=f"    {key}: 2\n")) == [
        f"cortex.yaml:6:{7 + len(key)}: batch api 'b': predictor.{key}: not supported for kind BatchAPI (a worker "
        "runs one batch at a time); remove it or set it to 1 (found 2)"]
    assert load_documents(batch(predictor_extra=f"    {key}: 1\n"), "cortex.yaml", str(folder)).batch_apis


def test_predictor_rules_shared_with_realtime_apis(folder):
    text = batch(predictor_extra="    env:\n      CORTEX_X: '1'\n").replace("predictor.py\n", "nope.py\n")
    problems = config_problems(folder, text)
    assert [p.split(": ", 3)[2] for p in problems] == ["predictor.path", "predictor.env.CORTEX_X"]
    assert all(p.startswith("cortex.yaml:") and "batch api 'b'" in p for p in problems)


def test_names_and_routes_are_unique_across_kinds(folder):
    realtime = "- name: b\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
    problems = config_problems(folder, realtime + batch())
    assert problems == [
        "cortex.yaml:6:3: batch api 'b': networking.endpoint: endpoint /b on port 8888 is already used by api 'b' "
        "(cortex.yaml:1); give one of them another networking.endpoint or networking.local_port",
        "cortex.yaml:6:9: batch api 'b': name: api name 'b' is already used by the api at cortex.yaml:1; api "
        "names must be unique"]


def test_a_splitter_cannot_target_a_batch_api(folder):
    text = batch() + "- name: s\n  kind: TrafficSplitter\n  apis:\n    - name: b\n      weight: 100\n"
    assert config_problems(folder, text) == [
        "cortex.yaml:9:13: traffic splitter 's': apis[0].name: 'b' is a BatchAPI; a splitter routes to Realtime "
        "APIs only"]


def test_a_project_carries_its_batch_apis(folder):
    (folder / "cortex.yaml").write_text(batch())
    project = load_project(str(folder / "cortex.yaml"))
    assert ([b.name for b in project.batch_apis], project.specs, project.names) == (["b"], (), ["b"])
