"""The runtime contract: what a replica is told about its API, typed, with its defaults set once.

cortexd builds a `RuntimeSpec` from its `APISpec` in one place (`APISpec.runtime_spec()`,
cortexd/spec/model.py, which declares its models, batching and monitoring sections with
the classes below) and every writer serialises it with `RuntimeSpec.dumps()`: the process
backend's private spec file, the Docker backend's /etc/cortexd/spec.json, and the spec
baked into `cortexd build` images (paths rewritten by `with_paths`). The replica reads it
back with `read_spec()` into the same frozen values, and server.py, supervisor.py,
predictors.py, models.py, the clients and inflight.py take those values: nothing after
this module re-applies a default or re-checks a type.

Reading is strict, and tolerant of older writers only:
- a key the JSON lacks takes the field's default below (a spec baked into an image by an
  older cortexd still reads);
- an unknown key, a missing required key or a value of the wrong type or range is a
  `ContractError` naming every such key path in one message. An unknown key means the
  spec was written by a newer cortexd than the predictor_runtime in the replica (a custom
  `predictor.image` carrying an older cortexd): ignoring it would silently drop a setting
  the user made, so the replica refuses to start and says to install the daemon's cortexd
  in the image.

The limits the daemon sets for every replica travel in the environment, not in the spec
(they are the daemon's settings, not the API's): `ReplicaLimits.from_environ()` reads them
once per process, with the same defaults, and a bad value is reported and replaced by the
default (a setting never keeps a replica from serving).

Standard library only: this module is imported in every replica, whose packages are the
fixed set of docker/requirements/runtime.txt or a project's own environment.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

PredictorType = Literal["python", "tensorflow", "onnx", "legacy"]
ModelType = Literal["classification", "regression"]

T = TypeVar("T")

# field metadata: the smallest value the reader accepts (the cross-field rules live in
# cortexd/spec/rules.py; these are what the runtime itself needs to work at all)
_AT_LEAST_1 = {"minimum": 1}
_AT_LEAST_0 = {"minimum": 0}


class ContractError(ValueError):
    """A runtime spec that does not fit the contract; the message names every bad key path."""


@dataclass(frozen=True)
class ModelSpec:
    """One named model of `predictor.models.paths`: an absolute local path or an s3:// URL."""

    name: str
    path: str
    signature_key: str | None = None


@dataclass(frozen=True)
class ModelsSpec:
    """predictor.models: either explicit `paths` or a `dir` of models, and the model caches."""

    paths: tuple[ModelSpec, ...] = ()
    dir: str | None = None
    signature_key: str | None = None
    cache_size: int | None = field(default=None, metadata=_AT_LEAST_1)
    disk_cache_size: int | None = field(default=None, metadata=_AT_LEAST_1)


@dataclass(frozen=True)
class BatchingSpec:
    """predictor.server_side_batching."""

    max_batch_size: int = field(metadata=_AT_LEAST_1)
    batch_interval: float = field(metadata=_AT_LEAST_0)  # seconds


@dataclass(frozen=True)
class MonitoringSpec:
    """The API's `monitoring` section (the gateway aggregates predictions; carried for the record)."""

    model_type: ModelType
    key: str | None = None


@dataclass(frozen=True)
class RuntimePredictor:
    """The `predictor` section as the runtime serves it (paths absolute, durations in seconds)."""

    type: PredictorType
    path: str  # the predictor .py file
    python_path: str | None = None  # put on sys.path (the backend also puts it on PYTHONPATH)
    model_path: str | None = None  # a local path or an s3:// URL
    signature_key: str | None = None
    models: ModelsSpec | None = None
    server_side_batching: BatchingSpec | None = None
    processes_per_replica: int = field(default=1, metadata=_AT_LEAST_1)
    threads_per_process: int = field(default=1, metadata=_AT_LEAST_1)
    config: dict[str, Any] = field(default_factory=dict)  # legacy `kind: api`: its `metadata`

    @property
    def has_models(self) -> bool:
        """model_path or models is set (a python predictor then needs load_model)."""
        return bool(self.model_path) or self.models is not None


@dataclass(frozen=True, kw_only=True)  # keyword-only: the fields keep the documented JSON order
class RuntimeSpec:
    """Everything a replica is told about its API (see the module docstring)."""

    name: str
    endpoint: str = "/"
    project_dir: str | None = None  # the replica's working directory, put on sys.path
    predictor: RuntimePredictor
    monitoring: MonitoringSpec | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON values of every field, nested sections as objects, tuples as lists."""
        doc: dict[str, Any] = _to_json(self)
        return doc

    @classmethod
    def from_json(cls, data: Any) -> RuntimeSpec:
        """The spec `to_json` wrote (or an older cortexd did); ContractError names what does not fit."""
        problems: list[str] = []
        spec: RuntimeSpec = _read(data, cls, "", problems)
        if problems:
            raise ContractError("; ".join(problems))
        return spec

    def dumps(self) -> str:
        """The one JSON text every writer uses (sorted keys: a baked spec's bytes name its image)."""
        return json.dumps(self.to_json(), indent=1, sort_keys=True)

    @classmethod
    def loads(cls, text: str | bytes) -> RuntimeSpec:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ContractError(f"not JSON: {e}") from None
        return cls.from_json(data)

    def with_paths(self, rewrite: Callable[[str], str]) -> RuntimeSpec:
        """This spec with every local path it holds passed through `rewrite` (URLs and None kept):
        `cortexd build` bakes the spec with the paths the image has."""
        def local(path: str) -> str:
            return path if "://" in path else rewrite(path)

        def optional(path: str | None) -> str | None:
            return None if path is None else local(path)

        p = self.predictor
        models = p.models
        if models is not None:
            models = dataclasses.replace(
                models, dir=optional(models.dir),
                paths=tuple(dataclasses.replace(m, path=local(m.path)) for m in models.paths))
        predictor = dataclasses.replace(p, path=local(p.path), python_path=optional(p.python_path),
                                        model_path=optional(p.model_path), models=models)
        return dataclasses.replace(self, project_dir=optional(self.project_dir), predictor=predictor)


def read_spec(path: str) -> RuntimeSpec:
    """The runtime spec in the file at `path` (OSError, or ContractError saying what is wrong)."""
    with open(path, "rb") as f:
        return RuntimeSpec.loads(f.read())


# ---- the limits the daemon sets in the environment -------------------------------------

MAX_BODY_SIZE_ENV = "CORTEXD_MAX_BODY_SIZE"
REQUEST_TIMEOUT_ENV = "CORTEXD_REQUEST_TIMEOUT"
DRAIN_SECONDS_ENV = "CORTEXD_DRAIN_SECONDS"
HEADER_TIMEOUT_ENV = "CORTEXD_RUNTIME_HEADER_TIMEOUT"
BODY_TIMEOUT_ENV = "CORTEXD_RUNTIME_BODY_TIMEOUT"


@dataclass(frozen=True)
class ReplicaLimits:
    """What a replica enforces as the gateway does, set by its environment (all optional)."""

    # bytes: the limit on DECODED request bodies (413), the gateway's body limit
    max_body_size: int = 32 * 2**20
    # seconds: /healthz answers 503 once every predictor thread has been on one request longer
    # (the gateway's upstream timeout)
    request_timeout: float = 60.0
    # seconds: on SIGTERM, how long in-flight requests may finish (`cortexd build` images set the
    # request timeout: the pod's grace period covers it)
    drain_seconds: float = 10.0
    # seconds: a request head must arrive whole within this, counted from its first byte (or from
    # the connection's opening), else 408 and close (the gateway's client header timeout)
    header_timeout: float = 60.0
    # seconds: a request body being read may go this long without a byte, else 408 and close (the
    # gateway's client body timeout)
    body_timeout: float = 60.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], report: Callable[[str], None]) -> ReplicaLimits:
        """The limits `environ` sets, the default for each it does not set; a bad value (not a
        positive finite number up to 2**53) is `report`ed in one line and the default used."""
        defaults = cls()
        return cls(
            max_body_size=_env_number(environ, MAX_BODY_SIZE_ENV, defaults.max_body_size, int, report),
            request_timeout=_env_number(environ, REQUEST_TIMEOUT_ENV, defaults.request_timeout, float, report),
            drain_seconds=_env_number(environ, DRAIN_SECONDS_ENV, defaults.drain_seconds, float, report),
            header_timeout=_env_number(environ, HEADER_TIMEOUT_ENV, defaults.header_timeout, float, report),
            body_timeout=_env_number(environ, BODY_TIMEOUT_ENV, defaults.body_timeout, float, report))


def _env_number(environ: Mapping[str, str], name: str, default: T, cast: Callable[[float], T],
                report: Callable[[str], None], maximum: float = 2.0**53) -> T:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and 0 < number <= maximum and (cast is not int or number >= 1)):
        report(f"error: {name}={raw!r} is not a positive number up to {maximum:g}; using {default}")
        return default
    return cast(number)


# ---- the (de)serialiser, driven by the field declarations above ----------------------------

def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    return value  # str, numbers, None, and `config` (already JSON values: YAML's)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _read(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """`value` read as type `tp`; what does not fit is appended to `problems` (None returned)."""
    where = path or "the spec"
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _read(value, inner, path, problems)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _read_object(value, tp, path, problems)
    if origin is Literal:
        if value not in typing.get_args(tp):
            problems.append(f"{where}: expected one of {', '.join(typing.get_args(tp))}; found {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list; found {_kind(value)}")
            return ()
        (item,) = typing.get_args(tp)[:1]
        return tuple(_read(v, item, f"{path}[{i}]", problems) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object; found {_kind(value)}")
            return {}
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    problems.append(f"{where}: expected {'an integer' if tp is int else 'a number' if tp is float else 'a string'}; "
                    f"found {value!r}")
    return None


def _read_object(value: Any, cls: type, path: str, problems: list[str]) -> Any:
    where = path or "the spec"
    if not isinstance(value, dict):
        problems.append(f"{where}: expected an object; found {_kind(value)}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{path}." if path else ""
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        problems.append(
            f"{', '.join(prefix + k for k in unknown)}: unknown key{'s' if len(unknown) > 1 else ''} (the spec was "
            "written by a newer cortexd than this replica's predictor_runtime: install the daemon's cortexd "
            "version where the replica runs, e.g. in its predictor.image)")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{prefix}{name}: missing (a required key)")
            continue
        before = len(problems)
        got = _read(value[name], hints[name], prefix + name, problems)
        minimum = f.metadata.get("minimum")
        if minimum is not None and len(problems) == before and got is not None and got < minimum:
            problems.append(f"{prefix}{name}: expected a value >= {minimum}; found {got!r}")
        values[name] = got
    if problems:
        return None
    return cls(**values)
