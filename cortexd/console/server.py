"""The web console's routes, on the daemon's admin port beside /metrics (daemon/control.py).

    GET  /                          the overview page      GET /apis/{name}   one API's page
    GET  /static/{file}             the page's own script and style (cortexd/console/static/)
    GET  /console/status            the status snapshot (what `cortexd get -o json` reads)
    GET  /console/apis/{name}       one API: its status, replicas' models, configuration, history
    GET  /console/live[?api=NAME]   server-sent events: each second's sample (the sampler's)
    GET  /console/apis/{name}/logs  server-sent events: ?replica=ID&tail=N&follow=1
    POST /console/apis/{name}/try   the body sent to the API through the gateway (token)
    GET  /apis/{name}/openapi.json  its OpenAPI 3.1 document (openapi.py)

Read-only but for try-it, which needs the daemon's token (guard.py). The pages are static
files: every value the daemon serves reaches them as JSON and is put into the page as text by
console.js, never as markup, so what a predictor prints or answers shows as written.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp import web

from cortexd.console import openapi
from cortexd.console.guard import SECURITY_HEADERS, token_matches
from cortexd.errors import CortexdError
from cortexd.history import History
from cortexd.status import Status

if TYPE_CHECKING:
    from cortexd.spec.model import APISpec

STATIC = {"console.js": "text/javascript", "console.css": "text/css", "favicon.svg": "image/svg+xml"}
TRY_TIMEOUT_S = 120
HEARTBEAT_S = 15.0  # a quiet log stream writes a comment this often, to find a closed tab
SHOWN_BODY = 8 * 2**20  # a try-it answer past this is cut (the page says so)
# answer headers a try-it shows (the gateway's and the replica's), not hop-by-hop ones
_HIDDEN = {"connection", "keep-alive", "transfer-encoding"}


class ConsoleSamples(Protocol):
    """The sampler (cortexd/daemon/sampler.py), as the console reads it."""

    status: Status | None
    history: History

    def status_json(self) -> dict[str, Any] | None: ...

    taken: int

    async def sample_after(self, taken: int) -> None: ...


class ConsoleDaemon(Protocol):
    """What the console asks of the daemon."""

    def status(self) -> Status: ...

    async def replica_models(self, name: str) -> dict[str, dict]: ...

    def log_sources(self, name: str, previous: bool = False) -> list[tuple[str, str | None]]: ...

    def stream_logs(self, name: str, sources: list[tuple[str, str | None]], tail: int | None,
                    follow: bool, since: float | None = None) -> AsyncIterator[str]: ...

    def spec_of(self, name: str) -> APISpec | None: ...


def _static_text(name: str) -> str:
    return resources.files("cortexd.console").joinpath("static", name).read_text("utf-8")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Console:
    """The handlers; `closing` ends every stream at the daemon's shutdown."""

    def __init__(self, daemon: ConsoleDaemon, samples: ConsoleSamples, token: str,
                 clock: Callable[[], float] = time.time):
        self.daemon, self.samples, self.token, self.clock = daemon, samples, token, clock
        self.closing = asyncio.Event()
        self._client: aiohttp.ClientSession | None = None
        self._page: str | None = None

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.page)
        r.add_get("/apis/{name}", self.page)
        r.add_get("/static/{file}", self.static)
        r.add_get("/console/status", self.status)
        r.add_get("/console/live", self.live)
        r.add_get("/console/apis/{name}", self.api)
        r.add_get("/console/apis/{name}/logs", self.logs)
        r.add_post("/console/apis/{name}/try", self.try_it)
        r.add_get("/apis/{name}/openapi.json", self.openapi)
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, app: web.Application) -> None:
        self.closing.set()
        if self._client is not None:
            await self._client.close()

    # -- pages -----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        if self._page is None:
            self._page = _static_text("console.html")
        # the token is URL-safe base64: nothing in it can end the attribute it is written into
        return web.Response(text=self._page.replace("{{TOKEN}}", self.token), content_type="text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in STATIC:
            return _error(404, f"no console file {name!r}")
        return web.Response(text=_static_text(name), content_type=STATIC[name])

    # -- data ------------------------------------------------------------------------------

    def _status(self) -> Status:
        return self.samples.status or self.daemon.status()

    def _status_json(self) -> dict[str, Any]:
        return self.samples.status_json() or self.daemon.status().to_json()

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status_json())

    async def api(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        status = self.daemon.status()
        splitter, api = status.splitter(name), status.api(name)
        if splitter is not None:  # a traffic splitter's page shows its status
            return web.json_response({"splitter": splitter.to_json()})
        if api is None:
            return _error(404, f"no api named {name!r}")
        spec = self.daemon.spec_of(name)
        ring = self.samples.history.of(name)
        try:
            models = await self.daemon.replica_models(name)
        except CortexdError:
            models = {}
        return web.json_response({
            "api": api.to_json(), "models": models,
            "config": {"source": api.source, "document": spec.raw if spec is not None else None},
            "history": ring.since(0.0) if ring is not None else None,
            "openapi": f"/apis/{name}/openapi.json",
        }, dumps=_dumps)

    async def openapi(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        spec = self.daemon.spec_of(name)
        api = self._status().api(name)
        if spec is None or api is None:
            return _error(404, f"no api named {name!r}")
        source = await asyncio.to_thread(_read_source, spec.predictor.path)
        server = api.url[: len(api.url) - len(api.endpoint)] if api.url.endswith(api.endpoint) else api.url
        doc = openapi.document(name, api.endpoint, server, source, kind=spec.kind,
                               predictor_type=spec.predictor.type)
        return web.json_response(doc, dumps=_dumps)

    # -- streams ---------------------------------------------------------------------------

    async def _event_stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        resp.headers.update({k: v for k, v in SECURITY_HEADERS.items() if k != "Cache-Control"})
        await resp.prepare(request)
        return resp

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Each second's sample: the overview's status, or one API's status and its new samples."""
        name = request.query.get("api")
        try:
            after = float(request.query.get("after") or 0)  # the samples the page has
        except ValueError:
            return _error(400, "after must be epoch seconds")
        resp = await self._event_stream(request)
        try:
            while not self.closing.is_set():
                taken = self.samples.taken
                payload = self._live_payload(name, after)
                times = payload.get("history", {}).get("t")
                after = times[-1] if times else after
                await resp.write(b"data: " + _dumps(payload).encode() + b"\n\n")
                if not await self._wait_sample(taken):
                    break
        except ConnectionResetError:
            pass  # the tab went away
        return resp

    def _live_payload(self, name: str | None, after: float) -> dict[str, Any]:
        if name is None:
            return {"status": self._status_json()}
        api = self._status().api(name)
        ring = self.samples.history.of(name)
        return {"api": api.to_json() if api is not None else None,
                "history": ring.since(after) if ring is not None else {"t": []}}

    async def _wait_sample(self, taken: int) -> bool:
        """Waits for a sample after the `taken`th; False when the console closes first."""
        sample = asyncio.ensure_future(self.samples.sample_after(taken))
        closing = asyncio.ensure_future(self.closing.wait())
        done, pending = await asyncio.wait({sample, closing}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return sample in done and not self.closing.is_set()

    async def logs(self, request: web.Request) -> web.StreamResponse:
        """The API's log lines as events: the last `tail` per replica, then with follow new ones."""
        name = request.match_info["name"]
        replica = request.query.get("replica") or None
        follow = request.query.get("follow") in ("1", "true")
        try:
            tail = min(int(request.query.get("tail", "200")), 5000)
            sources = self.daemon.log_sources(name)
        except ValueError:
            return _error(400, "tail must be an integer")
        except CortexdError as e:
            return _error(404, str(e))
        if replica is not None:
            sources = [(rid, path) for rid, path in sources if rid == replica]
            if not sources:
                return _error(404, f"api {name!r} has no replica {replica!r}")
        resp = await self._event_stream(request)
        lines = _Lines(self.daemon.stream_logs(name, sources, tail, follow), self.closing)
        prefix = f"{replica} | " if replica is not None else None
        try:
            while (line := await lines.next()) is not None:
                if line is _QUIET:  # nothing new a while: a comment, so a closed tab is found out
                    await resp.write(b": still following\n\n")
                    continue
                if prefix is not None and line.startswith(prefix):
                    line = line[len(prefix):]
                elif prefix is not None and " | " in line and follow:
                    continue  # a replica started since, not the one asked for
                await resp.write(b"data: " + json.dumps(line).encode() + b"\n\n")
            await resp.write(b"event: end\ndata: {}\n\n")
        except ConnectionResetError:
            pass  # the tab went away
        finally:
            await lines.close()
        return resp


    # -- try it ----------------------------------------------------------------------------

    async def try_it(self, request: web.Request) -> web.Response:
        """The request's body, Content-Type and query string, sent to the API's endpoint through
        the gateway; the answer's status, latency, headers and body as JSON."""
        if not token_matches(request, self.token):
            return _error(403, "try-it needs the console's token (open the console's page to send one)")
        api = self._status().api(request.match_info["name"])
        if api is None:
            return _error(404, f"no api named {request.match_info['name']!r}")
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/octet-stream")}
        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TRY_TIMEOUT_S))
        started = time.perf_counter()
        try:
            async with self._client.post(api.url, data=body, headers=headers, params=request.rel_url.query,
                                         allow_redirects=False) as answer:
                data = await answer.content.read(SHOWN_BODY + 1)
                latency_ms = (time.perf_counter() - started) * 1000
                return web.json_response(_answer_json(answer.status, answer.headers, data, latency_ms))
        except (aiohttp.ClientError, TimeoutError) as e:
            return _error(502, f"the gateway did not answer at {api.url}: {type(e).__name__}: {e}")


_QUIET = "\x00quiet"  # _Lines.next(): no line for HEARTBEAT_S


class _Lines:
    """A log stream read line by line that also says when it was quiet for HEARTBEAT_S (a stream's
    handler writes then, so it ends soon after its tab closes, not at the next log line) and ends
    when the console closes."""

    def __init__(self, lines: AsyncIterator[str], closing: asyncio.Event):
        self._lines, self._closing = lines, closing
        self._next: asyncio.Future | None = None

    async def next(self) -> str | None:
        if self._next is None:
            self._next = asyncio.ensure_future(anext(self._lines, None))
        closing = asyncio.ensure_future(self._closing.wait())
        done, _ = await asyncio.wait({self._next, closing}, timeout=HEARTBEAT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()
        if self._next in done:
            line, self._next = self._next.result(), None
            return line
        return None if self._closing.is_set() else _QUIET

    async def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            await asyncio.gather(self._next, return_exceptions=True)
        await self._lines.aclose()  # type: ignore[attr-defined]


def _answer_json(status: int, headers: Any, data: bytes, latency_ms: float) -> dict[str, Any]:
    cut = len(data) > SHOWN_BODY
    data = data[:SHOWN_BODY]
    content_type = headers.get("Content-Type", "")
    out: dict[str, Any] = {
        "status": status, "latency_ms": round(latency_ms, 2), "truncated": cut,
        "headers": [[k, v] for k, v in headers.items() if k.lower() not in _HIDDEN],
        "content_type": content_type, "size": len(data),
    }
    textual = content_type.startswith(("application/json", "text/")) or not content_type
    try:
        text = data.decode("utf-8") if textual else None
    except UnicodeDecodeError:
        text = None
    if text is not None:
        out["text"] = text
    else:
        out["base64"] = base64.b64encode(data).decode("ascii")
    return out


def _read_source(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 20)
    except OSError:
        return None


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
