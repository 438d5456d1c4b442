"""Accepting for gateway workers (workers.py): the daemon's gateway accepts every client connection
and deals each one out, to itself or to a gateway worker process (SCM_RIGHTS on a socketpair).

Why the daemon accepts, and not each process on its own:
- SO_REUSEPORT (every process binding the port) would let any process of the daemon's uid bind it
  too, and take a share of every API's clients: on the process backend a replica runs as the
  daemon's uid when the daemon is not root;
- one listening socket shared by every process (nginx's and gunicorn's pre-fork model) gives the
  new connections to whichever process wakes first, and an event loop accepts all it finds
  queued: a client pool that opens its connections at once lands in one process.
Dealt in turn, every process gets its share, and accepting costs the daemon one accept() and one
sendmsg() per connection, never per request.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

ACCEPT_BATCH = 64  # connections accepted per wakeup, at most (the loop turns between batches)
# errors that mean "no resources now": stop accepting for a moment, as asyncio's servers do
_SHORT = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
PAUSE_S = 1.0


def listening_sockets(host: str, port: int, backlog: int = 1024) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets on every address of `host` (as loop.create_server
    makes them: SO_REUSEADDR, IPv6 sockets IPv6 only). Raises OSError as bind() does."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    made: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


class Acceptor:
    """One listening socket: accepts what arrives and hands each connection to `deal`."""

    def __init__(self, sock: socket.socket, deal: Callable[[socket.socket], None]):
        self.sock = sock
        self.deal = deal
        self.loop = asyncio.get_running_loop()
        self._closed = False
        self.loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:
                if e.errno not in _SHORT:
                    raise
                log.warning("accepting on %s paused for %g s: %s", self.sock.getsockname(), PAUSE_S, e)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(PAUSE_S, self._resume)
                return
            conn.setblocking(False)
            try:
                self.deal(conn)
            except Exception:  # one connection's failure never stops the port
                log.exception("handing a connection over failed")
                conn.close()

    def _resume(self) -> None:
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._ready)

    def close(self) -> None:
        """No new connections from now on."""
        if not self._closed:
            self._closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """The daemon's end and a worker's end of a connection channel (SOCK_SEQPACKET: one message,
    one connection, its port with it), both non-blocking."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    return ours, theirs


def send_connection(channel: socket.socket, port: int, conn: socket.socket) -> bool:
    """Hand `conn` (accepted on `port`) to the process at the other end of `channel` (ours closes);
    False when the channel is full or gone (the caller keeps `conn`)."""
    try:
        socket.send_fds(channel, [port.to_bytes(2, "big")], [conn.fileno()])
    except (BlockingIOError, InterruptedError, OSError):
        return False
    conn.close()
    return True


def receive_connections(channel: socket.socket) -> list[tuple[int, socket.socket]]:
    """The connections waiting on `channel` (non-blocking): (port, socket) each."""
    out: list[tuple[int, socket.socket]] = []
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(channel, 2, 1)
        except (BlockingIOError, InterruptedError):
            return out
        if not data:
            raise ConnectionError("the daemon closed the connection channel")
        for fd in fds:
            out.append((int.from_bytes(data, "big"), socket.socket(fileno=fd)))
