"""The gateway's idle connections to a replica (cortexd/gateway/upstream.py, UpstreamPool): how
many are kept, which expire, and which go when the gateway is short of sockets; fake connections
and a fake clock, no sockets."""

from __future__ import annotations

from cortexd.gateway.admission import SocketCount, shed_batch
from cortexd.gateway.upstream import IDLE_TIMEOUT, MAX_IDLE, UpstreamPool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


class Conn:
    """An upstream connection as the pool sees it: counted in the gateway's sockets while open."""

    def __init__(self, sockets: SocketCount) -> None:
        self.sockets = sockets
        self.open = self.counted = True
        self.active = True
        self.idle_since = 0.0
        sockets.open += 1

    def reusable(self) -> bool:
        return self.open

    def uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.sockets.open -= 1

    def close(self) -> None:  # the close completes at once here (connection_lost: uncount)
        self.open = False
        self.uncount()


def pool_and_clock(limit: int = 100_000) -> tuple[UpstreamPool, Clock, SocketCount]:
    clock = Clock()
    sockets = SocketCount(limit)
    return UpstreamPool("127.0.0.1", 1, loop=clock, sockets=sockets), clock, sockets  # type: ignore[arg-type]


def test_a_steady_load_of_hundreds_of_requests_keeps_its_connections():
    # 256 requests in flight at once on one replica: each connection returned is kept for the next
    # request (the earlier bound of 64 closed three in four, and each request opened one anew)
    pool, clock, sockets = pool_and_clock()
    conns = [Conn(sockets) for _ in range(256)]
    for conn in conns:
        pool.release(conn)  # type: ignore[arg-type]
    assert all(c.open for c in conns) and sockets.open == 256
    taken = [pool.take_idle() for _ in range(256)]
    assert set(map(id, taken)) == set(map(id, conns)) and pool.take_idle() is None
    assert MAX_IDLE >= 1024  # Cortex's default max_replica_concurrency


def test_connections_idle_past_the_timeout_are_closed_as_the_pool_is_used():
    pool, clock, sockets = pool_and_clock()
    old = [Conn(sockets) for _ in range(3)]
    for conn in old:
        pool.release(conn)  # type: ignore[arg-type]
    clock.now += IDLE_TIMEOUT + 1
    fresh = Conn(sockets)
    for _ in range(3):  # one expired connection closed per return, the oldest first
        fresh.active = True
        pool.release(fresh)  # type: ignore[arg-type]
        assert pool.take_idle() is fresh
    assert [c.open for c in old] == [False, False, False] and sockets.open == 1


def test_short_of_sockets_the_idle_connections_to_replicas_go_first_oldest_first():
    pool, clock, sockets = pool_and_clock(limit=400)
    conns = [Conn(sockets) for _ in range(10)]
    for conn in conns:
        clock.now += 1
        pool.release(conn)  # type: ignore[arg-type]
    clients_shed = []
    sockets.shed = lambda: clients_shed.append(1) or 0
    sockets.open = sockets.cap  # the rest of the cap taken by clients
    assert sockets.has_room() and not clients_shed
    n = shed_batch(sockets.cap)
    assert [c.open for c in conns] == [False] * n + [True] * (10 - n)  # the oldest, at once uncounted
    assert sockets.open == sockets.cap - n
