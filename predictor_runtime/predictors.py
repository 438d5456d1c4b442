"""Loading a user's predictor and binding its methods by parameter name.

This is the boundary between predictor_runtime and user code: `load_predictor`
imports `predictor.path`, checks every signature BEFORE running any user
__init__ (so a typo is reported in a second, not after a slow model load), runs
the constructor (or the legacy `init`), and returns a `LoadedPredictor` whose
`predict` / `post_predict` take (payload, query_params, headers) and pass on
only what the user's functions declare. server.py calls nothing else here.

Supported: the three Cortex predictor types (`class PythonPredictor`,
`TensorFlowPredictor`, `ONNXPredictor`, whose constructors receive `config` and
`python_client` / `tensorflow_client` / `onnx_client`) and the legacy module
predictor (`init(metadata)` / `init(model_path, metadata)`, where an s3://
model is downloaded first and model_path is the local copy, and
`predict(sample, metadata)`). A tensorflow or onnx predictor in a replica
without TensorFlow / onnxruntime is refused with `UnsupportedPredictor`, naming
the extra to install.

Signature mistakes raise `PredictorSignatureError` with a message that names the
file, the class and function, what was found and the expected signature.
Exceptions raised by user code (import, __init__) propagate unchanged, so the
caller can print their traceback.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from predictor_runtime.clients.python import PythonClient
from predictor_runtime.contract import RuntimePredictor, RuntimeSpec
from predictor_runtime.model_disk_cache import default_root
from predictor_runtime.model_s3 import S3Source
from predictor_runtime.model_sources import ModelSourceError

PREDICT_PARAMS = ("payload", "query_params", "headers")
POST_PREDICT_PARAMS = ("response", "payload", "query_params", "headers")
INIT_PARAMS = ("config", "python_client")
INIT_PARAMS_BY_TYPE = {
    "python": INIT_PARAMS,
    "tensorflow": ("config", "tensorflow_client"),
    "onnx": ("config", "onnx_client"),
}
# the module each model type needs, and the cortexd extra that installs it
RUNTIME_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow"), "onnx": ("onnxruntime", "onnx")}
LEGACY_INIT_PARAMS = ("model_path", "metadata")
LEGACY_PREDICT_PARAMS = ("sample", "metadata")

CLASS_NAMES = {"python": "PythonPredictor", "tensorflow": "TensorFlowPredictor", "onnx": "ONNXPredictor"}


class StartupError(Exception):
    """A user-fixable start-up problem: the runtime prints the message (no traceback) and exits 1."""


class PredictorSignatureError(StartupError):
    """The predictor file does not have the shape its type requires (a user error)."""


class UnsupportedPredictor(StartupError):
    """The predictor type is valid Cortex but this runtime cannot serve it yet."""


@dataclass
class LoadedPredictor:
    """A constructed predictor, ready to serve.

    `predict(payload, query_params, headers)` calls the user's function with the
    parameters it declares; `is_async` says whether the result must be awaited.
    `post_predict(response, payload, query_params, headers)` likewise, or None.
    `metadata` is shown by GET / (model paths and versions when known);
    `describe`, when set, is called on each GET instead (live model versions,
    caches, batching counters).
    """

    type: str
    predict: Callable[[Any, Any, Any], Any]
    is_async: bool
    post_predict: Callable[[Any, Any, Any, Any], Any] | None = None
    post_predict_is_async: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    describe: Callable[[], dict[str, Any]] | None = None
    # predict or post_predict declares `headers`: only then are they made into starlette Headers
    wants_headers: bool = False


def _wants_headers(binding: ClassBinding) -> bool:
    return "headers" in binding.predict_names or "headers" in (binding.post_predict_names or ())


def display_path(path: str, project_dir: str | None) -> str:
    """The predictor path as the user wrote it (relative to the project) for messages."""
    if project_dir:
        try:
            rel = os.path.relpath(path, project_dir)
        except ValueError:
            return path
        if not rel.startswith(".."):
            return rel
    return path


def import_predictor_module(path: str, python_path: str | None = None,
                            project_dir: str | None = None) -> ModuleType:
    """Import the file at `path` with python_path and project_dir on sys.path.

    Registered in sys.modules under its file stem (unless that name is taken,
    e.g. a user file called `code.py`), so `import predictor` elsewhere in the
    user's code gets this same module instead of a second copy.
    """
    for extra in (project_dir, python_path):
        if extra and extra not in sys.path:
            sys.path.insert(0, extra)
    if not os.path.isfile(path):
        raise PredictorSignatureError(
            f"{display_path(path, project_dir)}: predictor file not found; "
            "check predictor.path in cortex.yaml (it is relative to the cortex.yaml folder)")
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else "cortex_predictor_module"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PredictorSignatureError(
            f"{display_path(path, project_dir)}: cannot be imported as a Python module; "
            "predictor.path must name a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


# ---- binding by parameter name ---------------------------------------------

def _parameters(fn: Callable[..., Any], drop_first: bool) -> list[inspect.Parameter]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: pass nothing
        return []
    return params[1:] if drop_first and params else params


def accepted_names(params: list[inspect.Parameter], allowed: tuple[str, ...],
                   where: str, expected: str) -> tuple[str, ...]:
    """The allowed names a function declares, in `allowed` order.

    An unknown parameter without a default is a mistake (it could never be
    filled); one with a default is left alone. `**kwargs` receives everything.
    """
    names = []
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            return allowed
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.name in allowed:
            if p.kind is p.POSITIONAL_ONLY:
                raise PredictorSignatureError(
                    f"{where} declares {p.name!r} as positional-only (before '/'); "
                    f"it is passed by name, so remove the '/'; expected any of {expected}")
            names.append(p.name)
        elif p.default is p.empty:
            raise PredictorSignatureError(
                f"{where} takes an unknown parameter {p.name!r}; expected any of {expected}")
    return tuple(n for n in allowed if n in names)


# the common shapes of predict, called with literal keywords: about 2 us a request less than
# building a dict of the picked values (timeit), on the path bench/runtime.py measures
_PREDICT_CALLS: dict[tuple[str, ...], Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    ("payload",): lambda fn: lambda payload, query_params, headers: fn(payload=payload),
    ("payload", "query_params"): lambda fn: lambda payload, query_params, headers: fn(
        payload=payload, query_params=query_params),
}


def bind(fn: Callable[..., Any], names: tuple[str, ...], order: tuple[str, ...]) -> Callable[..., Any]:
    """A function of all `order` values that calls `fn` with only `names`, by name."""
    if not names:
        return lambda *values: fn()
    if order == PREDICT_PARAMS and names in _PREDICT_CALLS:
        return _PREDICT_CALLS[names](fn)
    if names == order:
        return lambda *values: fn(**dict(zip(order, values)))
    picks = tuple((n, order.index(n)) for n in names)
    return lambda *values: fn(**{n: values[i] for n, i in picks})


def _method_params(cls: type, name: str) -> list[inspect.Parameter]:
    """A method's parameters without `self` (static and class methods handled)."""
    raw = inspect.getattr_static(cls, name)
    fn = getattr(cls, name)
    return _parameters(fn, drop_first=not isinstance(raw, (staticmethod, classmethod)))


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)


def _fmt(names: tuple[str, ...], self_: bool = True) -> str:
    return "(" + ", ".join((("self",) if self_ else ()) + names) + ")"


# ---- the python predictor type ------------------------------------------------

@dataclass(frozen=True)
class ClassBinding:
    """What `check_predictor_class` found: the names each method receives."""

    init_names: tuple[str, ...]
    predict_names: tuple[str, ...]
    post_predict_names: tuple[str, ...] | None  # None: no post_predict
    is_async: bool


def check_predictor_class(module: ModuleType, where: str, has_models: bool,
                          class_name: str = "PythonPredictor",
                          init_params: tuple[str, ...] = INIT_PARAMS) -> ClassBinding:
    """Check the predictor class's shape without constructing it.

    `has_models` asks for `load_model` (python predictors with models only).
    """
    cls = getattr(module, class_name, None)
    expected_class = (f"class {class_name} with def __init__{_fmt(init_params)} and "
                      f"def predict{_fmt(PREDICT_PARAMS)} (each parameter optional)")
    if cls is None:
        hint = ""
        if callable(getattr(module, "predict", None)):
            hint = (" (this file defines a module-level predict(): that is the legacy module "
                    "predictor format of `kind: api` projects, not `type: python`)")
        raise PredictorSignatureError(f"{where}: no class {class_name} defined{hint}; expected {expected_class}")
    if not inspect.isclass(cls):
        raise PredictorSignatureError(
            f"{where}: {class_name} is a {type(cls).__name__}, not a class; expected {expected_class}")
    here = f"{where}: class {class_name}:"

    init_names = accepted_names(_parameters(cls, drop_first=False),  # signature(cls) already drops self
                                init_params, f"{here} __init__", _fmt(init_params))

    predict = getattr(cls, "predict", None)
    if not callable(predict):
        raise PredictorSignatureError(
            f"{here} predict is missing; expected def predict{_fmt(PREDICT_PARAMS)} "
            "taking any of those parameters")
    predict_names = accepted_names(_method_params(cls, "predict"), PREDICT_PARAMS,
                                   f"{here} predict", _fmt(PREDICT_PARAMS))
    post_names = None
    post_predict = getattr(cls, "post_predict", None)
    if post_predict is not None:
        if not callable(post_predict):
            raise PredictorSignatureError(
                f"{here} post_predict is not a method; expected def post_predict{_fmt(POST_PREDICT_PARAMS)}")
        post_names = accepted_names(_method_params(cls, "post_predict"), POST_PREDICT_PARAMS,
                                    f"{here} post_predict", _fmt(POST_PREDICT_PARAMS))

    if has_models:
        load_model = getattr(cls, "load_model", None)
        expected_load = "def load_model(self, model_path)"
        if not callable(load_model):
            raise PredictorSignatureError(
                f"{here} load_model is missing; it is required when models are configured "
                f"(predictor.model_path or predictor.models); expected {expected_load} returning the model")
        params = _method_params(cls, "load_model")
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in params if p.default is p.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        takes_one = (positional or any(p.kind is p.VAR_POSITIONAL for p in params)) and len(required) <= 1
        if not takes_one:
            found = "(self, " + ", ".join(p.name for p in params) + ")" if params else "(self)"
            raise PredictorSignatureError(
                f"{here} load_model{found} must take exactly one argument, the model's local path; "
                f"expected {expected_load}")
    return ClassBinding(init_names, predict_names, post_names, _is_coroutine_function(predict))


def load_python_predictor(module: ModuleType, predictor: RuntimePredictor, where: str) -> LoadedPredictor:
    """Construct `PythonPredictor` from an imported module (signatures checked first)."""
    has_models = predictor.has_models
    binding = check_predictor_class(module, where, has_models)
    cls = module.PythonPredictor

    try:
        client = PythonClient.from_spec(predictor) if has_models else None
    except (ValueError, ModelSourceError) as e:
        raise StartupError(f"{where}: {e}") from None
    values = {"config": copy.deepcopy(predictor.config), "python_client": client}
    kwargs = {n: values[n] for n in binding.init_names}
    if client is not None and cls.__new__ is object.__new__:
        # hand the client its loader before __init__, so __init__ may call get_model()
        instance = cls.__new__(cls)
        client.set_loader(instance.load_model)
        instance.__init__(**kwargs)
    else:
        instance = cls(**kwargs)
        if client is not None:
            client.set_loader(instance.load_model)
    if client is not None:
        try:
            client.preload()  # model load failures surface at start-up, before readiness
        except ModelSourceError as e:
            raise StartupError(f"{where}: {e}") from None

    post = None
    if binding.post_predict_names is not None:
        post = bind(instance.post_predict, binding.post_predict_names, POST_PREDICT_PARAMS)
    post_is_async = post is not None and _is_coroutine_function(instance.post_predict)
    return LoadedPredictor(
        type="python",
        predict=bind(instance.predict, binding.predict_names, PREDICT_PARAMS),
        is_async=binding.is_async,
        post_predict=post,
        post_predict_is_async=post_is_async,
        describe=client.metadata if client is not None else None,
        wants_headers=_wants_headers(binding),
    )


# ---- tensorflow and onnx predictors ----------------------------------------------

def load_model_predictor(module: ModuleType, predictor: RuntimePredictor, where: str) -> LoadedPredictor:
    """Construct `TensorFlowPredictor` / `ONNXPredictor` with its client (models loaded first)."""
    kind = predictor.type
    class_name = CLASS_NAMES[kind]
    init_params = INIT_PARAMS_BY_TYPE[kind]
    binding = check_predictor_class(module, where, False, class_name, init_params)
    cls = getattr(module, class_name)
    if kind == "onnx":
        from predictor_runtime.clients.onnx import ONNXClient as Client
    else:
        from predictor_runtime.clients.tensorflow import TensorFlowClient as Client  # type: ignore[assignment]
    try:
        client = Client.from_spec(predictor)
        client.start()  # models discovered and (without cache_size) loaded before __init__
    except ModelSourceError as e:
        raise StartupError(f"{where}: {e}") from None
    values = {"config": copy.deepcopy(predictor.config), init_params[1]: client}
    instance = cls(**{n: values[n] for n in binding.init_names})

    post = None
    if binding.post_predict_names is not None:
        post = bind(instance.post_predict, binding.post_predict_names, POST_PREDICT_PARAMS)
    return LoadedPredictor(
        type=kind,
        predict=bind(instance.predict, binding.predict_names, PREDICT_PARAMS),
        is_async=binding.is_async,
        post_predict=post,
        post_predict_is_async=post is not None and _is_coroutine_function(instance.post_predict),
        describe=client.describe,
        wants_headers=_wants_headers(binding),
    )


# ---- the legacy module predictor -------------------------------------------

def load_legacy_predictor(module: ModuleType, predictor: RuntimePredictor, where: str) -> LoadedPredictor:
    """Run the module's optional `init` and bind `predict(sample, metadata)` by name."""
    expected = (f"def predict{_fmt(LEGACY_PREDICT_PARAMS, False)} and optionally def init(metadata) "
                "or def init(model_path, metadata)")
    predict = getattr(module, "predict", None)
    if not callable(predict):
        hint = ""
        if inspect.isclass(getattr(module, "PythonPredictor", None)):
            hint = (" (this file defines class PythonPredictor: that is the `kind: RealtimeAPI` "
                    "format with `predictor.type: python`)")
        raise PredictorSignatureError(
            f"{where}: predict is missing{hint}; a legacy predictor module defines {expected}")
    predict_names = accepted_names(_parameters(predict, drop_first=False), LEGACY_PREDICT_PARAMS,
                                   f"{where}: predict", _fmt(LEGACY_PREDICT_PARAMS, False))
    init = getattr(module, "init", None)
    init_names: tuple[str, ...] = ()
    if init is not None:
        if not callable(init):
            raise PredictorSignatureError(f"{where}: init is not a function; expected {expected}")
        init_names = accepted_names(_parameters(init, drop_first=False), LEGACY_INIT_PARAMS,
                                    f"{where}: init", _fmt(LEGACY_INIT_PARAMS, False))

    # one copy shared by init and predict: legacy code may stash values in metadata
    metadata = copy.deepcopy(predictor.config)
    model_path = legacy_model_path(predictor.model_path, where)
    if init is not None:
        values = {"model_path": model_path, "metadata": metadata}
        init(**{n: values[n] for n in init_names})

    pick_sample = "sample" in predict_names
    pick_meta = "metadata" in predict_names

    def call(payload: Any, query_params: Any, headers: Any) -> Any:
        kwargs = {}
        if pick_sample:
            kwargs["sample"] = payload
        if pick_meta:
            kwargs["metadata"] = metadata
        return predict(**kwargs)

    meta = {"model_path": predictor.model_path} if predictor.model_path else {}
    return LoadedPredictor(type="legacy", predict=call, is_async=_is_coroutine_function(predict),
                           metadata=meta)


def legacy_model_path(location: str | None, where: str) -> str | None:
    """The local path `init(model_path)` gets: an s3:// `predictor.model` is downloaded first, as
    Cortex 0.10-0.12's downloader did (a prefix -> a folder, a single object -> a file, named as
    its last segment); a local path is passed as it is."""
    if not location or not location.startswith("s3://"):
        return location
    try:
        return S3Source(location).fetch(default_root())
    except ModelSourceError as e:
        raise StartupError(f"{where}: predictor.model {e}") from None


# ---- entry point --------------------------------------------------------------

def check_supported(kind: str) -> None:
    """UnsupportedPredictor unless this runtime can serve predictor type `kind`."""
    if kind in RUNTIME_PACKAGES:
        module, extra = RUNTIME_PACKAGES[kind]
        if importlib.util.find_spec(module) is None:
            raise UnsupportedPredictor(
                f"predictor type {kind!r} ({CLASS_NAMES[kind]}) needs the {module} package, which is not "
                f"installed in this replica; install cortexd with the {extra} extra "
                f"(pip install 'cortexd[{extra}]'){' or the onnx-gpu extra for GPUs' if kind == 'onnx' else ''}")
        return
    if kind not in ("python", "legacy"):
        raise UnsupportedPredictor(
            f"unknown predictor type {kind!r}; expected python, tensorflow, onnx or legacy")


def load_predictor(spec: RuntimeSpec) -> LoadedPredictor:
    """Import and construct the predictor a runtime spec describes (contract.py).

    Raises StartupError (UnsupportedPredictor, PredictorSignatureError), or whatever the user's
    code raised while importing or initialising.
    """
    predictor = spec.predictor
    kind = predictor.type
    check_supported(kind)
    where = display_path(predictor.path, spec.project_dir)
    module = import_predictor_module(predictor.path, predictor.python_path, spec.project_dir)
    if kind == "python":
        return load_python_predictor(module, predictor, where)
    if kind in ("tensorflow", "onnx"):
        return load_model_predictor(module, predictor, where)
    return load_legacy_predictor(module, predictor, where)
