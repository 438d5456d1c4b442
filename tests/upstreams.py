"""Stand-ins for replicas behind the gateway, on loopback: an aiohttp app that its query string
steers (echo, slow, chunked) and a raw asyncio server that answers and then breaks."""

from __future__ import annotations

import asyncio

from aiohttp import web


class Upstream:
    """An aiohttp app standing in for a replica; the query string steers its behaviour.

    ?sleep=S waits S seconds first; ?chunks=N answers with N chunks (chunked encoding),
    waiting for `self.release` before the last; otherwise it echoes the body back with
    what it saw in X-Seen-* headers.
    """

    def __init__(self, name: str):
        self.name = name
        self.release = asyncio.Event()
        self.requests = 0
        self.bodies = 0  # requests whose body arrived complete
        self.seen_headers: list[dict] = []
        self.peers: set = set()  # client (gateway) addresses: one per upstream connection
        self.client_max_size = 64 * 2**20
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.seen_headers.append(dict(request.headers))
        self.peers.add(request.transport.get_extra_info("peername"))
        body = await request.read()
        self.bodies += 1
        if "sleep" in request.query:
            await asyncio.sleep(float(request.query["sleep"]))
        headers = {
            "X-Replica": self.name,
            "X-Seen-Path": request.path_qs,
            "X-Seen-Request-Id": request.headers.get("X-Request-Id", ""),
            "X-Seen-Transfer-Encoding": request.headers.get("Transfer-Encoding", ""),
        }
        if "chunks" in request.query:
            resp = web.StreamResponse(headers=headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            n = int(request.query["chunks"])
            for i in range(n):
                if i == n - 1:
                    await self.release.wait()
                await resp.write(f"chunk{i};".encode())
            await resp.write_eof()
            return resp
        if request.method == "GET":
            return web.Response(text=f"usage: POST to {self.name}", headers=headers)
        return web.Response(body=body, headers=headers,
                            content_type=request.content_type or "application/octet-stream")

    async def start(self) -> Upstream:
        app = web.Application(client_max_size=self.client_max_size)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5,
                                    access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    @property
    def replica(self) -> tuple[str, str, int]:
        return (self.name, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.release.set()
        await self.runner.cleanup()


class RawUpstream:
    """A raw asyncio server that reads a request head and answers with `reply` bytes, then breaks."""

    def __init__(self, reply: bytes, *, then_wait: float = 0.0):
        self.reply = reply
        self.then_wait = then_wait  # how long the connection stays open after the reply
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.reply)
            await writer.drain()
            await asyncio.sleep(self.then_wait)
        finally:
            writer.transport.abort()  # a reset, as when a replica process dies

    async def start(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
