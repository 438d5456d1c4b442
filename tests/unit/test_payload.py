"""Request payload parsing and response encoding rules (predictor_runtime.payload)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aiohttp import web

from predictor_runtime.payload import (
    NotSerializable,
    PayloadError,
    encode_json,
    encode_response,
    parse_body,
)

# ---- request bodies ---------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON",
    "application/vnd.api+json", "application/ld+json",
])
def test_json_types_are_parsed(content_type):
    assert parse_body(content_type, b'{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}


def test_json_scalar_body():
    assert parse_body("application/json", b"3") == 3


def test_bad_json_is_a_payload_error_with_the_parser_message():
    with pytest.raises(PayloadError) as info:
        parse_body("application/json", b"not json")
    assert str(info.value) == "invalid JSON body: Expecting value: line 1 column 1 (char 0)"


def test_empty_json_body_says_so():
    with pytest.raises(PayloadError) as info:
        parse_body("application/json", b"")
    assert str(info.value).startswith("invalid JSON body: the body is empty")


def test_non_utf8_json_is_a_payload_error():
    with pytest.raises(PayloadError) as info:
        parse_body("application/json", b'{"a": "\xff"}')
    assert str(info.value).startswith("invalid JSON body:")


def test_urlencoded_form_keeps_repeated_keys_and_blanks():
    form = parse_body("application/x-www-form-urlencoded", b"a=1&b=hello+world&a=2&empty=")
    assert form["a"] == "1"
    assert form.getall("a") == ["1", "2"]
    assert form["b"] == "hello world"
    assert form["empty"] == ""
    assert dict(form) == {"a": "1", "b": "hello world", "empty": ""}  # first value per key


def test_urlencoded_form_honours_charset():
    form = parse_body("application/x-www-form-urlencoded; charset=latin-1", "n=\xe9".encode("latin-1"))
    assert form["n"] == "\xe9"


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/octet-stream", "image/png"])
def test_other_types_are_raw_bytes(content_type):
    body = b"\x00\x01raw{"
    assert parse_body(content_type, body) == body


def test_no_body_without_a_type_is_empty_bytes():
    assert parse_body(None, b"") == b""


# ---- responses --------------------------------------------------------------------


def body_of(response: web.Response) -> bytes:
    assert isinstance(response, web.Response)
    return response.body  # type: ignore[return-value]


@pytest.mark.parametrize("value", [{"a": 1}, [1, "b"], 3, 2.5, True, None, {"nested": {"x": [None]}}])
def test_json_values(value):
    response = encode_response(value)
    assert response.content_type == "application/json"
    assert json.loads(body_of(response)) == value


def test_tuple_becomes_a_json_list():
    assert json.loads(body_of(encode_response((1, 2)))) == [1, 2]


def test_str_is_text_plain():
    response = encode_response("héllo")
    assert response.content_type == "text/plain"
    assert response.charset == "utf-8"
    assert body_of(response) == "héllo".encode()


@pytest.mark.parametrize("value", [b"\x00bin", bytearray(b"\x00bin"), memoryview(b"\x00bin")])
def test_bytes_are_octet_stream(value):
    response = encode_response(value)
    assert response.content_type == "application/octet-stream"
    assert body_of(response) == b"\x00bin"


def test_aiohttp_response_passes_through():
    original = web.Response(status=201, text="made", headers={"X-Custom": "1"})
    assert encode_response(original) is original


def test_numpy_values_become_json():
    value = {"array": np.arange(3), "matrix": np.eye(2, dtype=np.float32), "int": np.int64(7),
             "float": np.float32(0.5), "bool": np.bool_(True)}
    assert json.loads(encode_json(value)) == {
        "array": [0, 1, 2], "matrix": [[1.0, 0.0], [0.0, 1.0]], "int": 7, "float": 0.5, "bool": True}


def test_unserializable_value_names_its_type_and_the_fix():
    with pytest.raises(NotSerializable) as info:
        encode_response({1, 2})
    assert str(info.value).startswith("prediction of type set is not JSON serializable")
    assert str(info.value).endswith("return a dict/list/str/bytes or an aiohttp Response")


def test_unserializable_nested_value():
    with pytest.raises(NotSerializable) as info:
        encode_response({"when": object()})
    assert "Object of type object is not JSON serializable" in str(info.value)


def test_nan_is_refused_rather_than_sent_as_invalid_json():
    with pytest.raises(NotSerializable):
        encode_response({"score": float("nan")})
