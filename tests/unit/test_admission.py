"""What the gateway lets clients hold (cortexd/gateway/admission.py): the socket cap below the
open-file limit, the head limits, the order connections are shed in, the held-heads budget."""

from __future__ import annotations

from cortexd.gateway.admission import (
    HEAD_LIMIT,
    HEADER_LINE_LIMIT,
    REQUEST_LINE_LIMIT,
    HeldHeads,
    SocketCount,
    oldest_idle,
    shed_batch,
    socket_cap,
    socket_reserve,
)


class Conn:
    held = 0


def test_the_gateway_keeps_descriptors_for_the_rest_of_the_daemon():
    assert (socket_reserve(1024), socket_cap(1024)) == (128, 896)
    assert (socket_reserve(20_000), socket_cap(20_000)) == (2048, 17_952)
    assert socket_cap(400) == 272
    assert socket_cap(100) == 50  # a tiny limit: half of it, not nothing
    assert socket_cap(1) == 1


def test_head_limits_are_nginx_large_client_header_buffers():
    assert HEAD_LIMIT == 4 * 8192
    assert HEADER_LINE_LIMIT == 8192 and REQUEST_LINE_LIMIT != HEADER_LINE_LIMIT


def test_idle_connections_are_shed_oldest_idle_first_in_batches():
    assert oldest_idle([(5.0, "e"), (1.0, "a"), (3.0, "c"), (2.0, "b")], 2) == ["a", "b"]
    assert oldest_idle([(1.0, "a")], 5) == ["a"]
    assert shed_batch(17_952) == 280 and shed_batch(10) == 1


def test_socket_count_sheds_idle_connections_when_full():
    closed = []
    sockets = SocketCount(400)

    def shed() -> int:
        closed.append(sockets.open)
        sockets.open -= 3
        return 3

    sockets.shed = shed
    sockets.open = sockets.cap - 1
    assert sockets.has_room() and not closed
    sockets.open = sockets.cap
    assert sockets.has_room() and closed == [sockets.cap]
    sockets.shed = lambda: 0  # nothing idle to close
    sockets.open = sockets.cap
    assert not sockets.has_room()


def test_held_heads_budget_names_the_connection_that_held_longest():
    heads = HeldHeads(budget=100)
    a, b, c = Conn(), Conn(), Conn()
    assert not heads.add(a, 40)
    assert not heads.add(b, 40)
    assert not heads.add(a, 10)  # a holds more, and still since first
    assert heads.add(c, 20)  # 110 > 100
    assert heads.over() and heads.longest_held() is a and a.held == 50
    heads.release(a)
    assert (heads.total, a.held, heads.over(), heads.longest_held()) == (60, 0, False, b)
    heads.release(a)  # twice: nothing more
    assert heads.total == 60


class Pool:
    """An upstream pool's side of shedding (upstream.UpstreamPool.shed_idle)."""

    def __init__(self, sockets: SocketCount, idle: int):
        self.sockets, self.idle, self.asked = sockets, idle, []
        sockets.pools.add(self)

    def shed_idle(self, count: int) -> int:
        self.asked.append(count)
        n = min(count, self.idle)
        self.idle -= n
        self.sockets.open -= n
        return n


def test_at_the_cap_idle_replica_connections_go_before_idle_clients():
    sockets = SocketCount(400)
    clients_shed = []
    sockets.shed = lambda: clients_shed.append(sockets.open) or 0
    pool = Pool(sockets, idle=2)
    sockets.open = sockets.cap
    assert sockets.has_room() and pool.idle == 0 and pool.asked == [shed_batch(sockets.cap)]
    assert not clients_shed  # room was made without a client's connection
    sockets.open = sockets.cap  # the pool has nothing idle left: the clients' turn
    assert not sockets.has_room() and clients_shed == [sockets.cap]
