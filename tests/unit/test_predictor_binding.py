"""Loading predictors: binding by parameter name, and the start-up messages for signature mistakes."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from predictor_runtime.contract import RuntimeSpec
from predictor_runtime.predictors import (
    PREDICT_PARAMS,
    RUNTIME_PACKAGES,
    PredictorSignatureError,
    StartupError,
    UnsupportedPredictor,
    bind,
    load_predictor,
)


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch):
    """Loading a predictor edits sys.path and sys.modules: undo that after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def make_spec(tmp_path: Path, code: str, kind: str = "python", config: dict | None = None,
              model_path: str | None = None, filename: str = "predictor.py") -> RuntimeSpec:
    path = tmp_path / filename
    path.write_text(textwrap.dedent(code))
    return RuntimeSpec.from_json({
        "name": "api", "endpoint": "/api", "project_dir": str(tmp_path),
        "predictor": {"type": kind, "path": str(path), "python_path": str(tmp_path),
                      "model_path": model_path, "models": None, "processes_per_replica": 1,
                      "threads_per_process": 1, "config": config if config is not None else {"k": "v"}},
    })


def load(tmp_path: Path, code: str, **kw):
    return load_predictor(make_spec(tmp_path, code, **kw))


def signature_error(tmp_path: Path, code: str, **kw) -> str:
    with pytest.raises(PredictorSignatureError) as info:
        load(tmp_path, code, **kw)
    return str(info.value)


# ---- constructor arguments ----------------------------------------------------------

@pytest.mark.parametrize("init, expected", [
    ("def __init__(self, config): self.seen = {'config': config}", {"config": {"k": "v"}}),
    ("def __init__(self, python_client): self.seen = {'python_client': python_client}",
     {"python_client": None}),
    ("def __init__(self, config, python_client): self.seen = {'config': config, 'python_client': python_client}",
     {"config": {"k": "v"}, "python_client": None}),
    ("def __init__(self, python_client, config): self.seen = {'config': config, 'python_client': python_client}",
     {"config": {"k": "v"}, "python_client": None}),
    ("def __init__(self): self.seen = {}", {}),
    ("pass", None),  # no __init__ at all
])
def test_constructor_receives_the_arguments_it_names(tmp_path, init, expected):
    p = load(tmp_path, f"""
        class PythonPredictor:
            seen = None
            {init}
            def predict(self):
                return self.seen
    """)
    assert p.predict({"x": 1}, {}, {}) == expected


def test_config_is_a_deep_copy(tmp_path):
    spec = make_spec(tmp_path, """
        class PythonPredictor:
            def __init__(self, config):
                config["nested"]["changed"] = True
            def predict(self):
                return 1
    """, config={"nested": {}})
    load_predictor(spec)
    assert spec.predictor.config == {"nested": {}}


# ---- predict / post_predict ------------------------------------------------------

@pytest.mark.parametrize("params, expected", [
    ("self", []),
    ("self, payload", ["payload"]),
    ("self, headers", ["headers"]),
    ("self, query_params, payload", ["payload", "query_params"]),
    ("self, payload, query_params, headers", ["payload", "query_params", "headers"]),
    ("self, headers, payload, query_params", ["payload", "query_params", "headers"]),
    ("self, payload, extra=5", ["payload"]),
    ("self, **kwargs", ["payload", "query_params", "headers"]),
])
def test_predict_receives_only_what_it_declares(tmp_path, params, expected):
    names = [n.strip().split("=")[0].lstrip("*") for n in params.split(",")[1:]]
    body = "{" + ", ".join(f"'{n}': {n}" for n in names if n not in ("extra", "kwargs")) + "}"
    if "kwargs" in names:
        body = "dict(kwargs)"
    p = load(tmp_path, f"""
        class PythonPredictor:
            def predict({params}):
                return {body}
    """)
    out = p.predict("P", {"q": "1"}, {"h": "2"})
    assert sorted(out) == sorted(expected)
    values = {"payload": "P", "query_params": {"q": "1"}, "headers": {"h": "2"}}
    assert out == {k: values[k] for k in expected}
    assert p.is_async is False


def test_async_predict_is_flagged_and_awaitable(tmp_path):
    p = load(tmp_path, """
        class PythonPredictor:
            async def predict(self, payload):
                return payload * 2
    """)
    assert p.is_async is True
    assert asyncio.run(p.predict(21, {}, {})) == 42


def test_post_predict_gets_the_prediction_and_declared_parameters(tmp_path):
    p = load(tmp_path, """
        class PythonPredictor:
            def __init__(self):
                self.log = []
            def predict(self, payload):
                return payload + 1
            def post_predict(self, response, headers):
                self.log.append((response, headers))
                return self.log
    """)
    assert p.post_predict is not None
    prediction = p.predict(1, {}, {})
    assert p.post_predict(prediction, 1, {}, {"h": "x"}) == [(2, {"h": "x"})]


def test_no_post_predict(tmp_path):
    p = load(tmp_path, """
        class PythonPredictor:
            def predict(self):
                return 0
    """)
    assert p.post_predict is None


def test_static_predict_is_bound_without_self(tmp_path):
    p = load(tmp_path, """
        class PythonPredictor:
            @staticmethod
            def predict(payload):
                return payload
    """)
    assert p.predict("x", {}, {}) == "x"


# ---- start-up messages for signature mistakes -------------------------------------

def test_unknown_init_parameter(tmp_path):
    msg = signature_error(tmp_path, """
        class PythonPredictor:
            def __init__(self, cfg):
                pass
            def predict(self, payload):
                return payload
    """)
    assert msg == ("predictor.py: class PythonPredictor: __init__ takes an unknown parameter 'cfg'; "
                   "expected any of (self, config, python_client)")


def test_unknown_predict_parameter(tmp_path):
    msg = signature_error(tmp_path, """
        class PythonPredictor:
            def predict(self, body):
                return body
    """)
    assert msg == ("predictor.py: class PythonPredictor: predict takes an unknown parameter 'body'; "
                   "expected any of (self, payload, query_params, headers)")


def test_unknown_post_predict_parameter(tmp_path):
    msg = signature_error(tmp_path, """
        class PythonPredictor:
            def predict(self, payload):
                return payload
            def post_predict(self, result):
                pass
    """)
    assert msg == ("predictor.py: class PythonPredictor: post_predict takes an unknown parameter 'result'; "
                   "expected any of (self, response, payload, query_params, headers)")


def test_missing_class(tmp_path):
    msg = signature_error(tmp_path, """
        class Predictor:
            def predict(self, payload):
                return payload
    """)
    assert msg == ("predictor.py: no class PythonPredictor defined; expected class PythonPredictor with "
                   "def __init__(self, config, python_client) and "
                   "def predict(self, payload, query_params, headers) (each parameter optional)")


def test_missing_class_points_at_the_legacy_format(tmp_path):
    msg = signature_error(tmp_path, """
        def predict(sample, metadata):
            return sample
    """)
    assert "no class PythonPredictor defined (this file defines a module-level predict(): " \
           "that is the legacy module predictor format" in msg


def test_missing_predict(tmp_path):
    msg = signature_error(tmp_path, """
        class PythonPredictor:
            def __init__(self, config):
                pass
    """)
    assert msg == ("predictor.py: class PythonPredictor: predict is missing; expected "
                   "def predict(self, payload, query_params, headers) taking any of those parameters")


def test_missing_load_model_when_models_are_configured(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    msg = signature_error(tmp_path, """
        class PythonPredictor:
            def __init__(self, python_client):
                pass
            def predict(self, payload):
                return payload
    """, model_path=str(model))
    assert msg == ("predictor.py: class PythonPredictor: load_model is missing; it is required when models "
                   "are configured (predictor.model_path or predictor.models); "
                   "expected def load_model(self, model_path) returning the model")


def test_signatures_are_checked_before_init_runs(tmp_path):
    marker = tmp_path / "init-ran"
    signature_error(tmp_path, f"""
        class PythonPredictor:
            def __init__(self, config):
                open({str(marker)!r}, "w").close()
            def predict(self, nope):
                pass
    """)
    assert not marker.exists()


def test_errors_in_user_code_propagate_unchanged(tmp_path):
    with pytest.raises(ZeroDivisionError):
        load(tmp_path, """
            class PythonPredictor:
                def __init__(self):
                    1 / 0
                def predict(self):
                    pass
        """)


@pytest.mark.parametrize("kind, cls, module", [("tensorflow", "TensorFlowPredictor", "tensorflow"),
                                               ("onnx", "ONNXPredictor", "onnxruntime")])
def test_tensorflow_and_onnx_without_their_package_are_refused_clearly(tmp_path, monkeypatch, kind, cls, module):
    monkeypatch.setitem(RUNTIME_PACKAGES, kind, ("no_such_package_for_cortexd", kind))
    with pytest.raises(UnsupportedPredictor) as info:
        load(tmp_path, "", kind=kind)
    assert str(info.value).startswith(f"predictor type '{kind}' ({cls}) needs the no_such_package_for_cortexd "
                                      "package, which is not installed in this replica")
    assert f"pip install 'cortexd[{kind}]'" in str(info.value)


def test_s3_model_paths_without_boto3_are_refused_at_start_up(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    with pytest.raises(StartupError) as info:
        load(tmp_path, """
            class PythonPredictor:
                def __init__(self, python_client):
                    pass
                def load_model(self, model_path):
                    return model_path
                def predict(self):
                    pass
        """, model_path="s3://bucket/model")
    assert "s3:// model paths need boto3" in str(info.value)


# ---- python_client with a local model_path ------------------------------------------

def test_python_client_loads_the_latest_version_with_load_model(tmp_path):
    model = tmp_path / "model"
    (model / "1").mkdir(parents=True)
    (model / "2").mkdir()
    p = load(tmp_path, """
        class PythonPredictor:
            def __init__(self, python_client):
                self.client = python_client
                self.loads = []
                self.at_init = python_client.get_model()
            def load_model(self, model_path):
                self.loads.append(model_path)
                return "model@" + model_path.rsplit("/", 1)[-1]
            def predict(self, payload):
                return [self.at_init, self.client.get_model(), self.client.get_model(model_version="1"), self.loads]
    """, model_path=str(model))
    at_init, latest, v1, loads = p.predict(None, {}, {})
    assert (at_init, latest, v1) == ("model@2", "model@2", "model@1")
    assert loads == [str(model / "2"), str(model / "1")]  # each version loaded once
    described = p.describe()["model"]
    assert (described["path"], described["versions"], described["loaded_versions"]) == (str(model), [1, 2], [1, 2])


# ---- legacy module predictors -----------------------------------------------------------

def test_legacy_init_metadata(tmp_path):
    p = load(tmp_path, """
        state = {}
        def init(metadata):
            state["m"] = metadata["k"]
        def predict(sample, metadata):
            return [state["m"], sample, metadata]
    """, kind="legacy")
    assert p.predict({"a": 1}, {}, {}) == ["v", {"a": 1}, {"k": "v"}]


def test_legacy_init_model_path_and_metadata(tmp_path):
    p = load(tmp_path, """
        state = {}
        def init(model_path, metadata):
            state["path"] = model_path
            metadata["seen"] = True  # the same metadata dict reaches predict
        def predict(metadata, sample):
            return [state["path"], sample, metadata]
    """, kind="legacy", model_path="/models/m")
    assert p.predict(3, {}, {}) == ["/models/m", 3, {"k": "v", "seen": True}]
    assert p.metadata == {"model_path": "/models/m"}


def test_legacy_without_init_and_sample_only(tmp_path):
    p = load(tmp_path, """
        def predict(sample):
            return sample * 2
    """, kind="legacy")
    assert p.predict(4, {}, {}) == 8


def test_legacy_unknown_parameter(tmp_path):
    msg = signature_error(tmp_path, """
        def init(path, metadata):
            pass
        def predict(sample, metadata):
            return sample
    """, kind="legacy")
    assert msg == "predictor.py: init takes an unknown parameter 'path'; expected any of (model_path, metadata)"


def test_legacy_missing_predict(tmp_path):
    msg = signature_error(tmp_path, """
        def init(metadata):
            pass
    """, kind="legacy")
    assert msg == ("predictor.py: predict is missing; a legacy predictor module defines "
                   "def predict(sample, metadata) and optionally def init(metadata) or "
                   "def init(model_path, metadata)")


@pytest.mark.parametrize("names", [("payload",), ("payload", "query_params"), ("query_params",),
                                   ("headers", ), ("payload", "headers"), PREDICT_PARAMS])
def test_predict_gets_exactly_the_parameters_it_declares_by_name(names):
    # the common shapes take a fast path (literal keywords); every shape passes the same values
    def predict(**kw):
        return kw

    values = {"payload": "P", "query_params": "Q", "headers": "H"}
    called = bind(predict, names, PREDICT_PARAMS)(*values.values())
    assert called == {n: values[n] for n in names}


def test_keyword_only_parameters_in_another_order_are_filled_by_name():
    def predict(*, query_params, payload):
        return payload, query_params

    assert bind(predict, ("payload", "query_params"), PREDICT_PARAMS)("P", "Q", "H") == ("P", "Q")
