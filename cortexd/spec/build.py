"""A checked, completed API document -> its frozen APISpec, or SplitterSpec (spec/model.py).

The last step of loading: spec.load calls build_spec() once every document of every file
passed (spec.validate filled the defaults and made local paths absolute), so it reads only
values validation accepted. Units are converted once, here: seconds, cores, bytes. Pure.
"""

from __future__ import annotations

import copy
from typing import Any

from cortexd.spec import units
from cortexd.spec.model import (
    APISpec,
    AutoscalingSpec,
    BatchingSpec,
    ComputeSpec,
    ModelSpec,
    ModelsSpec,
    MonitoringSpec,
    NetworkingSpec,
    PredictorSpec,
    SplitTarget,
    SplitterSpec,
    UpdateStrategySpec,
)
from cortexd.spec.schema import apply_defaults

_DEFAULT_SCALING = apply_defaults({}, "autoscaling") | {"init_replicas": 1, "target_replica_concurrency": 1.0}
_DEFAULT_UPDATE = apply_defaults({}, "update_strategy")


def build_spec(doc: dict[str, Any], project_dir: str, source_file: str, source_line: int) -> APISpec:
    """The APISpec of a checked, completed document (units converted: seconds, cores, bytes)."""
    p = doc["predictor"]
    models = None
    if "models" in p:
        m = p["models"]
        models = ModelsSpec(
            paths=tuple(ModelSpec(e["name"], e["model_path"], e.get("signature_key")) for e in m.get("paths", ())),
            dir=m.get("dir"),
            signature_key=m.get("signature_key"),
            cache_size=m.get("cache_size"),
            disk_cache_size=m.get("disk_cache_size"),
        )
    batching = None
    if p.get("server_side_batching"):
        b = p["server_side_batching"]
        batching = BatchingSpec(int(b["max_batch_size"]), units.parse_duration(b["batch_interval"]))
    predictor = PredictorSpec(
        type=p["type"],
        path=p["path"],
        python_path=p["python_path"],
        model_path=p.get("model_path"),
        signature_key=p.get("signature_key"),
        models=models,
        server_side_batching=batching,
        processes_per_replica=int(p["processes_per_replica"]),
        threads_per_process=int(p["threads_per_process"]),
        config=copy.deepcopy(p.get("config", {})),
        image=p.get("image"),
        tensorflow_serving_image=p.get("tensorflow_serving_image"),
        env=dict(p.get("env", {})),
    )
    n, c = doc["networking"], doc["compute"]
    # a BatchAPI has no autoscaling or update strategy: its workers are started per job
    a, u = doc.get("autoscaling") or _DEFAULT_SCALING, doc.get("update_strategy") or _DEFAULT_UPDATE
    monitoring = doc.get("monitoring")
    return APISpec(
        name=doc["name"],
        kind=doc["kind"] if doc["kind"] in ("api", "BatchAPI") else "RealtimeAPI",
        predictor=predictor,
        networking=NetworkingSpec(n["endpoint"], int(n["local_port"]), n["api_gateway"]),
        compute=ComputeSpec(
            cpu=0.0 if c["cpu"] is None else units.parse_cpu(c["cpu"]),  # null: no CPU limit
            gpu=int(c["gpu"]),
            inf=int(c["inf"]),
            mem=None if c["mem"] is None else units.parse_memory(c["mem"]),
        ),
        autoscaling=AutoscalingSpec(
            min_replicas=int(a["min_replicas"]),
            max_replicas=int(a["max_replicas"]),
            init_replicas=int(a["init_replicas"]),
            target_replica_concurrency=float(a["target_replica_concurrency"]),
            max_replica_concurrency=int(a["max_replica_concurrency"]),
            window=units.parse_duration(a["window"]),
            downscale_stabilization_period=units.parse_duration(a["downscale_stabilization_period"]),
            upscale_stabilization_period=units.parse_duration(a["upscale_stabilization_period"]),
            max_downscale_factor=float(a["max_downscale_factor"]),
            max_upscale_factor=float(a["max_upscale_factor"]),
            downscale_tolerance=float(a["downscale_tolerance"]),
            upscale_tolerance=float(a["upscale_tolerance"]),
            target_cpu_utilization=a.get("target_cpu_utilization"),
        ),
        update_strategy=UpdateStrategySpec(units.parse_surge(u["max_surge"]), units.parse_surge(u["max_unavailable"])),
        monitoring=None if monitoring is None else MonitoringSpec(monitoring["model_type"], monitoring.get("key")),
        project_dir=project_dir,
        source_file=source_file,
        source_line=source_line,
        raw=doc,
    )


def build_splitter(doc: dict[str, Any], source_file: str, source_line: int,
                   target_lines: list[int]) -> SplitterSpec:
    """The SplitterSpec of a checked, completed TrafficSplitter document; target_lines: where
    each of its apis is written."""
    n = doc["networking"]
    targets = tuple(SplitTarget(t["name"], int(t["weight"]), bool(t["shadow"]), line)
                    for t, line in zip(doc["apis"], target_lines))
    return SplitterSpec(doc["name"], targets, NetworkingSpec(n["endpoint"], int(n["local_port"]), n["api_gateway"]),
                        source_file, source_line, raw=doc)
