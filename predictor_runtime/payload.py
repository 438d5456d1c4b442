"""Request bodies in, predictions out: Cortex's payload and response rules.

Pure functions (no sockets, no logging) that server.py applies on the request
path, so they stay cheap: the Content-Type classification is cached per header
value, and numpy is never imported here (numpy values are recognised by their
module name and converted with `.tolist()`).

Request body by Content-Type:
  application/json, */*+json                  -> the parsed JSON value (PayloadError -> 400)
  application/x-www-form-urlencoded,
  multipart/form-data                         -> form data (a read-only MultiDict)
  anything else, or no Content-Type           -> the raw bytes

Prediction to response:
  dict, list, tuple, number, bool, None       -> JSON
  str                                         -> text/plain; charset=utf-8
  bytes, bytearray, memoryview                -> application/octet-stream
  aiohttp.web.StreamResponse (e.g. Response)  -> passed through untouched
  numpy scalars and arrays                    -> JSON (via tolist())
  anything else                               -> NotSerializable (server: 500 + hint in the log)
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

JSON, FORM, MULTIPART, BYTES = "json", "form", "multipart", "bytes"


class PayloadError(Exception):
    """The request body does not match its Content-Type (the client gets 400 and this message)."""


class NotSerializable(Exception):
    """The predictor returned something that cannot become an HTTP response."""


@lru_cache(maxsize=64)
def body_kind(content_type: str | None) -> str:
    """JSON, FORM, MULTIPART or BYTES for a raw Content-Type header value."""
    if not content_type:
        return BYTES
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return JSON
    if media == "application/x-www-form-urlencoded":
        return FORM
    if media == "multipart/form-data":
        return MULTIPART
    return BYTES


def charset_of(content_type: str | None, default: str = "utf-8") -> str:
    """The charset parameter of a Content-Type header, or `default`."""
    if content_type:
        for param in content_type.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                return value.strip().strip('"')
    return default


def parse_json(body: bytes) -> Any:
    """The JSON value of a body; PayloadError with the parser's message otherwise."""
    if not body:
        raise PayloadError("invalid JSON body: the body is empty (Content-Type is application/json)")
    try:
        return json.loads(body)  # detects UTF-8/16/32 itself
    except UnicodeDecodeError as e:
        raise PayloadError(f"invalid JSON body: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except ValueError as e:
        raise PayloadError(f"invalid JSON body: {e}") from None


def parse_urlencoded(body: bytes, charset: str = "utf-8") -> MultiDictProxy[str]:
    """Form fields of an application/x-www-form-urlencoded body (repeated keys kept)."""
    try:
        text = body.decode(charset)
    except (UnicodeDecodeError, LookupError) as e:
        raise PayloadError(f"invalid form body: cannot decode it as {charset} ({e})") from None
    return MultiDictProxy(MultiDict(parse_qsl(text, keep_blank_values=True)))


def parse_body(content_type: str | None, body: bytes) -> Any:
    """The payload for a fully read body (multipart bodies need `read_payload`)."""
    kind = body_kind(content_type)
    if kind is BYTES:
        return body
    if kind is JSON:
        return parse_json(body)
    if kind is FORM:
        return parse_urlencoded(body, charset_of(content_type))
    raise ValueError("multipart bodies are parsed from the request stream; use read_payload")


async def read_payload(request: web.BaseRequest) -> Any:
    """Read and parse a request's body by its Content-Type (PayloadError -> 400)."""
    content_type = request.headers.get("Content-Type")
    if body_kind(content_type) is MULTIPART:
        try:
            return await request.post()
        except ValueError as e:  # aiohttp's multipart reader reports malformed bodies so
            raise PayloadError(f"invalid multipart/form-data body: {e}") from None
    return parse_body(content_type, await request.read())


# ---- responses --------------------------------------------------------------

def _numpy_default(value: Any) -> Any:
    # numpy scalars and arrays; checked by module so numpy is never imported here
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# compact, UTF-8, and strict: NaN/Infinity would make invalid JSON for clients
_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                                default=_numpy_default).encode


def encode_json(value: Any) -> bytes:
    """JSON bytes of a prediction; NotSerializable (with the hint for the log) when impossible."""
    try:
        return _encode_json(value).encode()
    except (TypeError, ValueError, RecursionError) as e:
        raise NotSerializable(
            f"prediction of type {type(value).__name__} is not JSON serializable ({e}); "
            "return a dict/list/str/bytes or an aiohttp Response") from None


def encode_response(value: Any) -> web.StreamResponse:
    """The HTTP response for a prediction (see the module docstring for the rules)."""
    if isinstance(value, str):
        return web.Response(text=value, content_type="text/plain")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return web.Response(body=bytes(value), content_type="application/octet-stream")
    if isinstance(value, web.StreamResponse):
        return value
    return web.Response(body=encode_json(value), content_type="application/json")
