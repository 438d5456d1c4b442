"""The runtime contract (predictor_runtime/contract.py): built once from an APISpec, written and read
by one serialiser, defaults set once, and every key that does not fit named."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from pathlib import Path

import pytest

from cortexd.backends.container_args import pids_limit
from cortexd.spec.load import load_documents
from predictor_runtime import server
from predictor_runtime.contract import (
    BatchingSpec,
    ContractError,
    ModelSpec,
    ModelsSpec,
    MonitoringSpec,
    ReplicaLimits,
    RuntimePredictor,
    RuntimeSpec,
    read_spec,
)
from tests.builders import api_spec

FULL = """\
- name: full
  kind: RealtimeAPI
  predictor:
    type: tensorflow
    path: predictor.py
    models:
      paths:
        - name: local
          model_path: models/a
          signature_key: sig_a
        - name: remote
          model_path: s3://bucket/b/
      signature_key: predict
      cache_size: 1
      disk_cache_size: 2
    server_side_batching:
      max_batch_size: 4
      batch_interval: 100ms
    processes_per_replica: 1
    threads_per_process: 4
    config: {labels: [a, b], nested: {x: 1}}
  networking:
    endpoint: my/endpoint/
  monitoring:
    model_type: classification
    key: label
"""


@pytest.fixture
def full_api(tmp_path: Path):
    (tmp_path / "predictor.py").write_text("class TensorFlowPredictor:\n    pass\n")
    (tmp_path / "models" / "a").mkdir(parents=True)
    (tmp_path / "models" / "a" / "saved_model.pb").write_bytes(b"")
    (api,) = load_documents(FULL, "cortex.yaml", str(tmp_path)).apis
    return api


MINIMAL = {"name": "api", "predictor": {"type": "python", "path": "/p/predictor.py"}}


def predictor_json(**fields) -> dict:
    return {"name": "api", "predictor": {"type": "python", "path": "/p/predictor.py", **fields}}


def problem(data) -> str:
    with pytest.raises(ContractError) as info:
        RuntimeSpec.from_json(data)
    return str(info.value)


# ---- built once from the APISpec --------------------------------------------------------


def test_the_daemon_builds_the_contract_from_the_api_spec(full_api, tmp_path):
    runtime = full_api.runtime_spec()
    p = runtime.predictor
    assert (runtime.name, runtime.endpoint, runtime.project_dir) == ("full", "/my/endpoint", str(tmp_path))
    assert (p.type, p.path, p.python_path) == ("tensorflow", str(tmp_path / "predictor.py"), str(tmp_path))
    assert (p.processes_per_replica, p.threads_per_process) == (1, 4)
    assert p.config == {"labels": ["a", "b"], "nested": {"x": 1}}
    assert p.server_side_batching == BatchingSpec(max_batch_size=4, batch_interval=0.1)
    assert p.models == ModelsSpec(
        paths=(ModelSpec("local", str(tmp_path / "models" / "a"), "sig_a"), ModelSpec("remote", "s3://bucket/b/")),
        signature_key="predict", cache_size=1, disk_cache_size=2)
    assert runtime.monitoring == MonitoringSpec("classification", "label")
    # the sections are the spec's own values, not copies made field by field
    assert p.models is full_api.predictor.models and p.server_side_batching is full_api.predictor.server_side_batching


def test_a_cortex_yaml_value_reaches_the_replica_as_the_same_typed_value(full_api, tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(full_api.runtime_spec().dumps())
    assert read_spec(str(path)) == full_api.runtime_spec()
    assert read_spec(str(path)).predictor.threads_per_process == 4


def test_pids_limit_reads_the_typed_counts():
    spec = api_spec()
    assert pids_limit(spec) == 512
    predictor = dataclasses.replace(spec.predictor, processes_per_replica=8, threads_per_process=100)
    assert pids_limit(dataclasses.replace(spec, predictor=predictor)) == 8 * (100 + 64) + 64


# ---- one serialiser: round trip -----------------------------------------------------------


def test_round_trip_through_json_keeps_every_field(full_api):
    runtime = full_api.runtime_spec()
    assert RuntimeSpec.loads(runtime.dumps()) == runtime
    assert RuntimeSpec.from_json(runtime.to_json()) == runtime
    # one JSON text for every writer: sorted keys (a baked spec's bytes name its image)
    assert runtime.dumps() == json.dumps(runtime.to_json(), indent=1, sort_keys=True)


def test_the_json_keeps_the_documented_shape(full_api):
    doc = full_api.runtime_spec().to_json()
    assert list(doc) == ["name", "endpoint", "project_dir", "predictor", "monitoring"]
    assert list(doc["predictor"]) == ["type", "path", "python_path", "model_path", "signature_key", "models",
                                      "server_side_batching", "processes_per_replica", "threads_per_process",
                                      "config"]
    assert doc["predictor"]["models"]["paths"][1] == {"name": "remote", "path": "s3://bucket/b/",
                                                      "signature_key": None}
    assert doc["predictor"]["server_side_batching"] == {"max_batch_size": 4, "batch_interval": 0.1}


def test_with_paths_rewrites_local_paths_only(full_api, tmp_path):
    moved = full_api.runtime_spec().with_paths(lambda p: p.replace(str(tmp_path), "/img"))
    p = moved.predictor
    assert (moved.project_dir, p.path, p.python_path) == ("/img", "/img/predictor.py", "/img")
    assert [m.path for m in p.models.paths] == ["/img/models/a", "s3://bucket/b/"]
    assert p.threads_per_process == 4 and p.config == full_api.predictor.config


# ---- defaults, once -------------------------------------------------------------------------


def test_missing_keys_take_the_defaults_declared_once():
    spec = RuntimeSpec.from_json(MINIMAL)
    assert spec == RuntimeSpec(name="api", predictor=RuntimePredictor(type="python", path="/p/predictor.py"))
    p = spec.predictor
    assert (spec.endpoint, spec.project_dir, spec.monitoring) == ("/", None, None)
    assert (p.processes_per_replica, p.threads_per_process, p.config) == (1, 1, {})
    assert (p.models, p.server_side_batching, p.model_path, p.python_path) == (None, None, None, None)
    # nulls where a section is optional are read as absent, as the daemon writes them
    assert RuntimeSpec.from_json(predictor_json(models=None, server_side_batching=None)) == spec


def test_replica_limits_from_the_environment():
    reported: list[str] = []
    assert ReplicaLimits.from_environ({}, reported.append) == ReplicaLimits(32 * 2**20, 60.0, 10.0, 60.0)
    env = {"CORTEXD_MAX_BODY_SIZE": "4096", "CORTEXD_REQUEST_TIMEOUT": "7.5", "CORTEXD_DRAIN_SECONDS": "3",
           "CORTEXD_RUNTIME_HEADER_TIMEOUT": "0.5", "CORTEXD_RUNTIME_BODY_TIMEOUT": "2"}
    assert ReplicaLimits.from_environ(env, reported.append) == ReplicaLimits(4096, 7.5, 3.0, 0.5, 2.0)
    assert reported == []
    env = {"CORTEXD_MAX_BODY_SIZE": "0.5", "CORTEXD_REQUEST_TIMEOUT": "nan", "CORTEXD_DRAIN_SECONDS": "2"}
    assert ReplicaLimits.from_environ(env, reported.append) == ReplicaLimits(drain_seconds=2.0)
    assert reported == [
        "error: CORTEXD_MAX_BODY_SIZE='0.5' is not a positive number up to 9.0072e+15; using 33554432",
        "error: CORTEXD_REQUEST_TIMEOUT='nan' is not a positive number up to 9.0072e+15; using 60.0"]


# ---- what does not fit is named ---------------------------------------------------------------


def test_an_unknown_key_is_named_with_its_path():
    said = problem(predictor_json(threads=4))
    assert said.startswith("predictor.threads: unknown key (the spec was written by a newer cortexd")
    assert "install the daemon's cortexd" in said
    said = problem({**predictor_json(models={"paths": [{"name": "m", "path": "/m", "version": 2}]}), "x": 1})
    assert "predictor.models.paths[0].version: unknown key" in said and "x: unknown key" in said


def test_bad_values_are_named_all_at_once():
    said = problem(predictor_json(threads_per_process="4", processes_per_replica=0, type="pytorch",
                                  server_side_batching={"max_batch_size": True, "batch_interval": 0.1}))
    assert said == "; ".join([
        "predictor.type: expected one of python, tensorflow, onnx, legacy; found 'pytorch'",
        "predictor.server_side_batching.max_batch_size: expected an integer; found True",
        "predictor.processes_per_replica: expected a value >= 1; found 0",
        "predictor.threads_per_process: expected an integer; found '4'",
    ])


def test_missing_required_keys_and_wrong_shapes_are_named():
    assert problem({"predictor": {"type": "python"}}) == ("name: missing (a required key); "
                                                         "predictor.path: missing (a required key)")
    assert problem([]) == "the spec: expected an object; found list"
    assert problem(predictor_json(config=[1])) == "predictor.config: expected an object; found list"
    assert problem(predictor_json(models={"paths": {}})) == "predictor.models.paths: expected a list; found dict"
    with pytest.raises(ContractError, match=r"^not JSON: "):
        RuntimeSpec.loads("{")


def test_the_runtime_refuses_a_spec_that_does_not_fit(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(predictor_json(threads_per_process=2, batch=True)))
    assert server.main(["--spec", str(path), "--port", "1"]) == 1
    assert capsys.readouterr().err.startswith(
        f"[runtime] error: cannot read the runtime spec {path}: predictor.batch: unknown key")


# ---- the replica's event loop ------------------------------------------------------------------


def test_run_on_new_loop_cancels_leftover_tasks_and_shuts_the_default_executor_down():
    seen: dict = {}

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    async def main() -> None:
        seen["task"] = asyncio.ensure_future(forever())
        seen["thread"] = await asyncio.get_running_loop().run_in_executor(None, threading.current_thread)
        seen["loop"] = asyncio.get_running_loop()

    server.run_on_new_loop(main())
    assert seen["cancelled"] and seen["task"].cancelled()
    assert not seen["thread"].is_alive()  # joined, not left to the interpreter's exit
    assert seen["loop"].is_closed()
