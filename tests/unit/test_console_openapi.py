"""An API's OpenAPI document (cortexd/console/openapi.py), read from the predictor's source, never run."""

from __future__ import annotations

from openapi_spec_validator import validate

from cortexd.console.openapi import annotation_schema, document, find_predict

TYPED = """\
import os
os.system("never run")

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload: dict[str, list[float]], query_params) -> "list[int] | None":
        return [1]
"""


def _schema(text: str) -> dict:
    import ast
    return annotation_schema(ast.parse(text, mode="eval").body)


def test_annotations_become_schemas_as_far_as_they_say():
    assert _schema("dict[str, float]") == {"type": "object", "additionalProperties": {"type": "number"}}
    assert _schema("List[str]") == {"type": "array", "items": {"type": "string"}}
    assert _schema("typing.Optional[int]") == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert _schema("bytes")["contentMediaType"] == "application/octet-stream"
    assert _schema("np.ndarray") == {}  # unknown: left open
    assert annotation_schema(None) == {}


def test_a_typed_predictor_gives_its_payload_answer_and_query_parameters():
    doc = document("iris", "/iris", "http://127.0.0.1:8888", TYPED)
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": "http://127.0.0.1:8888"}]
    op = doc["paths"]["/iris"]["post"]
    body = op["requestBody"]["content"]
    assert body["application/json"]["schema"] == {
        "type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}}}
    assert {"text/plain", "multipart/form-data", "application/octet-stream"} <= body.keys()
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]}
    assert op["parameters"][0]["in"] == "query"
    assert {"400", "413", "500", "503"} <= op["responses"].keys()
    validate(doc)  # a valid OpenAPI 3.1 document, as client generators read it


def test_untyped_legacy_and_unreadable_predictors_get_an_open_document():
    untyped = "class PythonPredictor:\n    def predict(self, payload):\n        return 1\n"
    plain = document("a", "/a", "http://h:1", untyped)
    op = plain["paths"]["/a"]["post"]
    assert "parameters" not in op and op["requestBody"]["content"]["application/json"]["schema"] == {}
    legacy = document("b", "/b", "http://h:1", "def predict(sample: list, metadata):\n    return 1\n", kind="api")
    assert legacy["paths"]["/b"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {"type": "array"}
    validate(plain)
    validate(legacy)
    assert find_predict("class PythonPredictor(:") is None
    broken = document("c", "/c", "http://h:1", "def (")
    assert broken["paths"]["/c"]["post"]["operationId"] == "predict_c"
