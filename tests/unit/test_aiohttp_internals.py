"""The private state of aiohttp the gateway reads (gateway/aiohttp_internals.py), checked against the
installed aiohttp: an upgrade that moves it fails here, naming what moved, not in a client's connection.

No socket: the protocol is fed bytes through a transport that records what is written.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from cortexd.gateway.aiohttp_internals import ATTRIBUTES, HandlerInternals, ServerInternals

PINNED = "setup.cfg pins the aiohttp range tested (install_requires)"


class Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data):
        self.written.append(bytes(data))

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return 0


class Recording(HandlerInternals):
    __slots__ = ("reads",)

    def __init__(self, manager, **kwargs):
        super().__init__(manager, **kwargs)
        self.reads: list[tuple] = []

    def heads_arrived(self, data, new, started_clean, queued):
        self.reads.append(("heads", new, started_clean, len(queued)))

    def head_piece(self, n):
        self.reads.append(("piece", n))


class Server(ServerInternals):
    def make_handler(self, **kwargs):
        return Recording(self, **kwargs)


async def ok(request):
    return web.Response(text="ok")


async def test_every_private_name_the_adapter_relies_on_is_still_there():
    server = Server(ok, keepalive_timeout=75.0)
    handler = server()  # ServerInternals.__call__: aiohttp's own construction, with the server's options
    assert isinstance(handler, Recording)
    missing = [n for n in ATTRIBUTES["RequestHandler"] if not hasattr(handler, n)]
    missing += [f"Server.{n}" for n in ATTRIBUTES["Server"] if not hasattr(server, n)]
    assert not missing, f"aiohttp {aiohttp.__version__} moved {missing}: update aiohttp_internals.py ({PINNED})"
    assert issubclass(HandlerInternals, RequestHandler)


async def test_reads_are_told_apart_as_heads_and_pieces_of_heads_and_the_state_reads_true():
    handler = Server(ok)()
    transport = Transport()
    handler.connection_made(transport)
    handler.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nCont")  # part of a head
    handler.data_received(b"ent-Length: 4\r\n\r\nbody")  # the rest, and its body
    assert handler.reads == [("piece", 30), ("heads", 1, True, 1)]
    assert handler.answering() and len(handler.queued) == 1 and not handler.closing()
    handler.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined
    assert handler.reads[-1] == ("heads", 2, True, 3)

    for _ in range(200):  # aiohttp's request loop answers the three
        await asyncio.sleep(0)
        if b"".join(transport.written).count(b"HTTP/1.1 200 OK") == 3 and not handler.answering():
            break
    assert b"".join(transport.written).count(b"HTTP/1.1 200 OK") == 3
    assert not handler.answering() and not handler.in_progress()
    for _ in range(200):
        if handler.waiting():
            break
        await asyncio.sleep(0)
    assert handler.waiting()  # kept alive, waiting for the next request
    assert isinstance(handler.keepalive_since(), float)

    timer = handler.call_later(60, lambda: None)
    assert isinstance(timer, asyncio.TimerHandle)
    timer.cancel()
    handler.skip_lingering()
    assert handler._lingering_time == 0.0
    handler.close()
    assert handler.closing() and not handler.closing_now()
    handler.force_close()
    assert handler.closing_now() and not handler.waiting()
    handler.drop_parser()
    handler.cancel_handler_task()
    handler.connection_lost(None)
    await asyncio.sleep(0)
