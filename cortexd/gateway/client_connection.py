"""One client connection of the gateway: a request-head timeout and quiet answers to malformed requests.

aiohttp's low-level server (the gateway's web.Server, cortexd/gateway/proxy.py) makes
one ClientConnection protocol per accepted connection. aiohttp times out idle
keep-alive connections but not a request head that trickles in (slowloris), and it
answers a request it cannot parse with a traceback in an ERROR line that carries the
client's bytes; this protocol adds the head timeout (408) and answers malformed
requests as JSON without echoing them, logged through the gateway's ClientErrorLog
(client_errors.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from time import monotonic
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from cortexd.gateway.client_errors import shown
from cortexd.gateway.relay import STATUS_LINES, encode

if TYPE_CHECKING:
    from cortexd.gateway.proxy import Gateway

log = logging.getLogger(__name__)

_SPOKEN = (HttpVersion11, HttpVersion10)  # request versions the gateway answers in kind


class ClientConnection(RequestHandler):
    """One client connection: aiohttp's handler plus a request-head timeout and quiet client errors.

    aiohttp's low-level server times out idle keep-alive connections but not a request
    head that trickles in (slowloris): this class arms one timer per connection when it
    opens, and again only when a later head does not arrive in one piece, so the usual
    keep-alive request costs no timer. Malformed requests are answered here as JSON without
    echoing the client's bytes, and logged through the gateway's ClientErrorLog instead of
    aiohttp's ERROR line with a traceback and the raw bytes.
    """

    __slots__ = ("_gateway", "_head_timer", "_newest_body", "forwarded_for", "peer", "peer_headers")

    def __init__(self, manager: web.Server, gateway: Gateway, **kwargs):
        super().__init__(manager, **kwargs)
        self._gateway = gateway
        self._head_timer: asyncio.TimerHandle | None = None
        self._newest_body = None  # the payload of the newest request head parsed
        self.peer = b"unknown"  # the client's address, as X-Forwarded-For and X-Real-IP say it
        self.forwarded_for = b"for=unknown"  # and as RFC 7239's Forwarded says it
        self.peer_headers = b"X-Forwarded-For: unknown\r\nX-Real-IP: unknown\r\nForwarded: for=unknown"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = address = encode(str(peer[0]))
            # RFC 7239: an IPv6 address is bracketed and quoted
            self.forwarded_for = b'for="[' + address + b']"' if b":" in address else b"for=" + address
            self.peer_headers = (b"X-Forwarded-For: " + address + b"\r\nX-Real-IP: " + address
                                 + b"\r\nForwarded: " + self.forwarded_for)
        self._head_timer = self._loop.call_later(self._gateway.client_header_timeout, self._head_timed_out)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._newest_body = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        body = self._newest_body
        body_done = body is None or body.is_eof()
        super().data_received(data)
        if self._request_count != count:  # a request head arrived whole
            messages = self._messages
            self._newest_body = messages[-1][1] if messages else None
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if messages and _unspoken(messages, self._request_count - count):
                self._unsupported_version()
        elif data and body_done and self._head_timer is None and not (self._close or self._force_close):
            # the start of a request head that is not complete yet (body bytes never get here)
            self._head_timer = self._loop.call_later(self._gateway.client_header_timeout,
                                                     self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._force_close or self.transport is None:
            return
        if self._request_in_progress or self._messages:
            # a pipelined head trickles in behind a request being answered: no more after that one
            self.close()
            return
        gateway = self._gateway
        timeout = gateway.client_header_timeout
        gateway._client_error("request head timeout", f"from {self.peer.decode(errors='replace')}: "
                              f"the request head did not arrive within {timeout:g} s")
        self.transport.write(raw_answer(
            408, f"the request head did not arrive within {timeout:g} s (the gateway's client "
                 "header timeout)", gateway._new_request_id()))
        self.force_close()

    def _unsupported_version(self) -> None:
        """A request line of a version the gateway does not speak (llhttp parses HTTP/2.0 and 0.9):
        505 on HTTP/1.1 when it is the next to answer, else the answers before it, then close
        (it and what follows are dropped); never an answer that echoes the bogus version."""
        messages = self._messages
        first = next(i for i, (m, _) in enumerate(messages) if getattr(m, "version", HttpVersion11) not in _SPOKEN)
        bad = messages[first][0]
        while len(messages) > first:
            messages.pop()
        version = f"HTTP/{bad.version.major}.{bad.version.minor}"
        gateway = self._gateway
        gateway._client_error("unsupported HTTP version", f"from {self.peer.decode(errors='replace')}: {version}")
        if messages or self._request_in_progress:
            self.close()  # the earlier requests are answered first
            return
        if self.transport is not None:
            self.transport.write(raw_answer(
                505, f"{version} is not spoken here: send HTTP/1.1 (or HTTP/1.0)", gateway._new_request_id()))
        self.force_close()

    def close_after_answer(self) -> None:
        """Close once the current answer is out, without first reading the rest of the body."""
        self._lingering_time = 0.0  # aiohttp reads (and drops) an unread body for this long

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse (400), or a gateway bug (500): a JSON answer, one quiet log line."""
        gateway = self._gateway
        if status < 500:
            detail = exc.message if isinstance(exc, HttpProcessingError) else (message or str(exc or ""))
            kind = type(exc).__name__ if exc is not None else "bad request"
            gateway._client_error(kind, f"from {request.remote}: {shown(detail)}")
            text = f"the request is not valid HTTP: {shown(detail, 100)}"
        else:
            kind = f"internal error ({type(exc).__name__})"
            suppressed = gateway._client_errors.admit(kind, monotonic())
            if suppressed is not None:
                log.error("error handling a request from %s%s", request.remote,
                          f" ({suppressed} more since the last such line)" if suppressed else "",
                          exc_info=exc)
            text = "internal error in the gateway; the daemon log has the details"
        if request.writer.output_size > 0:
            raise ConnectionError("the response is already started: no error answer can be sent")
        resp = gateway._error(status, text, gateway._new_request_id())
        resp.force_close()
        return resp


def _unspoken(messages, new: int) -> bool:
    """Whether one of the `new` newest request heads is of a version the gateway does not speak
    (an unparsable one is aiohttp's error info, without a version: handle_error answers it)."""
    if getattr(messages[-1][0], "version", HttpVersion11) not in _SPOKEN:
        return True
    return new > 1 and any(getattr(m, "version", HttpVersion11) not in _SPOKEN for m, _ in list(messages)[-new:])


class GatewayServer(web.Server):
    """aiohttp's low-level server, making ClientConnection protocols."""

    def __init__(self, handler, gateway: Gateway, **kwargs):
        super().__init__(handler, **kwargs)
        self._gateway = gateway

    def __call__(self) -> ClientConnection:
        return ClientConnection(self, self._gateway, loop=self._loop, **self._kwargs)


def raw_answer(status: int, message: str, rid: str) -> bytes:
    """A complete JSON error answer that closes the connection, as bytes (no request object exists)."""
    body = json.dumps({"error": message, "request_id": rid}).encode()
    return (b"HTTP/1.1 " + STATUS_LINES[status] + b"\r\nContent-Type: application/json; charset=utf-8"
            b"\r\nContent-Length: %d\r\nX-Request-Id: %b\r\nConnection: close\r\n\r\n%b"
            % (len(body), encode(rid), body))
