"""A process replica's unix socket with a full backlog (the replica slow to accept a burst): a
unix connect fails at once (EAGAIN) where a TCP connect waits in the SYN queue. The gateway's
pool then connects to the replica's port, which serves the same, rather than answering 502.

On uvloop, as the gateway runs (asyncio's own loop reports such a connect as made)."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
import uvloop

from cortexd.gateway.upstream import UpstreamPool


@pytest.fixture
def full_unix_socket(short_dir):
    """A listening unix socket that never accepts, its backlog filled; yields its path."""
    path = f"{short_dir}/sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0)
    waiting = []
    try:
        for _ in range(16):  # bounded: a backlog of 0 takes one or two
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            waiting.append(c)
            try:
                c.connect(path)
            except BlockingIOError as e:
                assert e.errno == errno.EAGAIN
                break
        else:
            pytest.fail("the backlog never filled")
        yield path
    finally:
        for c in waiting:
            c.close()
        server.close()


def test_a_unix_socket_with_a_full_backlog_is_reached_on_the_port_instead(full_unix_socket):
    async def main() -> object:
        accepted = []
        tcp = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        pool = UpstreamPool("127.0.0.1", port, socket=full_unix_socket)
        try:
            conn = await pool.connect()
            assert conn.transport is not None
            peer = conn.transport.get_extra_info("peername")
            conn.close()
            return peer
        finally:
            for w in accepted:
                w.close()
            tcp.close()
            await tcp.wait_closed()

    peer = uvloop.run(main())
    assert isinstance(peer, tuple) and peer[0] == "127.0.0.1"
