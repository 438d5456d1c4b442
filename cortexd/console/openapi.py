"""An API's OpenAPI 3.1 document: what its endpoint accepts and answers, for client generators.

Pure: a spec (cortexd/spec/model.py APISpec) and the predictor's source text in, a document out.
The predictor is read with `ast`, never imported (the daemon runs no predictor code): its
`predict` method (or a legacy API's `predict` function) says whether it takes query
parameters, and its annotations, where it has them, give the payload's and the answer's
schemas (`dict`, `list[float]`, `str`, `bytes`, ...; anything else is left open). The runtime
(predictor_runtime/payload.py) decides the body by its Content-Type as Cortex 0.23 did: JSON,
text, form data, or bytes; so each is a content type of the request body.
"""

from __future__ import annotations

import ast
from typing import Any

_CLASSES = ("PythonPredictor", "TensorFlowPredictor", "ONNXPredictor")
_SIMPLE: dict[str, dict[str, Any]] = {
    "dict": {"type": "object"}, "Dict": {"type": "object"}, "Mapping": {"type": "object"},
    "list": {"type": "array"}, "List": {"type": "array"}, "Sequence": {"type": "array"},
    "tuple": {"type": "array"}, "Tuple": {"type": "array"},
    "str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
    "bool": {"type": "boolean"}, "None": {"type": "null"},
    "bytes": {"type": "string", "contentMediaType": "application/octet-stream"},
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}}}


def annotation_schema(node: ast.expr | None) -> dict[str, Any]:
    """The JSON Schema of a type annotation, as far as a plain annotation says; {} when unknown."""
    if node is None:
        return {}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "dict[str, float]"
        try:
            return annotation_schema(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return {}
    if isinstance(node, ast.Constant) and node.value is None:
        return {"type": "null"}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | Y
        return {"anyOf": [annotation_schema(node.left), annotation_schema(node.right)]}
    name = _name(node.value if isinstance(node, ast.Subscript) else node)
    schema = dict(_SIMPLE.get(name, {}))
    if not isinstance(node, ast.Subscript):
        return schema
    args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    if name in ("list", "List", "Sequence") and args:
        schema["items"] = annotation_schema(args[0])
    elif name in ("dict", "Dict", "Mapping") and len(args) == 2:
        schema["additionalProperties"] = annotation_schema(args[1])
    elif name == "Optional" and args:
        return {"anyOf": [annotation_schema(args[0]), {"type": "null"}]}
    elif name == "Union":
        return {"anyOf": [annotation_schema(a) for a in args]}
    return schema


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # typing.List
        return node.attr
    return ""


def find_predict(source: str) -> ast.FunctionDef | None:
    """The predictor's `predict`: a method of the predictor class, else a module-level function
    (a legacy API's); None when the source does not parse or has none."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in _CLASSES:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "predict":
                    return item
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "predict"), None)


def _request_body(payload: dict[str, Any]) -> dict[str, Any]:
    return {"required": False, "content": {
        "application/json": {"schema": payload},
        "text/plain": {"schema": {"type": "string"}},
        "multipart/form-data": {"schema": {"type": "object"}},
        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}},
    }}


def _responses(answer: dict[str, Any]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": _ERROR}}}
    return {
        "200": {"description": "the prediction: JSON, text or bytes, as predict returns it", "content": {
            "application/json": {"schema": answer}, "text/plain": {"schema": {"type": "string"}},
            "application/octet-stream": {"schema": {"type": "string",
                                                    "contentMediaType": "application/octet-stream"}}}},
        "400": {"description": "the body could not be read (malformed JSON, ...)", **error},
        "413": {"description": "the body is over the size limit", **error},
        "500": {"description": "predict raised", **error},
        "503": {"description": "no replica can take it now (starting, in error, or at capacity)", **error},
    }


def document(name: str, endpoint: str, server_url: str, predictor_source: str | None, *,
             kind: str = "RealtimeAPI", predictor_type: str = "python") -> dict[str, Any]:
    """The OpenAPI 3.1 document of one API served at `server_url` + `endpoint`."""
    predict = find_predict(predictor_source) if predictor_source is not None else None
    legacy = kind == "api"
    params: list[str] = [a.arg for a in predict.args.args if a.arg != "self"] if predict is not None else []
    payload_arg = next((a for a in predict.args.args if a.arg in ("payload", "sample")), None) if predict else None
    payload = annotation_schema(payload_arg.annotation) if payload_arg is not None else {}
    answer = annotation_schema(predict.returns) if predict is not None else {}
    operation: dict[str, Any] = {
        "operationId": f"predict_{_identifier(name)}",
        "summary": f"a prediction of {name} ({predictor_type} predictor)",
        "requestBody": _request_body(payload),
        "responses": _responses(answer),
    }
    if "query_params" in params and not legacy:
        operation["parameters"] = [{
            "name": "query_params", "in": "query", "required": False, "style": "form", "explode": True,
            "description": "any query parameters: predict receives them as query_params",
            "schema": {"type": "object", "additionalProperties": {"type": "string"}}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": name, "version": "1",
                 "description": f"cortexd {kind} {name!r}: POST a payload to {endpoint}"},
        "servers": [{"url": server_url}],
        "paths": {endpoint: {"post": operation}},
    }


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
