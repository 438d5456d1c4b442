"""One client connection of the gateway: a request-head timeout and size cap, quiet answers to malformed requests.

aiohttp's low-level server (GatewayServer, one per listening port of the gateway,
cortexd/gateway/proxy.py) makes one ClientConnection protocol per accepted connection.
aiohttp times out idle keep-alive connections but not a request head that trickles in
(slowloris), limits each header line but not a whole head, and it answers a request it
cannot parse with a traceback in an ERROR line that carries the client's bytes; this
protocol adds the head timeout (408), the head cap (431) and the share of the budgets
all connections share (connections.py ClientConnections, admission.py: bytes of
unfinished heads, sockets), and answers malformed requests as JSON without echoing
them, logged quietly (client_errors.py). What it reads of aiohttp's private state it
reads through aiohttp_internals.py, the one place that does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic
from typing import Any, cast

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_request import BaseRequest

from cortexd.gateway.admission import (
    COUNTED_READ,
    HEAD_LIMIT,
    HEADER_LINE_LIMIT,
    MAX_HEADERS,
    head_size,
)
from cortexd.gateway.aiohttp_internals import HandlerInternals, ServerInternals
from cortexd.gateway.answers import error_answer, raw_answer
from cortexd.gateway.client_errors import shown
from cortexd.gateway.connections import ClientConnections
from cortexd.gateway.relay import encode
from cortexd.spec.units import format_bytes

log = logging.getLogger(__name__)

_SPOKEN = (HttpVersion11, HttpVersion10)  # request versions the gateway answers in kind
LINGER = 2.0  # seconds a refused connection is read (and dropped) before it closes: see refuse()
HEAD_TOO_LARGE = (f"the request head is larger than the gateway allows ({HEAD_LIMIT // 1024} KiB in all, "
                  f"{HEADER_LINE_LIMIT // 1024} KiB per header line, {MAX_HEADERS} header lines); "
                  "send fewer or smaller headers")


class ClientConnection(HandlerInternals):
    """One client connection: aiohttp's handler plus a request-head timeout and cap, and quiet client errors.

    aiohttp's low-level server times out idle keep-alive connections but not a request
    head that trickles in (slowloris): this class arms one timer per connection when it
    opens, and again only when a later head does not arrive in one piece, so the usual
    keep-alive request costs no timer. The bytes of a head that arrives in pieces are
    counted: past HEAD_LIMIT the client gets 431, and they count toward the shared
    HeldHeads budget until the head is whole. Malformed requests are answered here as
    JSON without echoing the client's bytes, and logged through ClientConnections
    instead of aiohttp's ERROR line with a traceback and the raw bytes.
    """

    __slots__ = ("_clients", "_counted", "_head_bytes", "_head_timer", "forwarded_for", "held", "peer",
                 "peer_headers")

    def __init__(self, manager: web.Server, clients: ClientConnections, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._clients = clients
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes of the unfinished request head, from the reads that did not complete it
        self.held = 0  # what this connection counts in the shared HeldHeads (admission.py)
        self._counted = False  # whether it counts in the shared SocketCount
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
        clients = self._clients
        self._head_timer = self.call_later(clients.header_timeout, self._head_timed_out)
        sockets = clients.sockets
        sockets.open += 1
        self._counted = True
        if sockets.open > sockets.cap:  # idle connections go first, else this one does
            clients.at_socket_cap(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._uncount()
        super().connection_lost(exc)

    def heads_arrived(self, data: bytes, new: int, started_clean: bool, queued: deque[Any]) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if queued and _unspoken(queued, new):
            self._unsupported_version()
        elif self.held or len(data) > COUNTED_READ:  # the usual request: neither
            self._heads_done(data, new, started_clean)

    def head_piece(self, n: int) -> None:
        if self._head_timer is None:
            self._head_timer = self.call_later(self._clients.header_timeout, self._head_timed_out)
        self._head_part(n)

    # -- what a connection holds (admission.py) --------------------------------------------

    def _head_part(self, n: int) -> None:
        """`n` more bytes of an unfinished head: within HEAD_LIMIT, and within the gateway's budget."""
        self._head_bytes += n
        clients = self._clients
        if self._head_bytes > HEAD_LIMIT:
            clients.client_error("request head too large", f"from {self.peer.decode(errors='replace')}: "
                                 f"more than {HEAD_LIMIT} bytes and not finished")
            if self.answering():
                self.close()  # pipelined behind a request being answered: no more after that one
            else:
                self.refuse(431, HEAD_TOO_LARGE)
            return
        if clients.held_heads.add(self, n):
            clients.shed_held_heads()

    def _heads_done(self, data: bytes, new: int, started_clean: bool) -> None:
        """`new` heads completed in `data`, a read that was large or ended a head held in pieces:
        each is within HEAD_LIMIT, and what the parser may keep of a next head is counted."""
        clients = self._clients
        pending = len(data)
        if self.held:
            pending += self.held
            started_clean = False
            clients.held_heads.release(self)
        self._head_bytes = 0
        messages = self.queued
        if pending > HEAD_LIMIT:  # only then can one of them be too large
            queued = len(messages)
            for i in range(max(0, queued - new), queued):
                if head_size(messages[i][0]) > HEAD_LIMIT:
                    clients.client_error("request head too large", f"from {self.peer.decode(errors='replace')}: "
                                         f"{head_size(messages[i][0])} bytes")
                    self._refuse_from(i, 431, HEAD_TOO_LARGE)
                    return
        if len(data) <= COUNTED_READ or self.closing() or not messages:
            return
        message, body = messages[-1]
        if not body.is_eof() or not hasattr(message, "raw_headers"):
            return  # the rest of the read is body, or the connection ends with an error answer
        rest = _next_head_bytes(data, cast(RawRequestMessage, message), new == 1 and started_clean)
        if rest and clients.held_heads.add(self, rest):
            clients.shed_held_heads()

    def idle(self) -> bool:
        """Whether the connection waits for a request and has none of one (keep-alive, or new)."""
        return not self._head_bytes and self.waiting()

    def idle_since(self) -> float:
        """When the connection's last answer went out (or it opened): aiohttp's keep-alive clock."""
        return self.keepalive_since()

    def shed(self) -> None:
        """Close an idle connection to make room, as its keep-alive timeout would."""
        self._uncount()
        self.force_close()

    def evict(self) -> None:
        """Give up what this connection holds of an unfinished head (the gateway's budget is spent)."""
        clients = self._clients
        clients.held_heads.release(self)
        unfinished = self._head_bytes
        self._head_bytes = 0
        if self.answering():
            self.close()  # a request is being answered: the connection ends after it
        elif self.closing():
            self.force_close()  # refused and lingering: at once now
        elif unfinished:
            clients.client_error("unfinished request heads over budget", f"from {self.peer.decode(errors='replace')}: "
                                 f"{unfinished} bytes of a head held longest")
            budget = format_bytes(clients.held_heads.budget)
            self.refuse(503, f"the gateway holds too many unfinished request heads ({budget} across connections); "
                             "send the request again, its head in one piece", retry_after=True)
        else:  # what it held was counted from a large read and may be no head at all: as idle
            self.force_close()

    def refuse(self, status: int, message: str, *, retry_after: bool = False) -> None:
        """Answer `status` with `message` and close: nothing of this connection is being answered.

        The close lingers (nginx's lingering_close): a socket closed with unread bytes sends a
        reset, and a client still sending its head would lose the answer. Its end is told
        (half-close), what it still sends is dropped unread, and the connection goes when the
        client closes or after LINGER seconds.
        """
        transport = self.transport
        if transport is None:
            return
        clients = self._clients
        transport.write(raw_answer(status, message, clients.new_request_id(), retry_after))
        self.close()  # aiohttp parses nothing more from here on
        if not self.in_progress():
            # what the parser holds of the refused head (up to a read past the cap) goes now, not
            # when the lingering connection ends; nothing uses the parser once it is closing
            self.drop_parser()
            if self.held:
                clients.held_heads.release(self)
            self._head_bytes = 0
            # a head queued by this read woke aiohttp's loop, which would find no message
            # (IndexError, logged with a traceback): it ends here instead
            self.cancel_handler_task()
        try:
            transport.write_eof()
        except (OSError, RuntimeError):  # the client is gone already
            self.force_close()
            return
        self.call_later(LINGER, self.force_close)

    def _uncount(self) -> None:
        clients = self._clients
        if self.held:
            clients.held_heads.release(self)
        if self._counted:
            self._counted = False
            clients.sockets.open -= 1

    # -- answers without a request object ------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.closing_now() or self.transport is None:
            return
        if self.answering():
            # a pipelined head trickles in behind a request being answered: no more after that one
            self.close()
            return
        clients = self._clients
        timeout = clients.header_timeout
        clients.client_error("request head timeout", f"from {self.peer.decode(errors='replace')}: "
                             f"the request head did not arrive within {timeout:g} s")
        self.refuse(408, f"the request head did not arrive within {timeout:g} s (the gateway's client "
                         "header timeout)")

    def _unsupported_version(self) -> None:
        """A request line of a version the gateway does not speak (llhttp parses HTTP/2.0 and 0.9):
        505 on HTTP/1.1 when it is the next to answer, else the answers before it, then close
        (it and what follows are dropped); never an answer that echoes the bogus version."""
        messages = self.queued
        first = next(i for i, (m, _) in enumerate(messages) if getattr(m, "version", HttpVersion11) not in _SPOKEN)
        bad = messages[first][0]
        version = f"HTTP/{bad.version.major}.{bad.version.minor}"
        self._clients.client_error("unsupported HTTP version", f"from {self.peer.decode(errors='replace')}: {version}")
        self._refuse_from(first, 505, f"{version} is not spoken here: send HTTP/1.1 (or HTTP/1.0)")

    def _refuse_from(self, first: int, status: int, message: str) -> None:
        """Drop the queued request heads from index `first` on; answer the first of them with
        `status` when it is the next to answer, else close after the answers before it."""
        messages = self.queued
        while len(messages) > first:
            messages.pop()
        if self.answering():
            self.close()  # the earlier requests are answered first
            return
        self.refuse(status, message)

    def close_after_answer(self) -> None:
        """Close once the current answer is out, without first reading the rest of the body."""
        self.skip_lingering()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse (400), or a gateway bug (500): a JSON answer, one quiet log line."""
        clients = self._clients
        if status < 500:
            detail = exc.message if isinstance(exc, HttpProcessingError) else (message or str(exc or ""))
            kind = type(exc).__name__ if exc is not None else "bad request"
            clients.client_error(kind, f"from {request.remote}: {shown(detail)}")
            if _header_fields_too_large(exc):
                status, text = 431, HEAD_TOO_LARGE
            else:
                text = f"the request is not valid HTTP: {shown(detail, 100)}"
        else:
            kind = f"internal error ({type(exc).__name__})"
            suppressed = clients.errors.admit(kind, monotonic())
            if suppressed is not None:
                log.error("error handling a request from %s%s", request.remote,
                          f" ({suppressed} more since the last such line)" if suppressed else "",
                          exc_info=exc)
            text = "internal error in the gateway; the daemon log has the details"
        if request.writer.output_size > 0:
            raise ConnectionError("the response is already started: no error answer can be sent")
        resp = error_answer(status, text, clients.new_request_id())
        resp.force_close()
        return resp


def _header_fields_too_large(exc: BaseException | None) -> bool:
    """Whether aiohttp's parser refused a header line or the number of them (431), not the request line."""
    if isinstance(exc, LineTooLong):
        return exc.args[1] == HEADER_LINE_LIMIT  # the limit it passed names the line (admission.py)
    return isinstance(exc, BadHttpMessage) and exc.message == "Too many headers received"


def _next_head_bytes(data: bytes, message: RawRequestMessage, alone: bool) -> int:
    """What the parser may keep of a next request head after the read `data` completed `message`.

    Exact for the usual large read, one request head and its Content-Length body from a
    clean start (`alone`); otherwise the whole read is counted, an upper bound.
    """
    if not alone or message.chunked:
        return len(data)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data)
    length = message.headers.get("Content-Length")
    return max(0, len(data) - end - 4 - (int(length) if length else 0))


def _unspoken(messages: deque[Any], new: int) -> bool:
    """Whether one of the `new` newest request heads is of a version the gateway does not speak
    (an unparsable one is aiohttp's error info, without a version: handle_error answers it)."""
    if getattr(messages[-1][0], "version", HttpVersion11) not in _SPOKEN:
        return True
    return new > 1 and any(getattr(m, "version", HttpVersion11) not in _SPOKEN for m, _ in list(messages)[-new:])


class GatewayServer(ServerInternals):
    """aiohttp's low-level server of one listening port, making ClientConnection protocols."""

    def __init__(self, handler: Any, clients: ClientConnections, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._clients = clients

    def make_handler(self, **kwargs: Any) -> ClientConnection:
        return ClientConnection(self, self._clients, **kwargs)
