"""Cortex's legacy `kind: api` (Cortex 0.10-0.12) in the RealtimeAPI shape, and back.

translate_legacy() turns a legacy document (schema-valid, its legacy defaults filled) into a
RealtimeAPI-shaped one that spec.validate checks like any other, and returns the map from
RealtimeAPI field paths back to the legacy ones; to_legacy() applies that map, so that every
message names the fields the user wrote (spec/entries.py). Pure.
"""

from __future__ import annotations

from typing import Any

from cortexd.spec.findings import Finding, Path_


def translate_legacy(doc: dict[str, Any], deployment: str | None
                     ) -> tuple[dict[str, Any] | None, dict[Path_, Path_], list[Finding]]:
    """A legacy `kind: api` document (schema-valid, legacy defaults filled) in the RealtimeAPI shape.

    Returns the translated document, the map from RealtimeAPI field paths back to the
    legacy ones (so messages name the fields the user wrote), and translation problems.
    """
    pred0 = doc.get("predictor", {})
    findings = []
    if "python" in doc and "predictor" in doc:
        findings.append(Finding(("predictor",), "give the predictor either as python.predictor or as "
                                "predictor.path (Cortex 0.10-0.12), not both", on_key=True))
    if "python" not in doc and "predictor" not in doc:
        findings.append(Finding(("python",), "missing required field; expected python: {predictor: "
                                "<path to the predictor python file>} (or predictor: {path: ...})"))
    for key in ("python_path", "metadata"):
        if key in doc and key in pred0:
            findings.append(Finding(("predictor", key), f"{key} is given twice (at the top level and in "
                                    "predictor); keep one", on_key=True))
    if findings:
        return None, {}, findings

    paths: dict[Path_, Path_] = {("name",): ("name",), ("kind",): ("kind",)}
    predictor: dict[str, Any] = {"type": "python"}
    if "python" in doc:
        predictor["path"] = doc["python"]["predictor"]
        paths[("predictor", "path")] = ("python", "predictor")
    else:
        predictor["path"] = pred0["path"]
        paths[("predictor", "path")] = ("predictor", "path")
    if "model" in pred0:
        predictor["model_path"] = pred0["model"]
        paths[("predictor", "model_path")] = ("predictor", "model")
    for target, sources in (("python_path", (("python_path",), ("predictor", "python_path"))),
                            ("config", (("metadata",), ("predictor", "metadata")))):
        for source in sources:
            node: Any = doc
            for part in source:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                predictor[target] = node
                paths[("predictor", target)] = source
    paths[("predictor",)] = ("python",) if "python" in doc else ("predictor",)

    name = doc["name"]
    endpoint = doc.get("endpoint") or (f"/{deployment}/{name}" if deployment else f"/{name}")
    paths[("networking", "endpoint")] = ("endpoint",)
    compute = doc.get("compute", {})
    out: dict[str, Any] = {
        "name": name,
        "kind": "api",
        "predictor": predictor,
        "networking": {"endpoint": endpoint},
        "compute": {k: compute[k] for k in ("cpu", "gpu", "mem") if k in compute},
        "autoscaling": {k: compute[k] for k in ("min_replicas", "max_replicas", "init_replicas",
                                                 "target_cpu_utilization") if k in compute},
    }
    # legacy APIs scaled with a Kubernetes HPA on CPU, which scales up without a stabilization
    # period (its 5-minute downscale window is Cortex's default downscale period)
    out["autoscaling"]["upscale_stabilization_period"] = "0s"
    paths[("compute",)] = ("compute",)
    paths[("autoscaling",)] = ("compute",)
    if "tracker" in doc:
        out["monitoring"] = dict(doc["tracker"])
        paths[("monitoring",)] = ("tracker",)
    return out, paths, []


def to_legacy(path: Path_, mapping: dict[Path_, Path_]) -> Path_:
    """`path` as the legacy document wrote it: its longest prefix in `mapping` replaced."""
    for n in range(len(path), 0, -1):
        if path[:n] in mapping:
            return mapping[path[:n]] + path[n:]
    return path
