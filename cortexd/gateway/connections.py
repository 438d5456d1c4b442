"""The gateway's client connections as a whole: what they share, and who goes when sockets run short.

Each client connection (client_connection.py) counts itself against budgets it shares
with every other: the bytes of unfinished request heads and the gateway's sockets
(admission.py). `ClientConnections` holds those budgets and acts when one is spent: past
the socket cap the connections idle longest are closed (then those trickling a head in
longest, then the newcomer is refused), past the heads budget the connection that held
its bytes longest gives them up. It also makes the request ids of answers without a
request and logs what clients get wrong, one line per kind per interval
(client_errors.py). The gateway (proxy.py) makes one and hands it to every listener; the
connections of all listeners come from `connections()`, which the gateway gives it.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Protocol

from cortexd.gateway.admission import HeldHeads, SocketCount, oldest_idle, open_file_limit, shed_batch
from cortexd.gateway.client_errors import INTERVAL, ClientErrorLog
from predictor_runtime.log_limits import RateLimit

log = logging.getLogger(__name__)


class Connection(Protocol):
    """What ClientConnections asks of a client connection (client_connection.ClientConnection)."""

    held: int  # bytes of an unfinished head it counts in HeldHeads

    def idle(self) -> bool: ...
    def idle_since(self) -> float: ...
    def answering(self) -> bool: ...
    def shed(self) -> None: ...
    def evict(self) -> None: ...
    def refuse(self, status: int, message: str, *, retry_after: bool = False) -> None: ...


class ClientConnections:
    """Budgets the gateway's client connections share, and the shedding when they are spent."""

    def __init__(self, header_timeout: float, held_heads_budget: int, open_files: int | None = None,
                 connections: Callable[[], Iterable[Connection]] = tuple, send_timeout: float = 60.0):
        """`open_files`: the limit the sockets stay below (default: this process's soft
        RLIMIT_NOFILE, read now); `connections`: every open client connection, now."""
        self.header_timeout = header_timeout  # the whole request head must arrive within it (408)
        self.send_timeout = send_timeout  # a client may take nothing of its answer no longer than this
        self.held_heads = HeldHeads(held_heads_budget)
        self.sockets = SocketCount(open_file_limit() if open_files is None else open_files, shed=self.shed_idle)
        self.connections = connections
        self.errors = ClientErrorLog()  # client mistakes: one log line per kind per interval
        self._short_of_files = RateLimit(INTERVAL)
        # request ids of the answers the gateway makes: unique per daemon run, cheap to make
        self.id_prefix = secrets.token_hex(4) + "-"
        self.ids = itertools.count(1)

    def new_request_id(self) -> str:
        return f"{self.id_prefix}{next(self.ids):x}"

    def client_error(self, kind: str, detail: str) -> None:
        """Log a client's mistake: one line per kind per interval, with a count of those left out."""
        suppressed = self.errors.admit(kind, monotonic())
        if suppressed is not None:
            log.warning(ClientErrorLog.line(kind, detail, suppressed))

    def at_socket_cap(self, newcomer: Connection) -> None:
        """A new connection took the gateway past its socket cap: idle ones go first, then those
        trickling a head in longest (a slow head must not lock new clients out), else it does.
        Idle connections to replicas go before idle clients' (SocketCount.shed_upstream)."""
        sockets = self.sockets
        sockets.shed_upstream(sockets.open - sockets.cap)
        if sockets.open > sockets.cap:
            self.shed_idle(exclude=newcomer)
        if sockets.open > sockets.cap and self.held_heads.holders:
            closed = 0
            for conn in list(self.held_heads.holders):
                if sockets.open <= sockets.cap:
                    break
                if conn is not newcomer and not conn.answering():
                    conn.shed()
                    closed += 1
            if closed:
                self.short_of("unfinished heads closed", f"closed {closed} connection(s) whose head had been "
                                                         "arriving longest, none being idle")
        if sockets.open > sockets.cap:
            self.short_of("connections refused", f"{sockets.open} sockets open and none idle")
            newcomer.refuse(503, f"the gateway is at its connection limit ({sockets.cap} connections under "
                                 f"an open-file limit of {sockets.limit}); try again shortly", retry_after=True)

    def shed_idle(self, exclude: Connection | None = None) -> int:
        """Close the connections idle longest (keep-alive, or opened and silent), a batch of
        them, to bring the sockets below the cap; how many were closed."""
        sockets = self.sockets
        want = sockets.open - sockets.cap + shed_batch(sockets.cap)
        if want <= 0:
            return 0
        idle = [(conn.idle_since(), conn) for conn in self.connections() if conn is not exclude and conn.idle()]
        shed = oldest_idle(idle, want)
        for conn in shed:
            conn.shed()
        if shed:
            self.short_of("idle connections closed", f"closed {len(shed)} idle keep-alive connection(s), "
                                                     "those idle longest")
        return len(shed)

    def shed_held_heads(self) -> None:
        """Past the budget for unfinished heads: the connections that have held theirs longest give them up."""
        held = self.held_heads
        while held.over():
            held.longest_held().evict()

    def short_of(self, kind: str, detail: str) -> None:
        """Log running short of descriptors: one line per kind per interval, with a count of the rest."""
        suppressed = self._short_of_files.admit(kind, monotonic())
        if suppressed is not None:
            sockets = self.sockets
            more = f" (and {suppressed} more like it since the last such line)" if suppressed else ""
            log.warning("gateway short of file descriptors: %s: %s; %d sockets open, cap %d below the open-file "
                        "limit %d (RLIMIT_NOFILE: EMFILE past it; the rest is kept for the control API, logs and "
                        "replicas)%s", kind, detail, sockets.open, sockets.cap, sockets.limit, more)
