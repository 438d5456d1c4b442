"""Request payload parsing and response encoding rules (predictor_runtime.payload)."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
from aiohttp import web
from starlette.datastructures import FormData, QueryParams, UploadFile
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)

from predictor_runtime.http_server import Answer
from predictor_runtime.payload import (
    ASGIAnswer,
    Inflater,
    NotSerializable,
    PayloadError,
    PayloadTooLarge,
    encode_json,
    encode_legacy_response,
    encode_response,
    form_from_stream,
    parse_body,
    query_params,
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


async def chunks(*parts: bytes):
    for part in parts:
        yield part


async def form(content_type: str, *parts: bytes) -> FormData:
    return await form_from_stream(content_type, chunks(*parts), content_type.startswith("multipart/"))


async def test_urlencoded_form_is_starlette_formdata_with_repeated_keys_and_blanks():
    data = await form("application/x-www-form-urlencoded", b"a=1&b=hello+world&a=2&empty=")
    assert isinstance(data, FormData)
    assert data["a"] == "2"  # starlette (Cortex): the last value
    assert data.getlist("a") == ["1", "2"]
    assert data.getall("a") == ["1", "2"]  # aiohttp's name, kept for earlier cortexd predictors
    assert data["b"] == "hello world"
    assert data["empty"] == ""
    assert dict(data) == {"a": "2", "b": "hello world", "empty": ""}


async def test_urlencoded_form_latin1_bytes():
    data = await form("application/x-www-form-urlencoded; charset=latin-1", "n=\xe9".encode("latin-1"))
    assert data["n"] == "\xe9"


MULTIPART = (b"--XX\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n"
             b"--XX\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.txt\"\r\n"
             b"Content-Type: text/plain\r\n\r\nfile body\r\n--XX--\r\n")


async def test_multipart_gives_starlette_upload_files_across_chunk_boundaries():
    data = await form("multipart/form-data; boundary=XX", MULTIPART[:50], MULTIPART[50:90], MULTIPART[90:])
    assert data["field"] == "value"
    upload = data["upload"]
    assert isinstance(upload, UploadFile)
    assert (upload.filename, upload.content_type) == ("a.txt", "text/plain")
    assert await upload.read() == b"file body"
    await upload.seek(0)
    assert upload.file.read() == b"file body"
    assert data.has_files()
    await data.close()


@pytest.mark.parametrize(("content_type", "body", "reason"), [
    ("multipart/form-data", MULTIPART, "invalid multipart/form-data body: Missing boundary in multipart."),
    ("multipart/form-data; boundary=XX", b"--XX\r\nno headers end",
     "invalid multipart/form-data body: Invalid multipart data."),
    ("multipart/form-data; boundary=XX", b"--XX\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XX--\r\n",
     'invalid multipart/form-data body: The Content-Disposition header field "name" must be provided.'),
    ("multipart/form-data; boundary=XX", b"garbage that is not multipart at all" * 3,
     "invalid multipart/form-data body: Invalid multipart data."),
])
async def test_malformed_multipart_is_a_payload_error(content_type, body, reason):
    with pytest.raises(PayloadError) as info:
        await form(content_type, body)
    assert (info.value.status, str(info.value)) == (400, reason)


@pytest.mark.parametrize("body", [
    MULTIPART[:-len(b"--XX--\r\n")],  # cut right before the closing boundary
    MULTIPART[:-len(b"\r\n--XX--\r\n")],  # cut inside the upload's data
    MULTIPART[:30],  # cut inside the first part's headers
    b"",
], ids=["before-closing-boundary", "inside-a-file", "inside-headers", "empty"])
async def test_a_truncated_multipart_body_is_a_payload_error_not_an_empty_form(body):
    with pytest.raises(PayloadError) as info:
        await form("multipart/form-data; boundary=XX", body)
    assert (info.value.status, str(info.value)) == (
        400, "invalid multipart/form-data body: the body ends before its closing boundary (truncated)")


async def test_a_multipart_body_with_an_epilogue_or_no_parts_is_complete():
    data = await form("multipart/form-data; boundary=XX", MULTIPART + b"epilogue text")
    assert data["field"] == "value"
    await data.close()
    assert list((await form("multipart/form-data; boundary=XX", b"--XX--\r\n")).multi_items()) == []


def test_query_params_are_starlette_and_a_repeated_key_gives_the_last_value():
    query = query_params("k=1&k=2&x=a%26b&sp=a+b&blank=")
    assert isinstance(query, QueryParams)
    assert (query["k"], query.get("k"), query.getlist("k")) == ("2", "2", ["1", "2"])
    assert dict(query) == {"k": "2", "x": "a&b", "sp": "a b", "blank": ""}
    assert dict(query_params("")) == {}


def test_deeply_nested_json_is_a_payload_error():
    with pytest.raises(PayloadError) as info:
        parse_body("application/json", b"[" * 100_000 + b"]" * 100_000)
    assert str(info.value) == "invalid JSON body: nested too deeply"


# ---- Content-Encoding -------------------------------------------------------------


def inflate(coding: str, limit: int, *pieces: bytes) -> bytes:
    inflater = Inflater(coding, limit)
    for piece in pieces:
        inflater.feed(piece)
    return inflater.finish()


def test_gzip_body_is_inflated_in_pieces():
    body = json.dumps({"x": list(range(1000))}).encode()
    packed = gzip.compress(body)
    assert inflate("gzip", 2**20, packed[:10], packed[10:100], packed[100:]) == body


def test_gzip_members_one_after_the_other():
    assert inflate("gzip", 100, gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS])
def test_deflate_zlib_wrapped_or_raw(wbits):
    c = zlib.compressobj(wbits=wbits)
    packed = c.compress(b"hello deflate" * 10) + c.flush()
    assert inflate("deflate", 1000, packed) == b"hello deflate" * 10


def test_a_compression_bomb_stops_at_the_limit_without_inflating_the_rest():
    limit = 2**20
    bomb = gzip.compress(b"\0" * (64 * 2**20))  # 64 MiB of zeros in ~64 KiB
    inflater = Inflater("gzip", limit)
    with pytest.raises(PayloadTooLarge) as info:
        for i in range(0, len(bomb), 8192):
            inflater.feed(bomb[i:i + 8192])
    assert info.value.status == 413
    assert str(info.value) == "the decoded request body is larger than the limit of 1 MiB"
    assert len(inflater.out) <= limit + 1  # memory never held more than the limit


def test_exactly_the_limit_is_allowed():
    assert inflate("gzip", 1000, gzip.compress(b"a" * 1000)) == b"a" * 1000
    with pytest.raises(PayloadTooLarge):
        inflate("gzip", 999, gzip.compress(b"a" * 1000))


def test_compressed_input_is_bounded_too():
    empty_members = gzip.compress(b"") * 2000  # no output at all, ~40 KB of input
    with pytest.raises(PayloadTooLarge):
        inflate("gzip", 10_000, empty_members)


@pytest.mark.parametrize(("pieces", "why"), [
    ((b"this is not gzip at all",), ("invalid gzip body (Content-Encoding: gzip): Error -3 while "
                                     "decompressing data: incorrect header check")),
    ((gzip.compress(b"x" * 100)[:-6],), ("invalid gzip body (Content-Encoding: gzip): the compressed "
                                         "data ends early (truncated)")),
])
def test_invalid_gzip_is_a_payload_error(pieces, why):
    with pytest.raises(PayloadError) as info:
        inflate("gzip", 2**20, *pieces)
    assert info.value.status == 400
    assert str(info.value) == why


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/octet-stream", "image/png"])
def test_other_types_are_raw_bytes(content_type):
    body = b"\x00\x01raw{"
    assert parse_body(content_type, body) == body


def test_no_body_without_a_type_is_empty_bytes():
    assert parse_body(None, b"") == b""


# ---- responses --------------------------------------------------------------------


def body_of(answer: Answer) -> bytes:
    assert isinstance(answer, Answer)
    return answer.body


def content_type(answer: Answer) -> str:
    return dict(answer.headers)["Content-Type"]


@pytest.mark.parametrize("value", [{"a": 1}, [1, "b"], 3, 2.5, True, None, {"nested": {"x": [None]}}])
def test_json_values(value):
    response = encode_response(value)
    assert content_type(response) == "application/json"
    assert json.loads(body_of(response)) == value


def test_tuple_becomes_a_json_list():
    assert json.loads(body_of(encode_response((1, 2)))) == [1, 2]


def test_str_is_text_plain():
    response = encode_response("héllo")
    assert content_type(response) == "text/plain; charset=utf-8"
    assert body_of(response) == "héllo".encode()


@pytest.mark.parametrize("value", [b"\x00bin", bytearray(b"\x00bin"), memoryview(b"\x00bin")])
def test_bytes_are_octet_stream(value):
    response = encode_response(value)
    assert content_type(response) == "application/octet-stream"
    assert body_of(response) == b"\x00bin"


def test_starlette_responses_are_sent_through_their_asgi_call():
    for value in (Response(b"x", status_code=201), JSONResponse({"a": 1}), PlainTextResponse("t"),
                  StreamingResponse(iter([b"a"]))):
        assert isinstance(encode_response(value), ASGIAnswer)


def test_legacy_predictions_are_always_json():
    for value, body in (("text", b'"text"'), ({"a": 1}, b'{"a":1}'), (3, b"3"), (None, b"null")):
        response = encode_legacy_response(value)
        assert (content_type(response), body_of(response)) == ("application/json", body)
    with pytest.raises(NotSerializable):
        encode_legacy_response(b"raw bytes")


def test_an_aiohttp_response_is_sent_with_its_status_headers_and_body():
    answer = encode_response(web.Response(status=201, text="made", headers={"X-Custom": "1"}))
    assert (answer.status, body_of(answer)) == (201, b"made")
    assert dict(answer.headers) == {"X-Custom": "1", "Content-Type": "text/plain; charset=utf-8"}


def test_an_aiohttp_stream_response_is_refused_with_the_alternative():
    with pytest.raises(NotSerializable) as info:
        encode_response(web.StreamResponse())
    assert "return a starlette StreamingResponse" in str(info.value)


def test_numpy_values_become_json():
    value = {"array": np.arange(3), "matrix": np.eye(2, dtype=np.float32), "int": np.int64(7),
             "float": np.float32(0.5), "bool": np.bool_(True)}
    assert json.loads(encode_json(value)) == {
        "array": [0, 1, 2], "matrix": [[1.0, 0.0], [0.0, 1.0]], "int": 7, "float": 0.5, "bool": True}


def test_unserializable_value_names_its_type_and_the_fix():
    with pytest.raises(NotSerializable) as info:
        encode_response({1, 2})
    assert str(info.value).startswith("prediction of type set is not JSON serializable")
    assert str(info.value).endswith("return a dict/list/str/bytes, a starlette Response or an aiohttp Response")


def test_unserializable_nested_value():
    with pytest.raises(NotSerializable) as info:
        encode_response({"when": object()})
    assert "Object of type object is not JSON serializable" in str(info.value)


def test_nan_is_refused_rather_than_sent_as_invalid_json():
    with pytest.raises(NotSerializable):
        encode_response({"score": float("nan")})


def test_request_headers_keep_aiohttps_getall_and_getone_for_earlier_cortexd_code():
    from predictor_runtime.payload import CortexHeaders

    h = CortexHeaders(raw=[(b"x-tag", b"a"), (b"x-tag", b"b")])
    assert h.getall("X-Tag") == ["a", "b"] and h.getone("x-tag") == "a"
    assert h.getall("x-nope", []) == [] and h.getone("x-nope", None) is None
    with pytest.raises(KeyError):
        h.getall("x-nope")
    with pytest.raises(KeyError):
        h.getone("x-nope")
