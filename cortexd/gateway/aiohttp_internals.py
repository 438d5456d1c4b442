"""The one place the gateway reads aiohttp's private state: its server protocol, named once.

The gateway's client connections (client_connection.py) extend aiohttp's low-level
server protocol (`aiohttp.web_protocol.RequestHandler`) with a request-head timeout and
cap, budgets and quiet error answers. aiohttp has no public API for what that needs:
how many request heads a read completed, whether a request is being answered or queued,
whether the connection waits idle for one and since when, and dropping its parser. Every
such read or write is a member of the two classes below, under a name that says what it
means, and nowhere else; `ATTRIBUTES` lists the private names they rely on.
tests/unit/test_aiohttp_internals.py checks them against the installed aiohttp and fails
naming what moved, so an aiohttp upgrade breaks a test, not a connection. The tested
range is pinned in setup.cfg (install_requires).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

# private names of aiohttp read or written here: the handler's, then the server's
ATTRIBUTES = {
    "RequestHandler": ("_loop", "_request_count", "_messages", "_close", "_force_close", "_waiter",
                       "_next_keepalive_close_time", "_request_in_progress", "_parser", "_task_handler",
                       "_lingering_time"),
    "Server": ("_loop", "_kwargs"),
}


class HandlerInternals(RequestHandler):
    """aiohttp's server protocol, with the parts of its private state the gateway needs named.

    `data_received` tells a subclass what a read brought: `heads_arrived` when it completed
    request heads (the usual keep-alive request: once per request), `head_piece` when it
    brought part of a head that is not complete yet (never body bytes).
    """

    __slots__ = ("_newest_body",)

    def __init__(self, manager: web.Server, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._newest_body: StreamReader | None = None  # the payload of the newest request head parsed

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        body = self._newest_body
        body_done = body is None or body.is_eof()  # else the read is (partly) that body's bytes
        super().data_received(data)
        new = self._request_count - count
        if new:
            messages = self._messages
            self._newest_body = messages[-1][1] if messages else None
            self.heads_arrived(data, new, body_done, messages)
        elif data and body_done and not (self._close or self._force_close):
            self.head_piece(len(data))

    def connection_lost(self, exc: BaseException | None) -> None:
        self._newest_body = None
        super().connection_lost(exc)

    def heads_arrived(self, data: bytes, new: int, started_clean: bool, queued: deque[Any]) -> None:
        """`data` completed `new` request heads, now the newest of `queued` ((message, payload)
        pairs aiohttp has parsed and not answered yet); `started_clean`: no body was unfinished."""

    def head_piece(self, n: int) -> None:
        """A read of `n` bytes that are part of a request head not complete yet."""

    # -- aiohttp's state, read ----------------------------------------------------------

    @property
    def queued(self) -> deque[Any]:
        """The parsed requests not answered yet: (message, payload) pairs, oldest first."""
        return self._messages

    def answering(self) -> bool:
        """Whether a request of this connection is being answered, or parsed and waiting to be."""
        return self._request_in_progress or bool(self._messages)

    def in_progress(self) -> bool:
        """Whether a request is being answered now (its handler runs)."""
        return self._request_in_progress

    def closing(self) -> bool:
        """Whether aiohttp is closing the connection (after the current answer, or at once)."""
        return self._close or self._force_close

    def closing_now(self) -> bool:
        """Whether aiohttp is closing the connection at once (no answer goes out any more)."""
        return self._force_close

    def waiting(self) -> bool:
        """Whether the connection waits for its next request (kept alive, or new and silent)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._force_close

    def keepalive_since(self) -> float:
        """When the connection's last answer went out (or it opened): aiohttp's keep-alive clock."""
        return self._next_keepalive_close_time

    # -- aiohttp's state, changed -------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """A timer on the connection's loop."""
        return self._loop.call_later(delay, callback)

    def drop_parser(self) -> None:
        """Let the request parser and what it buffered go (nothing parses on a refused connection)."""
        self._parser = None

    def cancel_handler_task(self) -> None:
        """End aiohttp's request loop for this connection (a refused one: no request will come)."""
        task = self._task_handler
        if task is not None:
            task.cancel()

    def skip_lingering(self) -> None:
        """Close once the current answer is out, without first reading (and dropping) the rest
        of the request's body, which aiohttp otherwise does for a while."""
        self._lingering_time = 0.0


class ServerInternals(web.Server):
    """aiohttp's low-level server, making the protocol a subclass chooses (`make_handler`)."""

    def __call__(self) -> RequestHandler:
        return self.make_handler(loop=self._loop, **self._kwargs)

    def make_handler(self, **kwargs: Any) -> RequestHandler:
        """The protocol of one new connection; `kwargs` are aiohttp's handler options."""
        return RequestHandler(self, **kwargs)
