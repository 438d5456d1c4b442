"""Request bodies in, predictions out: Cortex's payload and response rules.

Functions (no sockets, no logging) that server.py applies on the request
path, so they stay cheap: the Content-Type classification is cached per header
value, and numpy is never imported here (numpy values are recognised by their
module name and converted with `.tolist()`).

Body size. The limit (contract.ReplicaLimits.max_body_size: 32 MiB unless the daemon
sets CORTEXD_MAX_BODY_SIZE) holds for the DECODED body: a `Content-Encoding: gzip`
(or `x-gzip`, `deflate`) body is inflated as a stream, in bounded steps, and
reading stops as soon as the inflated size passes the limit (PayloadTooLarge,
413), so a small compression bomb never grows past the limit in memory. Invalid
compressed data is a PayloadError (400); other content codings are refused with
UnsupportedEncoding (415).

Request body by Content-Type (what Cortex 0.23's starlette server passed):
  application/json, */*+json                  -> the parsed JSON value (PayloadError -> 400)
  application/x-www-form-urlencoded,
  multipart/form-data                         -> starlette FormData (parsed by starlette's own
                                                 FormParser / MultiPartParser; files are
                                                 starlette UploadFile: .filename, .content_type,
                                                 .file, await .read()); malformed -> 400
  anything else, or no Content-Type           -> the raw bytes

Query parameters are starlette QueryParams (a repeated key: `[key]` and `.get`
give the last value, `.getlist` all of them), as Cortex passed them. Request
headers are starlette Headers (case-insensitive `[name]` / `.get`, `.getlist`,
`.raw`; names lower-case in `.items()`), as Cortex passed `request.headers`,
with aiohttp's `.getall` / `.getone` kept for earlier cortexd code.

Prediction to response:
  dict, list, tuple, number, bool, None       -> JSON
  str                                         -> text/plain; charset=utf-8
  bytes, bytearray, memoryview                -> application/octet-stream
  starlette.responses.Response (any subclass) -> sent as it is: status, headers, media type,
                                                 body (a StreamingResponse streams; background
                                                 tasks run after the body), via its ASGI call
  aiohttp.web.Response (or HTTPException)     -> its status, headers and body (bytes or text); an
                                                 aiohttp StreamResponse that is not a Response
                                                 -> NotSerializable (return a StreamingResponse)
  numpy scalars and arrays                    -> JSON (via tolist())
  anything else                               -> NotSerializable (server: 500 + hint in the log)
Legacy `kind: api` predictions are always JSON (`encode_legacy_response`), as
Cortex's Flask server answered.
"""

from __future__ import annotations

import json
import logging
import sys
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aiohttp import web
from starlette.datastructures import FormData, Headers, QueryParams

from predictor_runtime.http_server import Answer, BodyError, BodyTimeout, BodyTooLarge, Reply, Request
from predictor_runtime.log_limits import one_line

if TYPE_CHECKING:  # imported where used: python-multipart, and a predictor's own starlette Response
    from starlette.formparsers import MultiPartParser
    from starlette.responses import Response as StarletteResponse

JSON, FORM, MULTIPART, BYTES = "json", "form", "multipart", "bytes"
EMPTY_QUERY = QueryParams()

log = logging.getLogger("predictor_runtime")


class PayloadError(Exception):
    """The request body does not match its Content-Type (the client gets `status` and this message)."""

    status = 400


class PayloadTooLarge(PayloadError):
    """The (decoded) body is larger than the replica's body limit."""

    status = 413


class PayloadTimeout(PayloadError):
    """The body stopped arriving for the server's body timeout (http_server.BodyTimeout)."""

    status = 408


class UnsupportedEncoding(PayloadError):
    """A Content-Encoding this runtime does not decode."""

    status = 415


class NotSerializable(Exception):
    """The predictor returned something that cannot become an HTTP response."""


def size_text(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def too_large(limit: int, decoded: bool = False) -> PayloadTooLarge:
    what = "the decoded request body" if decoded else "the request body"
    return PayloadTooLarge(f"{what} is larger than the limit of {size_text(limit)}")


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


def query_params(raw_query_string: str) -> QueryParams:
    """Starlette QueryParams of a raw (still percent-encoded) query string."""
    return QueryParams(raw_query_string) if raw_query_string else EMPTY_QUERY


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
    except RecursionError:
        raise PayloadError("invalid JSON body: nested too deeply") from None


def parse_body(content_type: str | None, body: bytes) -> Any:
    """The payload of a fully read JSON or bytes body (form bodies need `parse_form`)."""
    kind = body_kind(content_type)
    if kind is BYTES:
        return body
    if kind is JSON:
        return parse_json(body)
    raise ValueError("form bodies are parsed by parse_form (starlette's parsers are async)")


# ---- decoding Content-Encoding -------------------------------------------------

DECODED_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


class Inflater:
    """Inflate a gzip or deflate body fed in pieces, never producing more than `limit` bytes.

    Each zlib step is bounded by what is left of the limit (`max_length`), so the
    memory an input can claim is the limit, whatever its compression ratio; the
    compressed input is bounded by the limit too (streams of empty blocks).
    gzip allows several members one after the other; deflate is zlib-wrapped
    (RFC 1950), or raw deflate as some clients send it.
    """

    def __init__(self, coding: str, limit: int):
        self.coding = coding  # "gzip" or "deflate"
        self.limit = limit
        self.out = bytearray()
        self.consumed = 0
        self._d: Any = None

    def _new(self, first: bytes) -> Any:
        if self.coding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        zlib_header = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def _invalid(self, why: str) -> PayloadError:
        return PayloadError(f"invalid {self.coding} body (Content-Encoding: {self.coding}): {why}")

    def feed(self, data: bytes) -> None:
        self.consumed += len(data)
        if self.consumed > self.limit:
            raise too_large(self.limit, decoded=True)
        while data:
            if self._d is None:
                self._d = self._new(data)
            elif self._d.eof:
                if self.coding != "gzip":
                    raise self._invalid("data after the end of the compressed stream")
                self._d = self._new(data)  # the next gzip member
            try:
                chunk = self._d.decompress(data, self.limit + 1 - len(self.out))
            except zlib.error as e:
                raise self._invalid(str(e)) from None
            self.out += chunk
            if len(self.out) > self.limit:
                raise too_large(self.limit, decoded=True)
            data = self._d.unconsumed_tail or (self._d.unused_data if self._d.eof else b"")

    def finish(self) -> bytes:
        if self._d is not None and not self._d.eof:
            raise self._invalid("the compressed data ends early (truncated)")
        return bytes(self.out)


def coding_of(request: Request) -> str | None:
    """The body's content coding to decode (None: identity); UnsupportedEncoding for others."""
    raw = request.header("Content-Encoding")
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in ("", "identity"):
        return None
    coding = DECODED_CODINGS.get(value)
    if coding is None:
        raise UnsupportedEncoding(f"Content-Encoding {raw.strip()!r} is not supported; "
                                  "send the body unencoded, gzip or deflate")
    return coding


def gone() -> PayloadError:
    """The client closed the connection before its body arrived (nobody reads the answer)."""
    return PayloadError("the connection closed before the request body arrived")


def broken_framing(e: BodyError) -> PayloadError:
    """The body's framing broke while it was read (e.g. a bad chunk): the client's fault, 400;
    or it stopped arriving (BodyTimeout): 408."""
    return PayloadTimeout(str(e)) if isinstance(e, BodyTimeout) else PayloadError(one_line(str(e)))


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, decoded, at most `limit` bytes (PayloadTooLarge, PayloadError otherwise)."""
    coding = coding_of(request)
    try:
        if coding is None:
            length = request.body.length
            if length is not None and length > limit:
                raise too_large(limit)
            try:
                return await request.body.read(limit)
            except BodyTooLarge:
                raise too_large(limit) from None
        inflater = Inflater(coding, limit)
        async for chunk in request.body.chunks():
            inflater.feed(chunk)
    except BodyError as e:
        raise broken_framing(e) from None
    except ConnectionResetError:
        raise gone() from None
    return inflater.finish()


async def _body_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The raw body in chunks, PayloadTooLarge once past `limit` (identity coding only)."""
    length = request.body.length
    if length is not None and length > limit:
        raise too_large(limit)
    seen = 0
    try:
        async for chunk in request.body.chunks():
            seen += len(chunk)
            if seen > limit:
                raise too_large(limit)
            yield chunk
    except BodyError as e:
        raise broken_framing(e) from None
    except ConnectionResetError:
        raise gone() from None


class CortexHeaders(Headers):
    """starlette's Headers (what Cortex passed), with aiohttp's `getall` / `getone` kept for
    earlier cortexd code."""

    _MISSING: Any = object()

    def getall(self, key: str, default: Any = _MISSING) -> Any:
        values = self.getlist(key)
        if values:
            return values
        if default is CortexHeaders._MISSING:
            raise KeyError(key)
        return default

    def getone(self, key: str, default: Any = _MISSING) -> Any:
        values = self.getall(key, None)
        if values:
            return values[0]
        if default is CortexHeaders._MISSING:
            raise KeyError(key)
        return default


def request_headers(request: Request) -> CortexHeaders:
    """The request's headers as Cortex's predictors got them (starlette Headers), in the order sent."""
    return CortexHeaders(raw=[(name.lower().encode("latin-1"), value.encode("latin-1"))
                              for name, value in request.raw_headers])


async def _one_chunk(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


class CortexFormData(FormData):
    """starlette's FormData (what Cortex passed), with aiohttp's `getall` kept for earlier cortexd code."""

    handed_to_post_predict = False  # then post_predict's task closes the uploads, not the request

    def getall(self, key: Any) -> list[Any]:
        return self.getlist(key)

    def has_files(self) -> bool:
        return any(not isinstance(v, str) for _, v in self.multi_items())


async def parse_form(request: Request, limit: int, multipart: bool) -> CortexFormData:
    """A request's form body (at most `limit` bytes after decoding), parsed by starlette."""
    if coding_of(request) is None:
        length = request.body.length
        if length is not None and length > limit:
            raise too_large(limit)
        stream = _body_stream(request, limit)
    else:
        stream = _one_chunk(await read_body(request, limit))
    return await form_from_stream(request.header("Content-Type") or "", stream, multipart)


TRUNCATED_MULTIPART = "the body ends before its closing boundary (truncated)"


def _multipart_parser_class() -> type[MultiPartParser]:
    """starlette's MultiPartParser, refusing a body that ends before its closing boundary."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    class CompleteMultiPartParser(MultiPartParser):
        # starlette ignores python-multipart's on_end, so a body cut before `--BOUNDARY--`
        # parses as a partial (or empty) form. The end of the stream is checked inside
        # starlette's parse loop, so its error path closes the files already spooled.
        reached_end = False

        def __init__(self, headers: Any, stream: AsyncIterator[bytes], **kw: Any):
            super().__init__(headers, self._checked(stream), **kw)

        async def _checked(self, stream: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
            async for chunk in stream:
                yield chunk
            if not self.reached_end:
                raise MultiPartException(TRUNCATED_MULTIPART)

        def on_end(self) -> None:
            self.reached_end = True

    return CompleteMultiPartParser


async def form_from_stream(content_type: str, stream: AsyncGenerator[bytes, None], multipart: bool) -> CortexFormData:
    """A form body parsed by starlette's own FormParser / MultiPartParser; PayloadError when malformed.

    A multipart body without its closing boundary (`--BOUNDARY--`) is truncated: 400.
    """
    from starlette.datastructures import Headers
    from starlette.formparsers import FormParser, MultiPartException

    headers = Headers(headers={"content-type": content_type})
    parser = _multipart_parser_class()(headers, stream) if multipart else FormParser(headers, stream)
    what = "multipart/form-data" if multipart else "form"
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise PayloadError(f"invalid {what} body: {e.message}") from None
    except (ValueError, UnicodeDecodeError) as e:  # python-multipart's own parse errors
        raise PayloadError(f"invalid {what} body: {one_line(str(e))}") from None
    return CortexFormData(form.multi_items())


async def read_payload(request: Request, limit: int) -> Any:
    """Read and parse a request's body by its Content-Type (PayloadError -> its status)."""
    content_type = request.header("Content-Type")
    kind = body_kind(content_type)
    if kind is FORM or kind is MULTIPART:
        return await parse_form(request, limit, kind is MULTIPART)
    return parse_body(content_type, await read_body(request, limit))


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
            "return a dict/list/str/bytes, a starlette Response or an aiohttp Response") from None


def starlette_response_class() -> type[StarletteResponse] | None:
    """starlette.responses.Response when the predictor's code imported it (it must have, to return one)."""
    module = sys.modules.get("starlette.responses")
    return getattr(module, "Response", None) if module is not None else None


_JSON_HEADERS = [("Content-Type", "application/json")]
_TEXT_HEADERS = [("Content-Type", "text/plain; charset=utf-8")]
_BYTES_HEADERS = [("Content-Type", "application/octet-stream")]
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})  # the server's own


def json_answer(status: int, value: Any) -> Answer:
    return Answer(status, _JSON_HEADERS, json.dumps(value).encode())


def aiohttp_answer(response: web.StreamResponse) -> Answer:
    """An aiohttp `web.Response` a predictor returned (or an HTTPException it raised), as an Answer."""
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, (bytes, bytearray)) and body is not None:
        raise NotSerializable(f"the aiohttp {type(response).__name__} returned by predict has a body of type "
                              f"{type(body).__name__}; give it bytes or text, or return a starlette Response")
    if not isinstance(response, web.Response):
        raise NotSerializable(f"an aiohttp {type(response).__name__} (not a web.Response) cannot be sent; "
                              "return a starlette StreamingResponse to stream")
    headers = [(name, value) for name, value in response.headers.items() if name.lower() not in _FRAMING]
    return Answer(response.status, headers, bytes(body or b""))


def encode_response(value: Any) -> Any:
    """The answer for a prediction (an Answer, or an ASGIAnswer; see the module docstring)."""
    cls = type(value)
    if cls is dict or cls is list:
        return Answer(200, _JSON_HEADERS, encode_json(value))
    if cls is str or isinstance(value, str):
        return Answer(200, _TEXT_HEADERS, value.encode())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Answer(200, _BYTES_HEADERS, bytes(value))
    if isinstance(value, web.StreamResponse):
        return aiohttp_answer(value)
    starlette_response = starlette_response_class()
    if starlette_response is not None and isinstance(value, starlette_response):
        return ASGIAnswer(value)
    return Answer(200, _JSON_HEADERS, encode_json(value))


def encode_legacy_response(value: Any) -> Answer:
    """Legacy `kind: api`: every prediction is JSON (Flask's jsonify), a str as a JSON string."""
    return Answer(200, _JSON_HEADERS, encode_json(value))


# ---- starlette responses ------------------------------------------------------

def asgi_scope(request: Request) -> dict[str, Any]:
    """The ASGI HTTP scope a starlette Response sees (spec 2.4: no disconnect listener task)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": request.version,
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.raw_path.encode("latin-1", "replace"),
        "query_string": request.raw_query.encode("latin-1", "replace"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1", "replace"), v.encode("latin-1", "replace"))
                    for k, v in request.raw_headers],
        "client": None,
        "server": None,
        "extensions": {},
    }


class ASGIAnswer:
    """A starlette Response sent by calling it as the ASGI app it is.

    Its `http.response.start` sets the status and headers (repeated ones kept),
    each `http.response.body` is written as it comes (a StreamingResponse
    streams, chunked unless it set Content-Length), and the end of the body is
    sent before the response's background tasks run, as uvicorn does. A
    response that fails before its headers went out becomes a 500; one that
    fails mid-stream has its connection closed, so the client sees a cut body
    rather than a complete-looking one.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self._app = app
        self.request: Request | None = None  # set by the server before `send`

    async def send(self, reply: Reply, extra: list[tuple[str, str]] | None = None) -> None:
        assert self.request is not None

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                headers = [(name.decode("latin-1"), value.decode("latin-1"))
                           for name, value in message.get("headers", ())]
                reply.start(message["status"], headers + extra if extra else headers)
            elif kind == "http.response.body":
                await reply.write(message.get("body", b""))
                if not message.get("more_body", False):
                    reply.end()

        # already loaded: the predictor returned a starlette Response
        from starlette.requests import ClientDisconnect

        try:
            await self._app(asgi_scope(self.request), receive, send)
        except (ClientDisconnect, ConnectionError):
            reply.close_after = True  # the client went away during a streamed response
            return
        except Exception:  # user code: a body iterator, a background task
            if reply.finished:
                log.exception("error: a background task of the starlette response returned by predict "
                              "failed (the response was already sent)")
                return
            if not reply.started:
                log.exception("error: the starlette response returned by predict failed before its "
                              "headers were sent (the client got 500)")
                reply.send(500, _JSON_HEADERS,
                           b'{"error":"the prediction\'s response failed; see the API\'s logs"}')
                return
            log.exception("error: the starlette response returned by predict failed while sending its body "
                          "(the connection was closed)")
            reply.close_after = True
            return
        if not reply.started:
            reply.close_after = True  # it sent nothing: the server answers 500 and closes
