"""Validation of one API document (a plain dict) against config_schema.json and Cortex's rules.

    check_api(doc, project_dir) -> CheckedAPI(doc=<defaulted, paths resolved>, findings, notices)

Three steps, all problems collected in one pass (docker-compose's config/validation.py
is the model):

1. jsonschema (`iter_errors`) against config_schema.json; every error is rewritten
   as a sentence saying what was expected and what was found.
2. Defaults: filled from the schema's `default` keywords (the schema is the single
   source of defaults), then the few defaults that depend on other fields
   (init_replicas, target_replica_concurrency, endpoint, python_path), and
   relative paths resolved against the cortex.yaml folder.
3. Cross-field rules: small named functions with Cortex 0.23's meaning. Each
   declares the fields it reads and is skipped when one of them already failed
   the schema, so a type error is reported once and never crashes a rule.
   The last few rules read the filesystem (predictor file, model layouts); they
   are the only I/O here besides reading the schema file.

Findings carry a field path, not a location: spec.load maps paths to file:line:column
(it alone knows the YAML marks) and to legacy field names.
"""

from __future__ import annotations

import copy
import difflib
import enum
import functools
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from cortexd.spec import units
from predictor_runtime.model_layout import describe_folder, local_model_problem

Path_ = tuple[str | int, ...]

PREDICTOR_TYPES = ("python", "tensorflow", "onnx")

# Where config_schema.json is looked for, in order: the repository root (source
# checkout, editable install), then the copy packaged as cortexd/config_schema.json
# (non-editable install; setup.py copies it there at build time).
SCHEMA_LOCATIONS = (
    Path(__file__).resolve().parents[2] / "config_schema.json",
    Path(__file__).resolve().parents[1] / "config_schema.json",
)


class FindingKind(enum.Enum):
    """What a finding says is wrong, where code acts on it (spec/load.py's _merge), not only a person."""

    OTHER = "other"
    # the value is not of a type, choice or format the field takes, and the message says what
    # it takes and what was found (the schema's type, enum, const, pattern and format errors)
    FORM = "form"


@dataclass(frozen=True)
class Finding:
    """One problem (or notice) in an API document, located by field path."""

    path: Path_
    message: str
    on_key: bool = False  # point at the field's key (unknown field...) rather than its value
    kind: FindingKind = FindingKind.OTHER


@dataclass
class CheckedAPI:
    doc: dict[str, Any]  # defaulted, derived defaults filled, local paths absolute
    findings: list[Finding] = field(default_factory=list)
    notices: list[Finding] = field(default_factory=list)


def format_path(path: Sequence[str | int]) -> str:
    """("predictor", "models", "paths", 1, "name") -> "predictor.models.paths[1].name"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# -- the schema -------------------------------------------------------------------


@functools.cache
def load_schema() -> dict[str, Any]:
    for location in SCHEMA_LOCATIONS:
        if location.is_file():
            with open(location, encoding="utf-8") as f:
                return json.load(f)
    raise FileNotFoundError(
        "config_schema.json not found (looked in "
        + ", ".join(str(p) for p in SCHEMA_LOCATIONS)
        + "); the cortexd installation is incomplete: reinstall it"
    )


def _definition(name: str) -> dict[str, Any]:
    return load_schema()["$defs"][name]


def _resolve(schema: Any) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = _definition(schema["$ref"].rsplit("/", 1)[-1]) | {
            k: v for k, v in schema.items() if k != "$ref"
        }
    return schema


_API_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ENDPOINT_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")


def check_api_name(value: Any) -> str:
    if not isinstance(value, str) or not _API_NAME.match(value) or len(value) > 63:
        raise ValueError(
            "expected a DNS-1035 name (lowercase letters, digits and '-', starting with a letter, "
            f"ending with a letter or digit, at most 63 characters, e.g. \"iris-classifier\"); "
            f"found {units.describe_value(value)}"
            + (f" ({len(value)} characters)" if isinstance(value, str) and len(value) > 63 else "")
        )
    return value


def normalize_endpoint(value: Any) -> str:
    """ "x/y/" -> "/x/y"; refuses empty segments, '.'/'..', query strings and odd characters."""
    expected = (
        'expected a URL path such as "/iris-classifier" (letters, digits, "-", "_", ".", "~" '
        'and single "/" between segments; no "." or ".." segments, no query string)'
    )
    if not isinstance(value, str):  # ValueError, not TypeError: jsonschema's format checker catches it
        raise ValueError(f"{expected}; found {units.describe_value(value)}")
    text = value.strip()
    body = text.removeprefix("/").removesuffix("/")
    segments = body.split("/")
    for seg in segments:
        if not _ENDPOINT_SEGMENT.match(seg) or seg in (".", ".."):
            raise ValueError(f"{expected}; found {units.describe_value(value)}")
    return "/" + "/".join(segments)


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    parsers: dict[str, Callable[[Any], Any]] = {
        "cpu": lambda v: v is None or units.parse_cpu(v),
        "memory": lambda v: v is None or units.parse_memory(v),
        "duration": units.parse_duration,
        "surge": units.parse_surge,
        "endpoint": normalize_endpoint,
        "api-name": check_api_name,
    }
    for name, parse in parsers.items():
        # a format function must return truthy; a ValueError's text is the message
        checker.checks(name, raises=ValueError)(lambda v, parse=parse: parse(v) is not False)
    return checker


@functools.cache
def _validator(def_name: str) -> Draft202012Validator:
    schema = {"$defs": load_schema()["$defs"], "$ref": f"#/$defs/{def_name}"}
    return Draft202012Validator(schema, format_checker=_format_checker())


# -- step 1: jsonschema errors as sentences ------------------------------------------

_TYPE_NAMES = {
    "integer": "an integer", "number": "a number", "string": "a string", "object": "a mapping",
    "array": "a list", "boolean": "true or false", "null": "null",
}


# why an upper bound is what it is (the schema's maxima beyond Cortex's own)
BOUND_REASONS = {
    ("maximum", 1000): " (a sane bound for one host)",
    ("maximum", units.INT32_MAX): " (an int32, as Kubernetes has it)",
}


def schema_findings(doc: Any, def_name: str = "realtime_api") -> list[Finding]:
    """All schema errors of `doc` against $defs/<def_name>, rewritten as sentences."""
    errors = list(_validator(def_name).iter_errors(doc))
    # a format checker's message says more than a type error at the same place ("60" vs "60s")
    formatted = {tuple(e.absolute_path) for e in errors if e.validator == "format"}
    out: list[Finding] = []
    for error in errors:
        if error.validator == "type" and tuple(error.absolute_path) in formatted:
            continue
        for finding in _rewrite(error, doc):
            if finding not in out:
                out.append(finding)
    return out


def _most_specific(errors: Sequence[ValidationError]) -> ValidationError:
    """For oneOf/anyOf: prefer a branch whose type matched, then the deepest error."""
    typed = [e for e in errors if e.validator != "type"] or list(errors)
    return max(typed, key=lambda e: len(e.absolute_path))


def _describe_schema(schema: Any) -> str:
    schema = _resolve(schema)
    if isinstance(schema, dict):
        if "description" in schema:
            return schema["description"]
        if "enum" in schema:
            return "one of " + ", ".join(map(str, schema["enum"]))
        if "type" in schema and isinstance(schema["type"], str):
            return _TYPE_NAMES.get(schema["type"], schema["type"])
    return "a value"


def _subschema_at(schema: Any, rel: Path_) -> Any:
    """The schema describing the value at `rel` below `schema` (None if it has no place)."""
    for part in rel:
        schema = _resolve(schema)
        if not isinstance(schema, dict):
            return None
        if isinstance(part, int):
            schema = schema.get("items")
        else:
            schema = schema.get("properties", {}).get(part)
        if schema is None:
            return None
    return _resolve(schema)


def _predictor_type(doc: Any) -> str | None:
    if isinstance(doc, dict) and isinstance(doc.get("predictor"), dict):
        t = doc["predictor"].get("type")
        if t in PREDICTOR_TYPES:
            return t
    return None


def _unknown_field_message(doc: Any, path: Path_, key: Any, known: list[str]) -> str:
    ptype = _predictor_type(doc)
    if path[:1] == ("predictor",) and ptype is not None:
        owners = []
        for other in PREDICTOR_TYPES:
            sub = _subschema_at(_definition(f"{other}_predictor"), path[1:])
            if other != ptype and isinstance(sub, dict) and key in sub.get("properties", {}):
                owners.append(other)
        if owners:
            return (f"{key!r} is not supported for predictor type {ptype!r} "
                    f"({' and '.join(owners)} predictors only)")
    guess = difflib.get_close_matches(str(key), known, n=1)
    hint = f"; did you mean {guess[0]!r}?" if guess else ""
    return f"unknown field {key!r}{hint} (valid fields here: {', '.join(known)})"


FORM = FindingKind.FORM


def _rewrite(error: ValidationError, doc: Any) -> list[Finding]:
    path: Path_ = tuple(error.absolute_path)
    v, value, inst = error.validator, error.validator_value, error.instance
    found = units.describe_value(inst)
    if v in ("oneOf", "anyOf") and error.context:
        return _rewrite(_most_specific(error.context), doc)
    if v == "required":
        props = error.schema.get("properties", {})
        missing = [f for f in value if isinstance(inst, dict) and f not in inst]
        return [Finding(path + (f,), f"missing required field; expected {_describe_schema(props.get(f))}")
                for f in missing]
    if v == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        return [Finding(path + (k,), _unknown_field_message(doc, path, k, known), on_key=True)
                for k in inst if k not in known]
    if v == "type":
        names = [value] if isinstance(value, str) else list(value)
        msg = f"expected {' or '.join(_TYPE_NAMES.get(n, n) for n in names)}; found {found}"
        if names == ["string"] and isinstance(inst, (int, float)):
            msg += f" (quote it: \"{str(inst).lower() if isinstance(inst, bool) else inst}\")"
        return [Finding(path, msg, kind=FORM)]
    if v == "enum":
        return [Finding(path, f"expected one of {', '.join(map(str, value))}; found {found}", kind=FORM)]
    if v == "const":
        return [Finding(path, f"expected {value!r}; found {found}", kind=FORM)]
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if v in bounds:
        shown = inst if len(str(inst)) <= 30 else found
        why = BOUND_REASONS.get((v, value), "")
        return [Finding(path, f"expected a value {bounds[v]} {value}{why}; found {shown}")]
    if v == "minLength" and value == 1:
        return [Finding(path, "expected a non-empty string; found an empty string")]
    if v in ("minLength", "maxLength"):
        word = "at least" if v == "minLength" else "at most"
        return [Finding(path, f"expected {word} {value} characters; found {len(inst)}")]
    if v == "minItems":
        return [Finding(path, f"expected at least {value} item{'s' if value != 1 else ''}; found {found}")]
    if v == "pattern":
        return [Finding(path, f"expected {_describe_schema(error.schema)}; found {found}", kind=FORM)]
    if v == "format":
        return [Finding(path, str(error.cause) if error.cause else error.message, kind=FORM)]
    return [Finding(path, error.message)]


# -- step 2: defaults ---------------------------------------------------------------


def _applicable(schema: Any, value: Any) -> Iterator[dict[str, Any]]:
    """The schema and the parts of it that apply to `value` ($ref, allOf, if/then/else)."""
    if not isinstance(schema, dict):
        return
    yield schema
    if "$ref" in schema:
        yield from _applicable(_definition(schema["$ref"].rsplit("/", 1)[-1]), value)
    for sub in schema.get("allOf", ()):
        yield from _applicable(sub, value)
    if "if" in schema:
        branch = "then" if Draft202012Validator(schema["if"]).is_valid(value) else "else"
        yield from _applicable(schema.get(branch), value)


def _default_of(schema: Any) -> tuple[bool, Any]:
    while isinstance(schema, dict):
        if "default" in schema:
            return True, schema["default"]
        if "$ref" not in schema:
            break
        schema = _definition(schema["$ref"].rsplit("/", 1)[-1])
    return False, None


def _fill_defaults(value: Any, schema: Any) -> None:
    for sub in list(_applicable(schema, value)):
        if isinstance(value, dict):
            for key, prop in sub.get("properties", {}).items():
                if key not in value:
                    has, default = _default_of(prop)
                    if has:
                        value[key] = copy.deepcopy(default)
                if key in value:
                    _fill_defaults(value[key], prop)
        if isinstance(value, list) and "items" in sub:
            for item in value:
                _fill_defaults(item, sub["items"])


def apply_defaults(doc: dict[str, Any], def_name: str = "realtime_api") -> dict[str, Any]:
    """A deep copy of `doc` with every schema default filled in (values of the wrong type are left alone)."""
    out = copy.deepcopy(doc)
    _fill_defaults(out, {"$ref": f"#/$defs/{def_name}"})
    return out


def _is_bad(path: Path_, bad: set[Path_]) -> bool:
    """A path is bad when it, an ancestor or a descendant failed the schema."""
    return any(b[: len(path)] == path or path[: len(b)] == b for b in bad)


def _valid(doc: dict[str, Any], path: Path_, bad: set[Path_], kind: type | tuple[type, ...]) -> bool:
    node: Any = doc
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, kind) and not isinstance(node, bool) and not _is_bad(path, bad)


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


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
    if isinstance(models, dict) and not _is_bad(("predictor", "models"), bad):
        if isinstance(models.get("dir"), str):
            models["dir"] = _resolve_location(models["dir"], project_dir)
        for entry in models.get("paths") or ():
            if isinstance(entry, dict) and isinstance(entry.get("model_path"), str):
                entry["model_path"] = _resolve_location(entry["model_path"], project_dir)


# -- step 3: cross-field rules --------------------------------------------------------


@dataclass(frozen=True)
class RuleContext:
    project_dir: str
    given: dict[str, Any]  # the document as written (before defaults), to tell set from defaulted


Rule = Callable[[dict[str, Any], RuleContext], Iterator[Finding]]
RULES: list[tuple[Rule, tuple[Path_, ...]]] = []


def rule(*inputs: str) -> Callable[[Rule], Rule]:
    """Register a cross-field rule reading `inputs` (dotted paths); it runs only when they passed the schema."""
    paths = tuple(tuple(i.split(".")) for i in inputs)

    def register(fn: Rule) -> Rule:
        RULES.append((fn, paths))
        return fn

    return register


def _given(ctx: RuleContext, *path: str) -> bool:
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


@rule("autoscaling.min_replicas", "autoscaling.max_replicas", "autoscaling.init_replicas")
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


@rule("autoscaling.target_replica_concurrency", "autoscaling.max_replica_concurrency")
def target_concurrency_within_max(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    a = doc["autoscaling"]
    target = a.get("target_replica_concurrency")
    if target is not None and target > a["max_replica_concurrency"]:
        how = "" if _given(ctx, "autoscaling", "target_replica_concurrency") else (
            " (the default, processes_per_replica * threads_per_process)")
        yield Finding(("autoscaling", "target_replica_concurrency"),
                      f"expected a value <= max_replica_concurrency ({a['max_replica_concurrency']}); "
                      f"found {target:g}{how}")


@rule("autoscaling.window")
def window_multiple_of_tick(doc: dict[str, Any], ctx: RuleContext) -> Iterator[Finding]:
    raw = doc["autoscaling"]["window"]
    nanos = round(units.parse_duration(raw) * 1e9)
    if nanos < 10 * 10**9:
        yield Finding(("autoscaling", "window"), f"expected a duration of at least 10s; found {raw!r}")
    elif nanos % (10 * 10**9):
        yield Finding(("autoscaling", "window"), "expected a multiple of 10s (the autoscaler decides every "
                      f"10s), such as \"60s\" or \"1m30s\"; found {raw!r}")


@rule("update_strategy.max_surge", "update_strategy.max_unavailable")
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


# Rules that read the filesystem: paths are already absolute (complete()).

_S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")


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


def run_rules(doc: dict[str, Any], ctx: RuleContext, bad: set[Path_]) -> list[Finding]:
    out: list[Finding] = []
    for fn, inputs in RULES:
        if any(_is_bad(path, bad) for path in inputs):
            continue
        out.extend(fn(doc, ctx))
    return out


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
              default_port: int | None = None) -> CheckedAPI:
    """Validate and complete one RealtimeAPI-shaped document.

    legacy=True: `doc` is a translated legacy `kind: api` document that already
    passed the legacy schema; it gets the RealtimeAPI defaults and rules, and its
    predictor type becomes "legacy".
    default_port: the local_port of an API that sets none (`cortexd up --port`),
    instead of the schema's 8888.
    """
    findings = [] if legacy else schema_findings(doc)
    bad = {f.path for f in findings}
    if not legacy and _predictor_type(doc) is None:
        bad.add(("predictor",))  # the type selects the predictor's schema: nothing below it was checked
    completed = apply_defaults(doc)
    if legacy:
        completed["predictor"]["type"] = "legacy"
    if default_port is not None and isinstance(completed.get("networking"), dict) \
            and not _given(RuleContext(project_dir, doc), "networking", "local_port"):
        completed["networking"]["local_port"] = default_port
    complete(completed, project_dir, bad)
    findings += run_rules(completed, RuleContext(project_dir, doc), bad)
    return CheckedAPI(completed, findings, notices_for(doc))


def cross_api_findings(apis: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[int, Finding]]:
    """Rules across all loaded APIs: `apis` are (where, completed doc); returns (index, finding)."""
    out: list[tuple[int, Finding]] = []
    names: dict[str, int] = {}
    routes: dict[tuple[int, str], int] = {}
    for i, (_, doc) in enumerate(apis):
        name = doc.get("name")
        if isinstance(name, str):
            if name in names:
                out.append((i, Finding(("name",), f"api name {name!r} is already used by the api at "
                                       f"{apis[names[name]][0]}; api names must be unique")))
            names.setdefault(name, i)
        net = doc.get("networking")
        if isinstance(net, dict) and isinstance(net.get("endpoint"), str) and isinstance(net.get("local_port"), int):
            key = (net["local_port"], net["endpoint"])
            if key in routes:
                j = routes[key]
                out.append((i, Finding(("networking", "endpoint"),
                                       f"endpoint {key[1]} on port {key[0]} is already used by api "
                                       f"{apis[j][1].get('name')!r} ({apis[j][0]}); give one of them another "
                                       "networking.endpoint or networking.local_port")))
            routes.setdefault(key, i)
    return out
