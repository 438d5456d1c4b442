"""What the gateway lets clients hold: open sockets below the open-file limit, bytes of unfinished heads.

Anyone who can reach a gateway port can open connections and send request heads that
never end. Two resources run out (issue 15): memory, in heads held while they trickle in
(1,000 connections with 1 MB of headers each took the daemon to 2 GB), and file
descriptors (at the open-file limit libuv accepts and closes every pending connection,
the control socket's too, and says nothing). nginx is the model for the first, systemd
for the second; this module holds the limits and the bookkeeping, the gateway's
connection protocol (client_connection.py) and what its connections share (connections.py) act on them:

- a request head is at most HEAD_LIMIT bytes (nginx's large_client_header_buffers 4 8k),
  a header line at most HEADER_LINE_LIMIT, MAX_HEADERS header lines; larger -> 431;
- the bytes of unfinished heads, across connections, are at most HELD_HEADS_BUDGET
  (HeldHeads); past it the connection that has held its bytes longest is shed (503);
- the daemon raises its soft open-file limit to the hard one at start
  (raise_open_file_limit), and the gateway's sockets, client and upstream connections
  together, stay `socket_reserve()` below it (SocketCount), so the control API, logs and
  replicas always have descriptors; at the cap idle keep-alive connections are closed
  first, oldest idle first, then those whose head has been arriving longest, and a new
  connection is refused (503) only when neither is left.

No socket is touched here (the rlimit calls aside): counts, a cap, an order of holders.
The hot path pays an integer compare per header line; the rest runs only for heads that
arrive in pieces and new connections at the cap.
"""

from __future__ import annotations

import heapq
import resource
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

# the request line's limit (answered 400, as aiohttp's 8190 was), a header line's (nginx's
# 8 KiB, answered 431) and the number of header lines (431)
REQUEST_LINE_LIMIT = 8190
HEADER_LINE_LIMIT = 8192
MAX_HEADERS = 128
HEAD_LIMIT = 4 * 8192  # bytes of one request head, request line included (nginx: 4 x 8k)
# bytes of unfinished request heads held across all client connections
HELD_HEADS_BUDGET = 16 * 2**20

# descriptors kept for everything but the gateway's sockets: the control socket and its
# clients, the log files, replica pipes and processes, the watcher, the metrics port
RESERVE_MIN = 128
RESERVE_MAX = 2048


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; (before, after).

    The soft limit is 1,024 on most hosts for the sake of select(); the daemon's loop
    (epoll) does not care, and its gateway holds a descriptor per client connection.
    An unlimited hard limit leaves the soft one as it is (Linux has no such thing).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


def open_file_limit() -> int:
    """This process's soft RLIMIT_NOFILE (a large number when unlimited)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 2**20 if soft == resource.RLIM_INFINITY else soft


def socket_reserve(limit: int) -> int:
    """Descriptors kept outside the gateway's sockets under an open-file limit of `limit`."""
    return min(max(RESERVE_MIN, limit // 8), RESERVE_MAX)


def socket_cap(limit: int) -> int:
    """How many sockets (client and upstream connections) the gateway may hold under `limit`."""
    return max(limit - socket_reserve(limit), limit // 2, 1)


def oldest_idle(connections: Iterable[tuple[float, Any]], count: int) -> list[Any]:
    """The `count` connections idle longest, from (idle since, connection) pairs, oldest first."""
    return [conn for _, conn in heapq.nsmallest(count, connections, key=lambda pair: pair[0])]


def shed_batch(cap: int) -> int:
    """How many idle connections go at once when the cap is reached: a scan of the connections
    costs O(n), so each scan frees room for more than one newcomer."""
    return max(1, cap // 64)


class IdlePool(Protocol):
    """A pool of idle connections to a replica (upstream.UpstreamPool)."""

    def shed_idle(self, count: int) -> int: ...


class SocketCount:
    """The gateway's open sockets against its cap. `shed` closes idle client connections (the
    gateway's) and returns how many it closed; has_room() asks it when the cap is reached, and
    then the replicas' pools (`pools`, which add themselves) for their idle connections."""

    __slots__ = ("cap", "limit", "open", "pools", "shed")

    def __init__(self, limit: int, shed: Callable[[], int] | None = None):
        self.limit = limit  # the open-file limit the cap was set under
        self.cap = socket_cap(limit)
        self.open = 0
        self.shed = shed
        self.pools: weakref.WeakSet[IdlePool] = weakref.WeakSet()

    def has_room(self) -> bool:
        """Whether one more socket fits, after closing idle connections if it did not."""
        if self.open < self.cap:
            return True
        self.shed_upstream(self.open - self.cap + 1)
        if self.open >= self.cap and self.shed is not None:
            self.shed()
        return self.open < self.cap

    def shed_upstream(self, needed: int) -> int:
        """Close idle connections to replicas to free `needed` sockets (and a batch more: a scan
        costs O(n)); how many were closed. They go before idle clients: one is opened again at the
        cost of a connect, where a kept-alive client that is shed must come back."""
        want = needed - 1 + shed_batch(self.cap)
        closed = 0
        for pool in list(self.pools):
            closed += pool.shed_idle(want - closed)
            if closed >= want:
                break
        return closed


class HeldHeads:
    """Bytes of unfinished request heads per connection, and in all, against a budget.

    `holders` keeps connections in the order they started holding (dict order): when
    the total passes the budget, the first is the one that has held its bytes longest.
    A connection records what it holds in its `held` attribute.
    """

    __slots__ = ("budget", "holders", "total")

    def __init__(self, budget: int = HELD_HEADS_BUDGET):
        self.budget = budget
        self.total = 0
        self.holders: dict[Any, None] = {}

    def add(self, conn: Any, n: int) -> bool:
        """`conn` holds `n` bytes more; whether the total is now over the budget."""
        if not conn.held:
            self.holders[conn] = None
        conn.held += n
        self.total += n
        return self.total > self.budget

    def release(self, conn: Any) -> None:
        """`conn` holds nothing any more (its head completed, or it closed)."""
        self.total -= conn.held
        conn.held = 0
        self.holders.pop(conn, None)

    def over(self) -> bool:
        return self.total > self.budget

    def longest_held(self) -> Any:
        """The connection that has held its bytes longest (there is one while the total is over)."""
        return next(iter(self.holders))
