"""Validation of one API document (a plain dict) against config_schema.json and Cortex's rules.

    check_api(doc, project_dir) -> CheckedAPI(doc=<defaulted, paths resolved>, findings, notices)

Three steps, all problems collected in one pass (docker-compose's config/validation.py
is the model); check_api runs them in order:

1. jsonschema (`iter_errors`) against config_schema.json; every error is rewritten
   as a sentence saying what was expected and what was found (schema.py).
2. Defaults: filled from the schema's `default` keywords (schema.apply_defaults: the schema
   is the single source of defaults), then the few defaults that depend on other fields
   (init_replicas, target_replica_concurrency, endpoint, python_path), and relative paths
   resolved against the cortex.yaml folder (complete(), here).
3. Cross-field rules: small named functions with Cortex 0.23's meaning (rules.py). Each
   declares the fields it reads and is skipped when one of them already failed
   the schema, so a type error is reported once and never crashes a rule.
   The last few rules read the filesystem (predictor file, model layouts); they
   are the only I/O of validation besides reading the schema file.

A TrafficSplitter document is checked the same way (check_splitter: its schema, defaults and
rules). Here too: the rules across APIs (cross_api_findings: unique names, unique routes,
splitters included; splitter_target_findings: a splitter's apis exist and are no splitters)
and the notices for accepted fields that do nothing on one host. Findings carry a field path, not a
location (findings.py): spec.load maps paths to file:line:column (it alone knows the YAML
marks) and to legacy field names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from cortexd.spec.findings import Finding, FindingKind, Path_, is_bad
from cortexd.spec.rules import RuleContext, is_s3, run_rules, was_given
from cortexd.spec.schema import apply_defaults, normalize_endpoint, predictor_type, schema_findings


@dataclass
class CheckedAPI:
    doc: dict[str, Any]  # defaulted, derived defaults filled, local paths absolute
    findings: list[Finding] = field(default_factory=list)
    notices: list[Finding] = field(default_factory=list)


# -- step 2: derived defaults, absolute paths -------------------------------------


def _valid(doc: dict[str, Any], path: Path_, bad: set[Path_], kind: type | tuple[type, ...]) -> bool:
    node: Any = doc
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, kind) and not isinstance(node, bool) and not is_bad(path, bad)


def _resolve_location(location: Any, project_dir: str) -> Any:
    if not isinstance(location, str) or is_s3(location) or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location):
        return location
    return os.path.normpath(os.path.join(project_dir, location))


def complete(doc: dict[str, Any], project_dir: str, bad: set[Path_]) -> None:
    """Derived defaults and absolute paths, in place; skips whatever failed the schema."""
    if isinstance(doc.get("networking"), dict):
        net = doc["networking"]
        if "endpoint" not in net and _valid(doc, ("name",), bad, str):
            net["endpoint"] = "/" + doc["name"]
        elif _valid(doc, ("networking", "endpoint"), bad, str):
            net["endpoint"] = normalize_endpoint(net["endpoint"])
    scaling = doc.get("autoscaling")
    if isinstance(scaling, dict):
        if "init_replicas" not in scaling and _valid(doc, ("autoscaling", "min_replicas"), bad, int):
            scaling["init_replicas"] = scaling["min_replicas"]
        if ("target_replica_concurrency" not in scaling
                and _valid(doc, ("predictor", "processes_per_replica"), bad, int)
                and _valid(doc, ("predictor", "threads_per_process"), bad, int)):
            p = doc["predictor"]
            scaling["target_replica_concurrency"] = float(p["processes_per_replica"] * p["threads_per_process"])
    pred = doc.get("predictor")
    if not isinstance(pred, dict):
        return
    pred.setdefault("python_path", ".")
    for key in ("path", "python_path", "model_path"):
        if _valid(doc, ("predictor", key), bad, str):
            pred[key] = _resolve_location(pred[key], project_dir)
    models = pred.get("models")
    if isinstance(models, dict) and not is_bad(("predictor", "models"), bad):
        if isinstance(models.get("dir"), str):
            models["dir"] = _resolve_location(models["dir"], project_dir)
        for entry in models.get("paths") or ():
            if isinstance(entry, dict) and isinstance(entry.get("model_path"), str):
                entry["model_path"] = _resolve_location(entry["model_path"], project_dir)



# -- notices: accepted fields that do nothing on one host -----------------------------

def notices_for(given: dict[str, Any]) -> list[Finding]:
    out = []
    if isinstance(given.get("networking"), dict) and "api_gateway" in given["networking"]:
        out.append(Finding(("networking", "api_gateway"), "networking.api_gateway is ignored on one host"))
    if isinstance(given.get("predictor"), dict) and "tensorflow_serving_image" in given["predictor"]:
        out.append(Finding(("predictor", "tensorflow_serving_image"),
                           "predictor.tensorflow_serving_image is ignored: cortexd runs TensorFlow models "
                           "in the predictor process"))
    return out


# -- entry points -------------------------------------------------------------------


def check_api(doc: dict[str, Any], project_dir: str, *, legacy: bool = False,
              default_port: int | None = None, kind: str = "RealtimeAPI") -> CheckedAPI:
    """Validate and complete one RealtimeAPI-shaped document (kind="BatchAPI": a BatchAPI, whose
    predictor, networking and compute are a RealtimeAPI's, with its own schema and rules).

    legacy=True: `doc` is a translated legacy `kind: api` document that already
    passed the legacy schema; it gets the RealtimeAPI defaults and rules, and its
    predictor type becomes "legacy".
    default_port: the local_port of an API that sets none (`cortexd up --port`),
    instead of the schema's 8888.
    """
    def_name = "batch_api" if kind == "BatchAPI" else "realtime_api"
    findings = [] if legacy else schema_findings(doc, def_name)
    bad = {f.path for f in findings}
    if not legacy and predictor_type(doc) is None:
        bad.add(("predictor",))  # the type selects the predictor's schema: nothing below it was checked
    completed = apply_defaults(doc, def_name)
    if legacy:
        completed["predictor"]["type"] = "legacy"
    if default_port is not None and isinstance(completed.get("networking"), dict) \
            and not was_given(RuleContext(project_dir, doc), "networking", "local_port"):
        completed["networking"]["local_port"] = default_port
    complete(completed, project_dir, bad)
    findings += run_rules(completed, RuleContext(project_dir, doc), bad, kind=kind)
    return CheckedAPI(completed, findings, notices_for(doc))


def check_splitter(doc: dict[str, Any], project_dir: str, *, default_port: int | None = None) -> CheckedAPI:
    """Validate and complete one TrafficSplitter document (its targets are checked across
    documents by splitter_target_findings)."""
    findings = schema_findings(doc, "traffic_splitter")
    bad = {f.path for f in findings}
    completed = apply_defaults(doc, "traffic_splitter")
    ctx = RuleContext(project_dir, doc)
    if default_port is not None and isinstance(completed.get("networking"), dict) \
            and not was_given(ctx, "networking", "local_port"):
        completed["networking"]["local_port"] = default_port
    complete(completed, project_dir, bad)
    findings += run_rules(completed, ctx, bad, kind="TrafficSplitter")
    return CheckedAPI(completed, findings, notices_for(doc))


def splitter_target_findings(docs: Sequence[dict[str, Any]], known: Collection[str] | None
                             ) -> list[tuple[int, Finding]]:
    """The apis of each splitter among `docs` (completed documents of any kind) exist and are
    Realtime APIs: (index, finding) each. A target that no document names is refused only when
    `known` (the names of the APIs deployed elsewhere) is given and lacks it."""
    apis = {d.get("name") for d in docs if d.get("kind") not in ("TrafficSplitter", "BatchAPI")} | set(known or ())
    splitters = {d.get("name") for d in docs if d.get("kind") == "TrafficSplitter"}
    batch_apis = {d.get("name") for d in docs if d.get("kind") == "BatchAPI"}
    out: list[tuple[int, Finding]] = []
    for i, doc in enumerate(docs):
        targets = doc.get("apis") if doc.get("kind") == "TrafficSplitter" else None
        for j, target in enumerate(targets if isinstance(targets, list) else ()):
            name = target.get("name") if isinstance(target, dict) else None
            if not isinstance(name, str) or name == doc.get("name"):
                continue  # the schema or not_targeting_itself said it
            if name in splitters and name not in apis:  # both: the name clash is said
                out.append((i, Finding(("apis", j, "name"), f"{name!r} is a traffic splitter; a splitter "
                                       "routes to Realtime APIs only")))
            elif name in batch_apis and name not in apis:
                out.append((i, Finding(("apis", j, "name"), f"{name!r} is a BatchAPI; a splitter "
                                       "routes to Realtime APIs only")))
            elif known is not None and name not in apis:
                listed = ", ".join(sorted(n for n in apis if isinstance(n, str))) or "none"
                out.append((i, Finding(("apis", j, "name"), f"no Realtime API named {name!r} is in this "
                                       f"configuration or deployed (apis: {listed})",
                                       kind=FindingKind.MISSING_TARGET)))
    return out


def cross_api_findings(apis: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[int, Finding]]:
    """Rules across all loaded APIs: `apis` are (where, completed doc); returns (index, finding)."""
    out: list[tuple[int, Finding]] = []
    names: dict[str, int] = {}
    routes: dict[tuple[int, str], int] = {}
    for i, (_, doc) in enumerate(apis):
        name = doc.get("name")
        if isinstance(name, str):
            if name in names:
                first = apis[names[name]]
                if "TrafficSplitter" in (doc.get("kind"), first[1].get("kind")):
                    message = (f"name {name!r} is already used by the {_what(first[1])} at {first[0]}; the "
                               "names of apis and traffic splitters must be unique")
                else:
                    message = f"api name {name!r} is already used by the api at {first[0]}; api names must be unique"
                out.append((i, Finding(("name",), message)))
            names.setdefault(name, i)
        net = doc.get("networking")
        if isinstance(net, dict) and isinstance(net.get("endpoint"), str) and isinstance(net.get("local_port"), int):
            key = (net["local_port"], net["endpoint"])
            if key in routes:
                j = routes[key]
                out.append((i, Finding(("networking", "endpoint"),
                                       f"endpoint {key[1]} on port {key[0]} is already used by "
                                       f"{_what(apis[j][1])} {apis[j][1].get('name')!r} ({apis[j][0]}); give "
                                       "one of them another networking.endpoint or networking.local_port")))
            routes.setdefault(key, i)
    return out


def _what(doc: dict[str, Any]) -> str:
    return {"TrafficSplitter": "traffic splitter", "BatchAPI": "batch api"}.get(str(doc.get("kind")), "api")
