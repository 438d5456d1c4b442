"""Validating a Gateway API object as the API server would: the CRD's structural schema, strictly, and
its CEL rules.

The schema is the Gateway API project's own, for HTTPRoute v1 of its standard channel, kept in
tests/schemas/ as that release published it (kubernetes-validate ships Kubernetes' own kinds only,
and no PyPI package ships the Gateway API's CRDs). What the API server does, in its order:

1. defaults: each missing property with a `default` gets it (before the rules read the object);
2. the structural schema, strictly: a property the schema does not declare is an error (the API
   server prunes it silently; a manifest that relies on that is wrong), as kubernetes-validate's
   --strict does for built-in kinds; `metadata` is checked as an ObjectMeta by kubernetes-validate;
3. every `x-kubernetes-validations` rule at its place, evaluated with cel-python, `self` the value
   there (property names CEL reserves are escaped as Kubernetes does: `namespace` ->
   `__namespace__`); rules about updates (`oldSelf`) are skipped.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
from jsonschema import Draft7Validator

SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "gateway-api-v1.6.1-httproute-v1.json"
# CEL's reserved words that Kubernetes escapes as __word__ when they name a property
_CEL_RESERVED = {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
                 "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}


def load() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def _strict(schema: Any) -> Any:
    """The schema with additionalProperties: false wherever properties are declared and nothing else."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _defaulted(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _defaulted(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_defaulted(v, schema["items"]) for v in value]
    return value


def _cel_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {(f"__{k}__" if k in _CEL_RESERVED else k): _cel_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cel_value(v) for v in value]
    return value


def _rules(value: Any, schema: dict[str, Any], path: str, env: celpy.Environment) -> list[str]:
    problems = []
    for rule in schema.get("x-kubernetes-validations") or ():
        if "oldSelf" in rule["rule"]:
            continue
        try:
            ok = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(_cel_value(value))})
        except Exception as e:  # a rule the object makes fail to evaluate fails
            problems.append(f"{path or '.'}: rule {rule['rule']!r} could not be evaluated: {e}")
            continue
        if not ok:
            problems.append(f"{path or '.'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                problems += _rules(value[key], sub, f"{path}.{key}", env)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += _rules(item, schema["items"], f"{path}[{i}]", env)
    return problems


def problems(obj: dict[str, Any], k8s_version: str) -> list[str]:
    """Everything the API server would refuse in `obj` (an HTTPRoute), as sentences; [] when none."""
    crd = load()
    schema = crd["openAPIV3Schema"]
    out = []
    if (obj.get("apiVersion"), obj.get("kind")) != (f"{crd['group']}/{crd['version']}", crd["kind"]):
        out.append(f"expected apiVersion {crd['group']}/{crd['version']}, kind {crd['kind']}")
    obj = _defaulted(copy.deepcopy(obj), schema)
    body = {k: v for k, v in obj.items() if k != "metadata"}
    structural = {**_strict(schema), "properties": {**_strict(schema)["properties"], "metadata": {}}}
    out += [f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
            for e in Draft7Validator(structural).iter_errors({**body, "metadata": {}})]
    try:  # metadata: an ObjectMeta, checked strictly as a built-in kind's would be
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata")},
                                     k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        out.append(f"metadata: {e}")
    out += _rules(obj, schema, "", celpy.Environment())
    return out
