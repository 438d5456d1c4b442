"""config_schema.json: where it is, its formats, its errors as sentences, its defaults.

The first two steps of validating an API document (validate.py runs them in order):

1. jsonschema (`iter_errors`) against config_schema.json; every error is rewritten
   as a sentence saying what was expected and what was found (schema_findings).
2. Defaults filled from the schema's `default` keywords (apply_defaults): the schema is the
   single source of defaults. The defaults that depend on other fields are validate.complete's.

The formats (cpu, memory, duration, surge, endpoint, api-name) are checked by spec.units'
parsers and the two checks here, so a format error says what the parser says. Reading the
schema file is the only I/O.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from cortexd.spec import units
from cortexd.spec.findings import Finding, FindingKind, Path_

PREDICTOR_TYPES = ("python", "tensorflow", "onnx")

# Where config_schema.json is looked for, in order: the repository root (source
# checkout, editable install), then the copy packaged as cortexd/config_schema.json
# (non-editable install; setup.py copies it there at build time).
SCHEMA_LOCATIONS = (
    Path(__file__).resolve().parents[2] / "config_schema.json",
    Path(__file__).resolve().parents[1] / "config_schema.json",
)


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


# -- before step 1: sections written with nothing under them -----------------------------

# The sections whose explicit null (the key written with nothing under it) reads as if the key
# were left out, by definition. Cortex 0.23's configreader accepted a null monitoring and
# server_side_batching (AllowExplicitNull), predictor.config (ConvertNullToEmpty), and, in local
# mode, autoscaling and update_strategy (AllowExplicitNull there). It refused a null compute
# ("cannot be empty or null"); cortexd takes it as the defaults, because `compute:` with its
# only field commented out (`# gpu: 1`, the remedy on a host without a GPU) asks for nothing
# else. Other nulls (networking, models, env) are refused as Cortex refused them.
NULL_MEANS_LEFT_OUT: dict[str, tuple[Path_, ...]] = {
    "realtime_api": (("compute",), ("autoscaling",), ("update_strategy",), ("monitoring",),
                     ("predictor", "config"), ("predictor", "server_side_batching")),
    "legacy_api": (("compute",),),
    "batch_api": (("compute",), ("predictor", "config"), ("predictor", "server_side_batching")),
}


def _parent(doc: Any, path: Path_) -> dict[str, Any] | None:
    """The mapping holding `path`'s last key, when every step to it is a mapping."""
    for part in path[:-1]:
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc if isinstance(doc, dict) else None


def null_sections_left_out(doc: Any, def_name: str = "realtime_api") -> Any:
    """`doc` without the null sections of NULL_MEANS_LEFT_OUT (a copy when it had one)."""
    nulls = [path for path in NULL_MEANS_LEFT_OUT.get(def_name, ())
             if (parent := _parent(doc, path)) is not None and path[-1] in parent and parent[path[-1]] is None]
    if not nulls:
        return doc
    out = copy.deepcopy(doc)
    for path in nulls:
        parent = _parent(out, path)
        assert parent is not None  # found in `doc`, of the same shape
        del parent[str(path[-1])]
    return out


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


def predictor_type(doc: Any) -> str | None:
    if isinstance(doc, dict) and isinstance(doc.get("predictor"), dict):
        t = doc["predictor"].get("type")
        if t in PREDICTOR_TYPES:
            return t
    return None


def _unknown_field_message(doc: Any, path: Path_, key: Any, known: list[str]) -> str:
    ptype = predictor_type(doc)
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


@functools.cache
def _required_somewhere() -> frozenset[str]:
    """Every field name some mapping of the schema requires (predictor, path, ...)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("required"), list):
                names.update(node["required"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_schema())
    return frozenset(names)


def _null_remedy(key: Any) -> str:
    """What to do about a mapping written with nothing under it (Cortex: "cannot be empty or null")."""
    if key in _required_somewhere():
        return "the key has nothing under it: give its fields"
    return "the key has nothing under it: give its fields, or remove the key to use the defaults"


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
        elif inst is None and "object" in names and path:
            msg += f" ({_null_remedy(path[-1])})"
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
