"""Step 3 of validating an API document: cross-field rules with Cortex 0.23's meaning.

Each rule is a small named function that declares the fields it reads (@rule) and is
skipped when one of them already failed the schema, so a type error is reported once and
never crashes a rule. run_rules() runs them in the order they are declared here, those of
the document's kind (RealtimeAPI and BatchAPI, the default, share the predictor's; TrafficSplitter:
the rules of its `apis`; BatchAPI: one process, one thread per worker). The last
few rules read the filesystem (predictor file, model layouts); paths are already absolute
(validate.complete()).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cortexd.spec import units
from cortexd.spec.findings import Finding, Path_, is_bad
from predictor_runtime.model_layout import describe_folder, local_model_problem


@dataclass(frozen=True)
class RuleContext:
    project_dir: str
    given: dict[str, Any]  # the document as written (before defaults), to tell set from defaulted


Rule = Callable[[dict[str, Any], RuleContext], Iterator[Finding]]
RULES: list[tuple[Rule, tuple[Path_, ...], tuple[str, ...]]] = []  # (rule, inputs, kinds)
API_KINDS = ("RealtimeAPI", "BatchAPI")  # the kinds with a predictor, networking and compute


def rule(*inputs: str, kind: str | tuple[str, ...] = API_KINDS) -> Callable[[Rule], Rule]:
    """Register a cross-field rule reading `inputs` (dotted paths) of documents of `kind` (one or
    several); it runs only when they passed the schema."""
    paths = tuple(tuple(i.split(".")) for i in inputs)
    kinds = (kind,) if isinstance(kind, str) else kind

    def register(fn: Rule) -> Rule:
        RULES.append((fn, paths, kinds))
        return fn

    return register


def was_given(ctx: RuleContext, *path: str) -> bool:
    """Whether the document as written sets the field at `path` (rather than a default)."""
    node: Any = ctx.given
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _pred(doc: dict[str, Any]) -> dict[str, Any]:
    predictor = doc.get("predictor")
    return predictor if isinstance(predictor, dict) else {}


@rule("predictor.model_path", "predictor.models")
def model_path_xor_models(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    p = _pred(doc)
    if "model_path" in p and "models" in p:
        yield Finding(("predictor", "models"), "cannot be provided along with predictor.model_path; "
                      "use model_path for one model or models for several", on_key=True)


@rule("predictor.models")
def models_paths_xor_dir(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    models = _pred(doc).get("models")
    if not isinstance(models, dict):
        return
    if "paths" in models and "dir" in models:
        yield Finding(("predictor", "models", "dir"), "cannot be provided along with models.paths; "
                      "give either a list of paths or one dir", on_key=True)
    elif "paths" not in models and "dir" not in models:
        yield Finding(("predictor", "models"), "expected either models.paths (a list of named models) "
                      "or models.dir (a folder of models); found neither", on_key=True)


@rule("predictor.models.paths")
def model_names_unique(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    seen: dict[str, int] = {}
    for i, entry in enumerate((_pred(doc).get("models") or {}).get("paths") or ()):
        name = entry["name"]
        if name in seen:
            yield Finding(("predictor", "models", "paths", i, "name"),
                          f"duplicate model name {name!r} (also used by predictor.models.paths[{seen[name]}])")
        seen.setdefault(name, i)


@rule("predictor.models.cache_size", "predictor.models.disk_cache_size")
def cache_sizes_together(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    models = _pred(doc).get("models") or {}
    given = [k for k in ("cache_size", "disk_cache_size") if k in models]
    if len(given) == 1:
        other = "disk_cache_size" if given[0] == "cache_size" else "cache_size"
        yield Finding(("predictor", "models", given[0]),
                      f"cache_size and disk_cache_size must be given together; found {given[0]} "
                      f"without {other}", on_key=True)


@rule("predictor.models.cache_size", "predictor.models.disk_cache_size")
def cache_size_within_disk_cache_size(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    models = _pred(doc).get("models") or {}
    if "cache_size" in models and "disk_cache_size" in models \
            and models["cache_size"] > models["disk_cache_size"]:
        yield Finding(("predictor", "models", "cache_size"),
                      f"expected a value <= disk_cache_size ({models['disk_cache_size']}); "
                      f"found {models['cache_size']}")


@rule("predictor.models.cache_size", "predictor.models.disk_cache_size", "predictor.processes_per_replica")
def caching_needs_one_process(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    p = _pred(doc)
    models = p.get("models") or {}
    if ("cache_size" in models or "disk_cache_size" in models) and p.get("processes_per_replica", 1) != 1:
        yield Finding(("predictor", "processes_per_replica"),
                      "model caching (cache_size / disk_cache_size) requires processes_per_replica to be 1; "
                      f"found {p['processes_per_replica']}")


@rule("predictor.type", "predictor.model_path", "predictor.models")
def model_required(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    p = _pred(doc)
    if p.get("type") in ("tensorflow", "onnx") and "model_path" not in p and "models" not in p:
        yield Finding(("predictor",), f"a {p['type']} predictor needs a model: set predictor.model_path "
                      "(one model) or predictor.models (several)", on_key=True)


@rule("predictor.server_side_batching", "predictor.processes_per_replica", "predictor.threads_per_process")
def batch_size_within_concurrency(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    p = _pred(doc)
    batching = p.get("server_side_batching")
    if not isinstance(batching, dict):
        return
    procs, threads = p["processes_per_replica"], p["threads_per_process"]
    if batching["max_batch_size"] > procs * threads:
        yield Finding(("predictor", "server_side_batching", "max_batch_size"),
                      f"expected a value <= processes_per_replica * threads_per_process "
                      f"({procs} * {threads} = {procs * threads}), so that a full batch can be in flight; "
                      f"found {batching['max_batch_size']} (raise threads_per_process or lower max_batch_size)")


@rule("predictor.server_side_batching.batch_interval")
def batch_interval_positive(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    batching = _pred(doc).get("server_side_batching")
    if isinstance(batching, dict) and units.parse_duration(batching["batch_interval"]) <= 0:
        yield Finding(("predictor", "server_side_batching", "batch_interval"),
                      f"expected a duration > 0 such as \"100ms\"; found {batching['batch_interval']!r}")


@rule("autoscaling.min_replicas", "autoscaling.max_replicas", "autoscaling.init_replicas", kind="RealtimeAPI")
def replica_bounds(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    a = doc["autoscaling"]
    lo, hi = a["min_replicas"], a["max_replicas"]
    if lo > hi:
        yield Finding(("autoscaling", "min_replicas"), f"expected a value <= max_replicas ({hi}); found {lo}")
        return
    init = a.get("init_replicas", lo)
    if init < lo:
        yield Finding(("autoscaling", "init_replicas"), f"expected a value >= min_replicas ({lo}); found {init}")
    if init > hi:
        yield Finding(("autoscaling", "init_replicas"), f"expected a value <= max_replicas ({hi}); found {init}")


@rule("autoscaling.target_replica_concurrency", "autoscaling.max_replica_concurrency", kind="RealtimeAPI")
def target_concurrency_within_max(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    a = doc["autoscaling"]
    target = a.get("target_replica_concurrency")
    if target is not None and target > a["max_replica_concurrency"]:
        how = "" if was_given(ctx, "autoscaling", "target_replica_concurrency") else (
            " (the default, processes_per_replica * threads_per_process)")
        yield Finding(("autoscaling", "target_replica_concurrency"),
                      f"expected a value <= max_replica_concurrency ({a['max_replica_concurrency']}); "
                      f"found {target:g}{how}")


@rule("autoscaling.window", kind="RealtimeAPI")
def window_multiple_of_tick(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    raw = doc["autoscaling"]["window"]
    nanos = round(units.parse_duration(raw) * 1e9)
    if nanos < 10 * 10**9:
        yield Finding(("autoscaling", "window"), f"expected a duration of at least 10s; found {raw!r}")
    elif nanos % (10 * 10**9):
        yield Finding(("autoscaling", "window"), "expected a multiple of 10s (the autoscaler decides every "
                      f"10s), such as \"60s\" or \"1m30s\"; found {raw!r}")


@rule("update_strategy.max_surge", "update_strategy.max_unavailable", kind="RealtimeAPI")
def surge_or_unavailable_nonzero(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    u = doc["update_strategy"]
    if units.surge_is_zero(units.parse_surge(u["max_surge"])) and units.surge_is_zero(
            units.parse_surge(u["max_unavailable"])):
        yield Finding(("update_strategy",), "max_surge and max_unavailable cannot both be 0 (a rolling update "
                      "could never make progress); set one of them above 0", on_key=True)


@rule("predictor.env")
def env_keys_not_reserved(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    for key in _pred(doc).get("env") or {}:
        if str(key).startswith("CORTEX_"):
            yield Finding(("predictor", "env", key), "environment variable names starting with CORTEX_ "
                          "are reserved for cortexd; rename it", on_key=True)


@rule("compute.inf")
def no_inferentia(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    inf = (doc.get("compute") or {}).get("inf", 0)
    if inf > 0:
        yield Finding(("compute", "inf"), "Inferentia (compute.inf) is not available on one host; "
                      f"remove it or set it to 0 (found {inf})")


@rule("predictor.processes_per_replica", "predictor.threads_per_process", kind="BatchAPI")
def one_process_one_thread(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    """A BatchAPI worker runs one batch at a time (Cortex 0.23: "is not supported for BatchAPI")."""
    for key in ("processes_per_replica", "threads_per_process"):
        if _pred(doc).get(key, 1) > 1:
            yield Finding(("predictor", key), f"not supported for kind BatchAPI (a worker runs one batch at a "
                          f"time); remove it or set it to 1 (found {_pred(doc)[key]})")


# TrafficSplitter rules (Cortex 0.23's ValidateTrafficSplitter; shadows as Cortex 0.32 has them).
# Targets across documents (unknown, a splitter) are validate.splitter_target_findings'.


@rule("apis", kind="TrafficSplitter")
def weights_sum_to_100(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    primaries = [t for t in doc["apis"] if not t.get("shadow")]
    total = sum(t["weight"] for t in primaries)
    if primaries and total != 100:
        each = ", ".join(f"{t['name']}: {t['weight']}" for t in primaries)
        yield Finding(("apis",), f"expected the weights of the apis to sum to 100; found {total} ({each})"
                      + ("; a shadow's weight is the share of requests copied to it, outside the sum"
                         if len(primaries) < len(doc["apis"]) else ""), on_key=True)
    elif not primaries:
        yield Finding(("apis",), "expected at least one api that is not a shadow (shadows get copies of "
                      "requests; another api must answer them)", on_key=True)


@rule("apis", kind="TrafficSplitter")
def targets_unique(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    seen: dict[str, int] = {}
    for i, target in enumerate(doc["apis"]):
        name = target["name"]
        if name in seen:
            yield Finding(("apis", i, "name"), f"api {name!r} is listed twice (also apis[{seen[name]}]); "
                          "list each api once, with its whole weight")
        seen.setdefault(name, i)


@rule("apis", kind="TrafficSplitter")
def one_shadow(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    shadows = [i for i, t in enumerate(doc["apis"]) if t.get("shadow")]
    for i in shadows[1:]:
        yield Finding(("apis", i, "shadow"), f"only one api of a splitter may be a shadow (apis[{shadows[0]}] "
                      "is one already)")


@rule("name", "apis", kind="TrafficSplitter")
def not_targeting_itself(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    for i, target in enumerate(doc["apis"]):
        if target["name"] == doc["name"]:
            yield Finding(("apis", i, "name"), "a traffic splitter cannot route to itself; name a Realtime API")


# Rules that read the filesystem: paths are already absolute (validate.complete()).

_S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def _location_problem(ptype: str, location: str, project_dir: str) -> str | None:
    if is_s3(location):
        if not _S3_URL.match(location):
            return f"expected an S3 URL such as s3://my-bucket/path/to/model; found {location!r}"
        return None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location):
        return f"only local paths and s3:// URLs are supported; found {location!r}"
    if not os.path.exists(location):  # said here, with where relative paths start
        return f"not found: {location} (relative paths start at the cortex.yaml folder, {project_dir})"
    return local_model_problem(ptype, location)


@rule("predictor.path")
def predictor_file_exists(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    path = _pred(doc).get("path")
    if not isinstance(path, str):
        return
    if not os.path.exists(path):
        yield Finding(("predictor", "path"), f"file not found: {path} (relative paths start at the "
                      f"cortex.yaml folder, {ctx.project_dir})")
    elif not os.path.isfile(path):
        yield Finding(("predictor", "path"), f"expected a python file; found a folder: {path}")
    elif not path.endswith(".py"):
        yield Finding(("predictor", "path"), f"expected a python file ending in .py; found {path}")


@rule("predictor.python_path")
def python_path_is_folder(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    path = _pred(doc)["python_path"]
    if not os.path.isdir(path):
        what = "a file" if os.path.exists(path) else "nothing"
        yield Finding(("predictor", "python_path"), f"expected a folder; found {what} at {path}")


@rule("predictor.type", "predictor.model_path")
def model_path_usable(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    p = _pred(doc)
    if "model_path" in p:
        problem = _location_problem(p["type"], p["model_path"], ctx.project_dir)
        if problem:
            yield Finding(("predictor", "model_path"), problem)


@rule("predictor.type", "predictor.models")
def models_usable(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    p = _pred(doc)
    models = p.get("models")
    if not isinstance(models, dict):
        return
    for i, entry in enumerate(models.get("paths") or ()):
        problem = _location_problem(p["type"], entry["model_path"], ctx.project_dir)
        if problem:
            yield Finding(("predictor", "models", "paths", i, "model_path"), problem)
    folder = models.get("dir")
    if folder is None:
        return
    problem = _location_problem("python", folder, ctx.project_dir)
    if problem or is_s3(folder):
        if problem:
            yield Finding(("predictor", "models", "dir"), problem)
        return
    if not os.path.isdir(folder):
        yield Finding(("predictor", "models", "dir"), f"expected a folder holding one folder per model; "
                      f"found a file: {folder}")
        return
    subdirs = sorted(n for n in os.listdir(folder)
                     if not n.startswith(".") and os.path.isdir(os.path.join(folder, n)))
    if not subdirs:
        yield Finding(("predictor", "models", "dir"), f"expected one folder per model; found "
                      f"{describe_folder(folder)} in {folder}")
    for name in subdirs:
        problem = local_model_problem(p["type"], os.path.join(folder, name))
        if problem:
            yield Finding(("predictor", "models", "dir"), f"model {name!r}: {problem}")


def run_rules(doc: dict[str, Any], ctx: RuleContext, bad: set[Path_], kind: str = "RealtimeAPI") -> list[Finding]:
    out: list[Finding] = []
    for fn, inputs, rule_kind in RULES:
        if kind not in rule_kind or any(is_bad(path, bad) for path in inputs):
            continue
        out.extend(fn(doc, ctx))
    return out
