"""Validated, defaulted API specifications: the values the rest of cortexd reads.

An APISpec is one RealtimeAPI (or legacy `kind: api`); a SplitterSpec is one TrafficSplitter,
which has no replicas of its own: the gateway routes its requests to its targets' routes.

The spec package's loader and validator turn cortex.yaml documents into APISpec values,
every default filled (config_schema.json's, then the few that depend on other fields);
the rest of cortexd reads these values, never YAML. What a replica needs of an API is
`runtime_spec()`, the typed runtime contract of predictor_runtime/contract.py,
whose models, batching and monitoring sections are the very classes declared
there (re-exported below), so those values reach the replica in one shape.
The units they carry are normalised by the loader (with spec/units.py):
durations are seconds (float), CPU is cores (float), memory is bytes (int),
local paths are absolute; max_surge/max_unavailable are a count or a Percent.
`raw` keeps the defaulted document (relative paths resolved); the spec hash is
computed once, when an APISpec is made, from that document and `project_digest`
(the digest of the project files that make the API's version, set by
daemon/projects.py with dataclasses.replace, which makes a new spec and so a new
hash; so is `cpu_only`, a GPU API served on the CPU). Replicas are stamped with
that hash (Docker labels), so for the same inputs it must never change:
spec_hash_of() keeps the original algorithm.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cortexd.spec.units import Percent, parse_surge

# the runtime contract's sections, declared once there and used here as they are (`as`: re-exported)
from predictor_runtime.contract import BatchingSpec as BatchingSpec
from predictor_runtime.contract import ModelSpec as ModelSpec
from predictor_runtime.contract import ModelsSpec as ModelsSpec
from predictor_runtime.contract import MonitoringSpec as MonitoringSpec
from predictor_runtime.contract import PredictorType as PredictorType
from predictor_runtime.contract import RuntimePredictor, RuntimeSpec


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


# the keys under which serving a GPU API on the CPU (`--cpu-only`) and nearest pins enter the
# hashed document, only when on: the hashes of every other spec stay what they were
_CPU_ONLY_KEY = "_cpu_only"
_NEAREST_PINS_KEY = "_nearest_pins"


def spec_hash_of(document: dict[str, Any], project_digest: str | None = None, cpu_only: bool = False,
                 nearest_pins: bool = False) -> str:
    """Short content hash of a defaulted document, the project digest and, when on, the
    `--cpu-only` and nearest-pins modes (12 hex digits); a hash without them is the original one."""
    hashed = document if project_digest is None else {**document, _DIGEST_KEY: project_digest}
    if cpu_only:
        hashed = {**hashed, _CPU_ONLY_KEY: True}
    if nearest_pins:  # how requirements.txt is installed is part of the version
        hashed = {**hashed, _NEAREST_PINS_KEY: True}
    blob = json.dumps(hashed, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class APISpec:
    name: str
    kind: Literal["RealtimeAPI", "BatchAPI", "api"]  # "api" = legacy format, translated
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
    # compute.gpu served on the CPU (`cortexd up/deploy --cpu-only`: no GPU is placed; set by
    # daemon/projects.py on the specs that request one); a version of its own (spec_hash)
    cpu_only: bool = False
    # deployed with nearest pins (`deploy --nearest-pins`, issue 17): a pin of requirements.txt
    # that cannot be installed on this Python gets the nearest release that can (process backend)
    nearest_pins: bool = field(default=False, compare=False)
    # short content hash of `raw`, `project_digest`, `cpu_only` and `nearest_pins`; replicas are
    # stamped with it
    spec_hash: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec_hash",
                           spec_hash_of(self.raw, self.project_digest, self.cpu_only, self.nearest_pins))

    @property
    def replica_gpus(self) -> int:
        """The GPUs each replica is given: compute.gpu, or none when it is served on the CPU."""
        return 0 if self.cpu_only else self.compute.gpu

    def runtime_spec(self) -> RuntimeSpec:
        """What a replica is told about this API: the runtime contract (predictor_runtime/contract.py),
        written by every backend and `cortexd build` with its dumps()."""
        p = self.predictor
        return RuntimeSpec(
            name=self.name,
            endpoint=self.networking.endpoint,
            project_dir=self.project_dir,
            predictor=RuntimePredictor(
                type=p.type, path=p.path, python_path=p.python_path, model_path=p.model_path,
                signature_key=p.signature_key, models=p.models, server_side_batching=p.server_side_batching,
                processes_per_replica=p.processes_per_replica, threads_per_process=p.threads_per_process,
                config=p.config),
            monitoring=self.monitoring,
        )


@dataclass(frozen=True)
class SplitTarget:
    """One api of a TrafficSplitter."""

    name: str
    weight: int  # percent of the traffic; for a shadow, the percent of requests copied to it
    shadow: bool = False
    line: int = 0  # where `- name:` is written in the splitter's file (0: unknown)


@dataclass(frozen=True)
class SplitterSpec:
    """A TrafficSplitter: one endpoint that routes each request to one of its targets by weight."""

    name: str
    targets: tuple[SplitTarget, ...]
    networking: NetworkingSpec
    source_file: str
    source_line: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    spec_hash: str = field(init=False, compare=False, repr=False)

    kind = "TrafficSplitter"

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec_hash", spec_hash_of(self.raw))

    @property
    def primaries(self) -> tuple[SplitTarget, ...]:
        """The targets that answer requests (not shadows)."""
        return tuple(t for t in self.targets if not t.shadow)

    @property
    def shadow(self) -> SplitTarget | None:
        return next((t for t in self.targets if t.shadow), None)

    def describe(self) -> str:
        """Its endpoint and targets as events say them: "/split: a:70 b:30 c:10 (shadow)"."""
        return f"{self.networking.endpoint}: " + " ".join(
            f"{t.name}:{t.weight}{' (shadow)' if t.shadow else ''}" for t in self.targets)
