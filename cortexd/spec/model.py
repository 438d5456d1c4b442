"""Validated, defaulted API specifications: the values the rest of cortexd reads.

spec.load + spec.validate turn cortex.yaml documents into APISpec values; nothing
downstream reads YAML or re-applies defaults. Units are normalised here:
durations are seconds (float), CPU is cores (float), memory is bytes (int),
local paths are absolute; max_surge/max_unavailable are a count or a Percent.
`raw` keeps the defaulted document (relative paths resolved); the spec hash is
computed once, when an APISpec is made, from that document and `project_digest`
(the digest of the project files that make the API's version, set by
daemon/projects.py with dataclasses.replace, which makes a new spec and so a new
hash). Replicas are stamped with that hash (Docker labels), so for the same
inputs it must never change: spec_hash_of() keeps the original algorithm.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cortexd.spec.units import Percent, parse_surge

PredictorType = Literal["python", "tensorflow", "onnx", "legacy"]


@dataclass(frozen=True)
class ModelSpec:
    """One named model: a local absolute directory/file path or an s3:// URL."""

    name: str
    path: str
    signature_key: str | None = None


@dataclass(frozen=True)
class ModelsSpec:
    """predictor.models: either explicit `paths` or a `dir` of models."""

    paths: tuple[ModelSpec, ...] = ()
    dir: str | None = None
    signature_key: str | None = None
    cache_size: int | None = None
    disk_cache_size: int | None = None


@dataclass(frozen=True)
class BatchingSpec:
    max_batch_size: int
    batch_interval: float  # seconds


@dataclass(frozen=True)
class PredictorSpec:
    type: PredictorType
    path: str  # absolute path of the predictor .py file
    python_path: str  # absolute; appended to PYTHONPATH (default: the cortex.yaml folder)
    model_path: str | None = None  # absolute local path or s3:// URL
    signature_key: str | None = None
    models: ModelsSpec | None = None
    server_side_batching: BatchingSpec | None = None
    processes_per_replica: int = 1
    threads_per_process: int = 1
    config: dict[str, Any] = field(default_factory=dict)  # legacy: `metadata`
    image: str | None = None
    tensorflow_serving_image: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkingSpec:
    endpoint: str  # normalised to start with "/" and have no trailing "/"
    local_port: int = 8888
    api_gateway: str = "public"


@dataclass(frozen=True)
class ComputeSpec:
    cpu: float = 0.2  # cores (Cortex default 200m)
    gpu: int = 0
    inf: int = 0
    mem: int | None = None  # bytes


@dataclass(frozen=True)
class MonitoringSpec:
    model_type: Literal["classification", "regression"]
    key: str | None = None


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int = 1
    max_replicas: int = 100
    init_replicas: int = 1
    target_replica_concurrency: float = 1.0
    max_replica_concurrency: int = 1024
    window: float = 60.0
    downscale_stabilization_period: float = 300.0
    upscale_stabilization_period: float = 60.0
    max_downscale_factor: float = 0.75
    max_upscale_factor: float = 1.5
    downscale_tolerance: float = 0.05
    upscale_tolerance: float = 0.05
    # legacy `kind: api` only: scale on CPU utilisation (percent) instead of concurrency
    target_cpu_utilization: int | None = None


_CORTEX_DEFAULT_SHARE = Percent(25)  # Cortex's default max_surge and max_unavailable


@dataclass(frozen=True)
class UpdateStrategySpec:
    max_surge: int | Percent = _CORTEX_DEFAULT_SHARE  # a replica count or a share of the desired count
    max_unavailable: int | Percent = _CORTEX_DEFAULT_SHARE

    def __post_init__(self) -> None:
        # the loader passes parsed values; a spec made by hand may say "25%" or "1"
        object.__setattr__(self, "max_surge", parse_surge(self.max_surge))
        object.__setattr__(self, "max_unavailable", parse_surge(self.max_unavailable))


# the key under which the project digest entered the hashed document: persisted hashes
# (Docker labels of running replicas, adopted after a restart) depend on it
_DIGEST_KEY = "_project_digest"


def spec_hash_of(document: dict[str, Any], project_digest: str | None = None) -> str:
    """Short content hash of a defaulted document and the project digest (12 hex digits)."""
    hashed = document if project_digest is None else {**document, _DIGEST_KEY: project_digest}
    blob = json.dumps(hashed, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class APISpec:
    name: str
    kind: Literal["RealtimeAPI", "api"]  # "api" = legacy format, translated
    predictor: PredictorSpec
    networking: NetworkingSpec
    compute: ComputeSpec
    autoscaling: AutoscalingSpec
    update_strategy: UpdateStrategySpec
    monitoring: MonitoringSpec | None
    project_dir: str  # absolute folder of the cortex.yaml
    source_file: str  # the cortex.yaml it came from
    source_line: int  # line of the API's entry in that file
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # digest of the project files that make this API's version (None: not folded in yet);
    # like `raw`, outside equality: versions are told apart by spec_hash
    project_digest: str | None = field(default=None, compare=False)
    # short content hash of `raw` and `project_digest`; replicas are stamped with it
    spec_hash: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec_hash", spec_hash_of(self.raw, self.project_digest))

    def runtime_spec(self) -> dict[str, Any]:
        """The JSON document handed to predictor_runtime (see its package docstring)."""
        p = self.predictor
        models = None
        if p.models is not None:
            models = {
                "paths": [
                    {"name": m.name, "path": m.path, "signature_key": m.signature_key}
                    for m in p.models.paths
                ],
                "dir": p.models.dir,
                "signature_key": p.models.signature_key,
                "cache_size": p.models.cache_size,
                "disk_cache_size": p.models.disk_cache_size,
            }
        batching = None
        if p.server_side_batching is not None:
            batching = {
                "max_batch_size": p.server_side_batching.max_batch_size,
                "batch_interval": p.server_side_batching.batch_interval,
            }
        return {
            "name": self.name,
            "endpoint": self.networking.endpoint,
            "project_dir": self.project_dir,
            "predictor": {
                "type": p.type,
                "path": p.path,
                "python_path": p.python_path,
                "model_path": p.model_path,
                "signature_key": p.signature_key,
                "models": models,
                "server_side_batching": batching,
                "processes_per_replica": p.processes_per_replica,
                "threads_per_process": p.threads_per_process,
                "config": p.config,
            },
            "monitoring": (
                None
                if self.monitoring is None
                else {"model_type": self.monitoring.model_type, "key": self.monitoring.key}
            ),
        }
