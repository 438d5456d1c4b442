"""The gateway: the request path from a client to a replica (DESIGN.md section 8).

    client --HTTP--> aiohttp web.Server (one per local_port)
                       | path -> APIRoute          (routes.port_table, one dict lookup)
                       | replica = least in-flight (core.routing.pick_replica)
                       | request head, body, answer (relay.py: bytes through, never parsed)
                       v
                     UpstreamPool of the replica   (upstream.py: raw bytes out, httptools in)
                       v
                     predictor runtime (python -m predictor_runtime) on 127.0.0.1:PORT

The daemon (cortexd/daemon) drives it: `configure()` with the desired APIs and
ports, `set_replicas()` with each API's ready replicas, `set_state()` while an
API is starting or in error, and reads the in-flight counts for autoscaling,
draining and status.

Why aiohttp's low-level `web.Server` and not `web.Application`: no router, no
middleware chain, no match-info objects per request; the route table is a dict
built on configure; each client connection is a client_connection.ClientConnection
(request-head timeout, quiet answers to malformed requests). Why not
aiohttp.ClientSession upstream: measured at 0.34x of direct throughput (see upstream.py).

Rules kept here: a request that reached a predictor is never retried (only a
failure to connect is, once, elsewhere); bodies are never parsed; every answer,
proxied or not, carries X-Request-Id; error answers are JSON {"error": ...,
"request_id": ...} and never carry a replica's log lines (client_reason()).
Every finished request is counted in its route's APIMetrics (status, latency;
metrics.py), and the bodies of monitored APIs' 2xx answers are queued for the
route's Monitor, parsed later, never on the way out.

Clients are not trusted to be quick or well-formed (nginx is the model): a body
up to REQUEST_BUFFER_LIMIT is read before the request takes a replica slot
(proxy_request_buffering), a request head and each body read are bounded by the
client header and body timeouts (408), bodies are forwarded still encoded (the
runtime enforces the body limit on the decoded size), malformed requests are
answered and logged quietly (client_connection.py, client_errors.py), and close()
drains with `Connection: close` so kept-alive clients are told, never cut.

Nor are they trusted to be few (admission.py): a request head is capped (431), the
bytes of unfinished heads across connections are budgeted (the longest held is shed,
503), and the gateway's sockets stay below the open-file limit, with room kept for the
control API: at the cap, idle keep-alive connections are closed first, oldest idle
first, and a new connection is refused (503) only when none is idle. Running short of
descriptors is logged once per interval, never once per connection.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import itertools
import json
import logging
import re
import secrets
from collections.abc import Sequence
from time import monotonic
from typing import cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_request import BaseRequest

from cortexd.core.health import (
    DROPPED,
    FAILURE,
    TIMEOUT,
    HealthPolicy,
    after_answer,
    after_failure,
    readmitted,
)
from cortexd.core.routing import pick_replica
from cortexd.errors import CortexdError, UnknownAPI
from cortexd.gateway.admission import (
    HEADER_LINE_LIMIT,
    HELD_HEADS_BUDGET,
    MAX_HEADERS,
    REQUEST_LINE_LIMIT,
    HeldHeads,
    SocketCount,
    oldest_idle,
    open_file_limit,
    shed_batch,
    size_text,
)
from cortexd.gateway.client_connection import ClientConnection, GatewayServer
from cortexd.gateway.client_errors import INTERVAL, ClientErrorLog, shown
from cortexd.gateway.relay import (
    BUFFER_LIMIT,
    BodyTooLarge,
    BufferedResponse,
    read_rest,
    request_head,
    response_headers,
    send_streamed_body,
    send_whole_body,
)
from cortexd.gateway.routes import (
    APIRoute,
    ReplicaTarget,
    RouteConfig,
    endpoint_clashes,
    port_table,
)
from cortexd.gateway.upstream import (
    UpstreamConnectError,
    UpstreamConnection,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamNoSocket,
    UpstreamNotDelivered,
    UpstreamPool,
    UpstreamTimeout,
)
from predictor_runtime.log_limits import RateLimit

log = logging.getLogger(__name__)


class _RetryElsewhere(Exception):
    """An exchange failed in a way that provably never reached a predictor, and may be retried."""

    def __init__(self, error: UpstreamError):
        super().__init__(str(error))
        self.error = error


# Request bodies up to this are read whole before a replica is chosen (nginx's
# proxy_request_buffering): a slow client then holds no replica slot, no in-flight count
# and drives no autoscaling while it uploads. Larger bodies stream through.
REQUEST_BUFFER_LIMIT = 1024 * 1024
CLIENT_KEEPALIVE = 75.0  # seconds an idle client connection stays open (nginx's default)
CLOSE_GRACE = 0.5  # seconds kept-alive connections get, at close(), to be told to close
# nginx's client_header_timeout and client_body_timeout: the whole request head must
# arrive within the first, and the body may pause no longer than the second between reads
CLIENT_HEADER_TIMEOUT = 60.0
CLIENT_BODY_TIMEOUT = 60.0
# a client's X-Request-Id is kept when it is this short and made of these characters;
# anything else (log-line forging, megabyte ids) is replaced by one the gateway makes
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}").fullmatch


class _Listener:
    """One listening port: its aiohttp server and the route table it serves."""

    def __init__(self, port: int):
        self.port = port
        self.table: dict[str, APIRoute] = {}
        self.endpoints: list[str] = []
        self.web_server: web.Server | None = None
        self.server: asyncio.AbstractServer | None = None

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let running requests finish (up to `timeout`), close connections."""
        if self.server is not None:
            self.server.close()
        if self.web_server is not None:
            self.web_server.pre_shutdown()
            await self.web_server.shutdown(timeout)


def client_reason(api: str, detail: str) -> str:
    """What a client is told about an API in error; `detail` (log lines, tracebacks) stays in `cortexd get`.

    The daemon's reason holds the replica's last log lines, which may hold anything the
    predictor printed (a password, a database URL): none of it reaches an HTTP client.
    """
    lowered = detail.lower()
    if any(word in lowered for word in ("requirements.txt", "cannot be installed", "conda-packages.txt",
                                        "python environment", "dependencies.sh", "pip.conf")):
        why = "its dependencies could not be installed"
    elif "unhealthy" in lowered:
        why = "its replicas stopped answering and are being replaced"
    elif "out of memory" in lowered:
        why = "its predictor ran out of memory"
    elif "did not become ready" in lowered:
        why = "its predictor did not become ready in time"
    elif "replica image" in lowered:
        why = "its replica image could not be prepared"
    elif "could not start a replica" in lowered:
        why = "its replicas could not be started"
    elif "internal error" in lowered:
        why = "the daemon could not reconcile it"
    else:
        why = "its predictor failed to start"
    return f"the API is not ready: {why}; see `cortexd get {api}`"


class Gateway:
    """Listens on every configured local_port and proxies requests to ready replicas."""

    def __init__(self, host: str = "127.0.0.1", *, max_body_size: int = 32 * 2**20,
                 no_replica_wait: float = 30.0, upstream_timeout: float = 60.0,
                 client_header_timeout: float = CLIENT_HEADER_TIMEOUT,
                 client_body_timeout: float = CLIENT_BODY_TIMEOUT,
                 request_buffer_size: int = REQUEST_BUFFER_LIMIT,
                 health: HealthPolicy | None = None, held_heads_budget: int = HELD_HEADS_BUDGET,
                 open_files: int | None = None):
        """`open_files`: the open-file limit the gateway's sockets stay below (default: this
        process's soft RLIMIT_NOFILE, read now; the daemon raised it at start)."""
        self.host = host
        self.max_body_size = max_body_size
        self.no_replica_wait = no_replica_wait
        self.upstream_timeout = upstream_timeout
        self.client_header_timeout = client_header_timeout
        self.client_body_timeout = client_body_timeout
        self.request_buffer_size = request_buffer_size
        self.health = health or HealthPolicy()  # passive health checks (cortexd.core.health)
        # called (api, replica id, reason, replace=, until=) when a replica leaves rotation:
        # the reconciler reports it, and replaces it when `replace` (hung, not just ejected
        # until the monotonic time `until`)
        self.on_replica_health = None
        self._client_errors = ClientErrorLog()
        # unfinished request heads and open sockets, against their limits (admission.py)
        self.held_heads = HeldHeads(held_heads_budget)
        self.sockets = SocketCount(open_file_limit() if open_files is None else open_files, shed=self._shed_idle)
        self._short_of_files = RateLimit(INTERVAL)  # one log line per kind per interval
        self._forced = False
        self._routes: dict[str, APIRoute] = {}
        self._retired: dict[str, APIRoute] = {}  # deleted APIs whose requests still run
        self._listeners: dict[int, _Listener] = {}
        self._in_flight = 0
        self._idle: asyncio.Event | None = None  # set when in-flight drops to 0 during close()
        self._closing = False
        self._background: set[asyncio.Task] = set()
        self._id_prefix = secrets.token_hex(4) + "-"
        self._ids = itertools.count(1)
        self.unrouted = 0  # requests answered 404 (no API at that path)

    # -- the daemon's interface -------------------------------------------------------

    async def configure(self, apis: Sequence[RouteConfig]) -> None:
        """Desired API set, one RouteConfig each.

        Opens a listener for every new port and closes ports no longer used; routes
        of APIs that stay keep their replicas and counters. Raises CortexdError
        (and changes nothing) when a port cannot be bound or two APIs clash.
        """
        desired = {api.name: api for api in apis}
        problems = endpoint_clashes([(api.name, api.endpoint, api.port) for api in desired.values()])
        if problems:
            raise CortexdError("\n".join(problems))
        ports = {api.port for api in desired.values()}

        opened: dict[int, _Listener] = {}
        try:
            for port in sorted(ports - self._listeners.keys()):
                opened[port] = await self._listen(port)
        except CortexdError:
            for listener in opened.values():
                await listener.stop(0)
            raise
        self._listeners.update(opened)

        for name, api in desired.items():
            route = self._routes.get(name)
            if route is None:
                route = self._routes[name] = APIRoute(name, api.endpoint, api.port, api.max_replica_concurrency)
            else:
                route.endpoint, route.port = api.endpoint, api.port
                route.max_replica_concurrency = api.max_replica_concurrency
            monitoring = api.monitoring
            if monitoring is None:
                route.set_monitoring(None, None)
            else:
                route.set_monitoring(monitoring.model_type, monitoring.key)
        self._retired = {n: r for n, r in self._retired.items() if r.in_flight and n not in desired}
        for name in [n for n in self._routes if n not in desired]:
            self._retire_api(self._routes.pop(name))

        for port, listener in self._listeners.items():
            served = [r for r in self._routes.values() if r.port == port]
            listener.table = port_table(served)
            listener.endpoints = sorted("/" + r.endpoint.strip("/") for r in served)
        for port in [p for p in self._listeners if p not in ports]:
            listener = self._listeners.pop(port)
            listener.server.close()  # no new connections from now on
            self._spawn(listener.stop(self.upstream_timeout))  # running requests finish

    def set_replicas(self, api: str, replicas: list[tuple[str, str, int]]) -> None:
        """The ready, routable replicas of `api`: (replica_id, host, port) each.

        Replicas left out get no new requests; their in-flight requests finish
        (draining). Replicas that stay keep their in-flight counts and connections.
        """
        route = self._routes.get(api)
        if route is None:
            return  # not configured (or deleted): nothing routes to it
        ejected = route.ejected  # out of rotation by passive health: they stay out
        current = {t.replica_id: t for t in route.replicas}
        current.update(ejected)
        targets = []
        for replica_id, host, port in replicas:
            target = current.pop(replica_id, None)
            if target is not None and (target.host, target.port) != (host, port):
                self._retire_replica(route, target)
                target = None
            if target is None:
                back = route.draining.get(replica_id)
                if back is not None and (back.host, back.port) == (host, port):
                    del route.draining[replica_id]  # routable again before it drained
                    back.removed = False
                    target = back
                else:
                    target = ReplicaTarget(replica_id, host, port,
                                           pool=UpstreamPool(host, port, sockets=self.sockets))
            targets.append(target)
        for target in current.values():
            self._retire_replica(route, target)
        route.replicas = [t for t in targets if ejected.get(t.replica_id) is not t]
        route.notify_changed()

    def set_state(self, api: str, *, starting: bool, error: str | None = None,
                  waiting_for: str | None = None) -> None:
        """While `starting`, requests without a ready replica wait; with `error` they get 503 at once.

        `error` is the daemon's detailed reason; clients get only its category (client_reason()).
        `waiting_for` (e.g. "a free GPU"): no replica is on its way and none can start until that
        comes, so requests without a ready replica get 503 at once, saying what it waits for.
        """
        route = self._routes.get(api)
        if route is None:
            return
        route.starting = starting
        route.error = None if error is None else client_reason(api, error)
        route.waiting_for = waiting_for
        route.notify_changed()

    def replica_in_flight(self, api: str, replica_id: str) -> int:
        """Requests in progress on a replica, including one removed but still draining."""
        route = self._routes.get(api) or self._retired.get(api)
        if route is None:
            return 0
        for target in route.replicas:
            if target.replica_id == replica_id:
                return target.in_flight
        target = route.draining.get(replica_id) or route.ejected.get(replica_id)
        return target.in_flight if target is not None else 0

    def api_in_flight(self, api: str) -> int:
        """Requests in progress for an API, including those waiting for a replica."""
        route = self._routes.get(api) or self._retired.get(api)
        return route.in_flight if route is not None else 0

    def route(self, api: str) -> APIRoute:
        try:
            return self._routes[api]
        except KeyError:
            raise UnknownAPI(f"the gateway serves no api named {api!r}") from None

    def routes(self) -> list[APIRoute]:
        """The configured APIs' routes, by name (metrics and monitoring read from them)."""
        return [self._routes[name] for name in sorted(self._routes)]

    @property
    def ports(self) -> list[int]:
        """The ports listened on."""
        return sorted(self._listeners)

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to `drain_timeout`), close pools.

        From the first moment every answer carries `Connection: close`, and a request that
        comes on a kept-alive connection gets 503 + `Connection: close` without reaching a
        replica: keep-alive clients cannot feed the drain, and none has a request cut.
        """
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        for listener in self._listeners.values():
            if listener.server is not None:
                listener.server.close()
        for route in self._routes.values():
            # requests waiting for a replica will not get one now
            route.error = "the gateway is shutting down"
            route.notify_changed()
        if self._in_flight:
            self._idle = self._idle or asyncio.Event()
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(drain_timeout):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("%d request(s) still in flight after %g s; closing anyway",
                            self._in_flight, drain_timeout)
        # a kept-alive client may have a request on the wire right now: closing its connection
        # would cut it, so connections get a moment to bring it and be answered (503, close)
        grace_end = min(deadline, loop.time() + CLOSE_GRACE)
        # polled: aiohttp has no event for "no connection left"
        while not self._forced and loop.time() < grace_end and any(  # noqa: ASYNC110
                listener.web_server is not None and listener.web_server.connections
                for listener in self._listeners.values()):
            await asyncio.sleep(0.02)
        listeners, self._listeners = list(self._listeners.values()), {}
        # a tiny positive timeout: aiohttp reads 0 as "no timeout" and would wait for every
        # request still running; past the drain deadline they are cancelled instead
        await asyncio.gather(*(listener.stop(0.01) for listener in listeners))
        for route in [*self._routes.values(), *self._retired.values()]:
            for target in [*route.replicas, *route.draining.values(), *route.ejected.values()]:
                target.pool.close()
                if target.readmit is not None:
                    target.readmit.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def force_close(self) -> None:
        """Stop waiting for in-flight requests (a second Ctrl-C): close() goes on at once."""
        self._forced = True
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.set()

    # -- listeners ------------------------------------------------------------------

    async def _listen(self, port: int) -> _Listener:
        listener = _Listener(port)
        listener.web_server = GatewayServer(
            functools.partial(self._serve, listener), self,
            access_log=None,  # the gateway keeps counters; a log line per request is too slow
            auto_decompress=False,  # forward bodies exactly as sent (Content-Encoding included)
            keepalive_timeout=CLIENT_KEEPALIVE,
            # the parser's limits: the request line, each header line and their number (the
            # whole head is capped by the connection, client_connection.py)
            max_line_size=REQUEST_LINE_LIMIT, max_field_size=HEADER_LINE_LIMIT, max_headers=MAX_HEADERS,
        )
        loop = asyncio.get_running_loop()
        try:
            listener.server = await loop.create_server(
                listener.web_server, self.host, port, reuse_address=True, backlog=1024)
        except OSError as e:
            raise CortexdError(self._bind_problem(port, e)) from e
        return listener

    def _bind_problem(self, port: int, e: OSError) -> str:
        if e.errno == errno.EADDRINUSE:
            return (f"port {port} is already in use on {self.host}; "
                    "set networking.local_port or stop the other program")
        if e.errno == errno.EACCES:
            return (f"no permission to listen on port {port} on {self.host}; "
                    "use a port above 1023 in networking.local_port")
        if e.errno == errno.EADDRNOTAVAIL:
            return f"address {self.host} does not belong to this machine; check --host"
        return f"cannot listen on {self.host}:{port} ({e.strerror or e}); check --host and networking.local_port"

    # -- what clients hold: sockets and unfinished heads (admission.py) ---------------------

    def _at_socket_cap(self, newcomer: ClientConnection) -> None:
        """A new connection took the gateway past its socket cap: idle ones go first, then those
        trickling a head in longest (a slow head must not lock new clients out), else it does."""
        self._shed_idle(exclude=newcomer)
        sockets = self.sockets
        if sockets.open > sockets.cap and self.held_heads.holders:
            closed = 0
            for conn in list(self.held_heads.holders):
                if sockets.open <= sockets.cap:
                    break
                if conn is not newcomer and not (conn._request_in_progress or conn._messages):
                    conn.shed()
                    closed += 1
            if closed:
                self._short_of("unfinished heads closed", f"closed {closed} connection(s) whose head had been "
                                                          "arriving longest, none being idle")
        if sockets.open > sockets.cap:
            self._short_of("connections refused", f"{sockets.open} sockets open and none idle")
            newcomer.refuse(503, f"the gateway is at its connection limit ({sockets.cap} connections under "
                                 f"an open-file limit of {sockets.limit}); try again shortly", retry_after=True)

    def _shed_idle(self, exclude: ClientConnection | None = None) -> int:
        """Close the connections idle longest (keep-alive, or opened and silent), a batch of
        them, to bring the sockets below the cap; how many were closed."""
        sockets = self.sockets
        want = sockets.open - sockets.cap + shed_batch(sockets.cap)
        if want <= 0:
            return 0
        idle = []
        for listener in self._listeners.values():
            if listener.web_server is not None:
                connections = cast("list[ClientConnection]", listener.web_server.connections)
                idle += [(conn.idle_since(), conn) for conn in connections if conn is not exclude and conn.idle()]
        shed = oldest_idle(idle, want)
        for conn in shed:
            conn.shed()
        if shed:
            self._short_of("idle connections closed", f"closed {len(shed)} idle keep-alive connection(s), "
                                                      "those idle longest")
        return len(shed)

    def _shed_held_heads(self) -> None:
        """Past the budget for unfinished heads: the connections that have held theirs longest give them up."""
        held = self.held_heads
        while held.over():
            held.longest_held().evict()

    def _short_of(self, kind: str, detail: str) -> None:
        """Log running short of descriptors: one line per kind per interval, with a count of the rest."""
        suppressed = self._short_of_files.admit(kind, monotonic())
        if suppressed is not None:
            sockets = self.sockets
            more = f" (and {suppressed} more like it since the last such line)" if suppressed else ""
            log.warning("gateway short of file descriptors: %s: %s; %d sockets open, cap %d below the open-file "
                        "limit %d (RLIMIT_NOFILE: EMFILE past it; the rest is kept for the control API, logs and "
                        "replicas)%s", kind, detail, sockets.open, sockets.cap, sockets.limit, more)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the request path -------------------------------------------------------------

    def _new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def _client_error(self, kind: str, detail: str) -> None:
        """Log a client's mistake: one line per kind per interval, with a count of those left out."""
        suppressed = self._client_errors.admit(kind, monotonic())
        if suppressed is not None:
            log.warning(ClientErrorLog.line(kind, detail, suppressed))

    async def _serve(self, listener: _Listener, request: BaseRequest) -> web.StreamResponse:
        rid = request.headers.get("X-Request-Id")
        if rid is None or not _WELL_FORMED_ID(rid):
            rid = f"{self._id_prefix}{next(self._ids):x}"
        path = request.raw_path
        query = ""
        q = path.find("?")
        if q >= 0:
            path, query = path[:q], path[q:]
        route = listener.table.get(path)
        if route is None:
            self.unrouted += 1
            resp = self._not_found(listener, path, rid)
            if self._closing:
                resp.force_close()
            return resp
        self._in_flight += 1
        status = 500
        resp = None
        counted = False
        started = monotonic()
        try:
            if self._closing:
                resp, status = self._error(503, "the gateway is shutting down", rid), 503
                return resp
            length = request.content_length
            if length is not None and length > self.max_body_size:
                resp, status = self._too_large(rid), 413
                return resp
            # the body first: a request takes a replica slot (in-flight, max_replica_concurrency,
            # autoscaling) only once it is here, unless it is too large to buffer
            body = None if length is None else b""
            streamed = False
            if request.body_exists:
                content = request.content
                if content.is_eof():  # the usual small request: its body came with its head
                    body = content.read_nowait(-1)
                    if length is None and len(body) > self.max_body_size:
                        resp, status = self._too_large(rid), 413
                        return resp
                else:  # it did not come with its head
                    answer, body, streamed = await self._late_body(request, length, rid)
                    if answer is not None:
                        resp, status = answer, answer.status
                        return resp
            route.in_flight += 1
            counted = True
            resp, status = await self._forward(request, route, query, rid, body, streamed)
            return resp
        finally:
            if counted:
                route.in_flight -= 1
            if self._closing and resp is not None:
                resp.force_close()
            now = monotonic()
            route.metrics.record(status, now - started, now)
            monitor = route.monitor
            if monitor is not None and 200 <= status < 300 and type(resp) is BufferedResponse \
                    and not resp.head_only:
                monitor.offer(resp.raw_body)  # parsed when read, not now
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def _late_body(self, request: BaseRequest, length: int | None,
                         rid: str) -> tuple[web.Response | None, bytes | None, bool]:
        """A body that did not come with its head: (answer, what is buffered, whether the rest streams).

        Says `100 Continue` to a client that waits for it. A body larger than the request
        buffer streams from the start; `answer` is set (408, 413, 400) when the body cannot be had.
        """
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length is not None and length > self.request_buffer_size:
            return None, b"", True
        answer, body, complete = await self._buffer_body(request, length, rid)
        return answer, body, not complete

    async def _buffer_body(self, request: BaseRequest, length: int | None,
                           rid: str) -> tuple[web.Response | None, bytes, bool]:
        """Read a body that did not come with its head: (answer, body, complete).

        At most request_buffer_size bytes (a chunked body can be longer: the rest streams),
        each read waiting at most client_body_timeout; `answer` is set (408, 413, 400) when
        the body cannot be had.
        """
        content = request.content
        chunks: list[bytes] = []
        size = 0
        try:
            while size < self.request_buffer_size:
                async with asyncio.timeout(self.client_body_timeout):
                    data = await content.readany()
                if not data:
                    return None, b"".join(chunks), True
                chunks.append(data)
                size += len(data)
                if size > self.max_body_size:
                    return self._too_large(rid), b"", False
        except TimeoutError:
            return self._body_timed_out(request, rid), b"", False
        except (OSError, RequestPayloadError, HttpProcessingError) as e:  # the client's body broke off
            return self._error(400, f"the request body could not be read: {shown(str(e), 100)}", rid), b"", False
        return None, b"".join(chunks), content.at_eof()

    async def _forward(self, request: BaseRequest, route: APIRoute, query: str, rid: str,
                       body: bytes | None, streamed: bool) -> tuple[web.StreamResponse, int]:
        replicas = route.replicas
        if replicas:
            i = pick_replica([t.in_flight for t in replicas], route.max_replica_concurrency, route.rr)
            if i is None:
                return self._at_limit(route, rid), 503
            route.rr += 1
            target = replicas[i]
        else:
            picked = await self._wait_for_replica(route, rid)
            if isinstance(picked, web.StreamResponse):
                return picked, picked.status
            target = picked

        # A request that provably never reached a predictor is retried once, elsewhere if
        # possible, on a fresh connection: one whose connection could not be opened, and one
        # whose connection closed or reset before the replica read it (UpstreamNotDelivered;
        # only with its body buffered, so it can be sent again). Never one that reached it.
        # (no coroutine besides _exchange's on the way: the loop turns again only to retry)
        target.in_flight += 1
        retry = not streamed
        try:
            try:
                conn = target.pool.take_idle() or await target.pool.connect()
            except UpstreamConnectError as first:
                self._note_failure(route, target, first)
                target = self._switch_target(route, target)
                retry = False
                try:
                    conn = await target.pool.connect()
                except UpstreamConnectError as second:
                    self._note_failure(route, target, second)
                    log.warning("api %r: %s; retried elsewhere", route.name, first)
                    return self._unreachable(route, target, second, rid)
            while True:
                try:
                    return await self._exchange(request, route, target, conn, query, rid, body, streamed)
                except _RetryElsewhere as undelivered:
                    if not retry:
                        return self._failure_answer(route, target, undelivered.error, rid)
                    retry = False
                    target = self._switch_target(route, target)
                    try:
                        conn = await target.pool.connect()
                    except UpstreamConnectError as second:
                        self._note_failure(route, target, second)
                        return self._unreachable(route, target, second, rid)
                except BaseException:
                    if conn.active:  # not handed back to the pool: its state is unknown
                        conn.close()
                    raise
        except UpstreamNoSocket as e:  # the gateway's own shortage: the replica is not to blame
            self._short_of("connections to replicas refused", str(e))
            return self._error(503, "the gateway is at its connection limit and cannot reach a replica now; "
                                    "try again shortly", rid, retry_after=True), 503
        finally:
            self._release_target(route, target)

    def _unreachable(self, route: APIRoute, target: ReplicaTarget, e: UpstreamConnectError,
                     rid: str) -> tuple[web.Response, int]:
        # the replica's address goes to the log only: a client is never told where replicas listen
        log.warning("api %r: replica %s is unreachable: %s", route.name, target.replica_id, e)
        return self._error(
            502, f"api {route.name!r}: replica {target.replica_id} is unreachable ({e.reason})", rid), 502

    def _switch_target(self, route: APIRoute, failed: ReplicaTarget) -> ReplicaTarget:
        """Give up `failed` for this request and take another replica (the same if none)."""
        self._release_target(route, failed)
        target = self._pick_other(route, failed)
        target.in_flight += 1
        return target

    async def _wait_for_replica(self, route: APIRoute, rid: str) -> ReplicaTarget | web.Response:
        """Wait (bounded by no_replica_wait) until the API has a ready replica with room."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.no_replica_wait
        while True:
            replicas = route.replicas
            if replicas:
                i = pick_replica([t.in_flight for t in replicas], route.max_replica_concurrency, route.rr)
                if i is None:
                    return self._at_limit(route, rid)
                route.rr += 1
                return replicas[i]
            if route.error is not None:
                return self._error(503, route.error, rid, retry_after=not self._closing)
            if route.waiting_for is not None:
                return self._error(503, f"api {route.name!r} is waiting for {route.waiting_for}: no replica can "
                                        f"start until then; see `cortexd get {route.name}`", rid, retry_after=True)
            remaining = deadline - loop.time()
            if remaining <= 0:
                if route.starting:
                    message = f"api {route.name!r} is starting: no replica is ready yet"
                else:
                    message = f"api {route.name!r} has no ready replica"
                return self._error(503, message, rid, retry_after=True)
            try:
                async with asyncio.timeout(remaining):
                    await route.changed_event().wait()
            except TimeoutError:
                pass

    def _pick_other(self, route: APIRoute, failed: ReplicaTarget) -> ReplicaTarget:
        others = [t for t in route.replicas if t is not failed]
        i = pick_replica([t.in_flight for t in others], route.max_replica_concurrency, route.rr)
        return others[i] if i is not None else failed

    def _release_target(self, route: APIRoute, target: ReplicaTarget) -> None:
        target.in_flight -= 1
        if target.removed and target.in_flight == 0:
            if route.draining.get(target.replica_id) is target:
                del route.draining[target.replica_id]
            target.pool.close()

    async def _exchange(self, request: BaseRequest, route: APIRoute, target: ReplicaTarget,
                        conn: UpstreamConnection, query: str, rid: str, request_body: bytes | None,
                        streamed: bool) -> tuple[web.StreamResponse, int]:
        """Send the request on `conn` and relay the response; never retried from here on.

        `request_body` is the whole body (None: the request has none) or, when `streamed`,
        what was read of it so far; the rest then streams from the client. The steps are
        relay.py's; the usual request awaits only the response head.
        """
        conn.begin(head_only=request.method == "HEAD")
        pool = target.pool  # the one `conn` came from (an ejected replica gets a new one)
        head = request_head(request, target.host, target.port, query, rid, request_body, streamed)
        try:
            if not streamed:
                send_whole_body(conn, head, request_body)
            else:
                await send_streamed_body(conn, request, head, request_body, upstream_timeout=self.upstream_timeout,
                                         body_timeout=self.client_body_timeout, max_body_size=self.max_body_size)
        except UpstreamError as e:
            return self._upstream_failed(route, target, conn, e, rid)
        except BodyTooLarge:
            conn.close()  # the replica sees an unfinished request and drops it
            return self._too_large(rid), 413
        except TimeoutError:  # before OSError: TimeoutError is one
            conn.close()
            return self._body_timed_out(request, rid), 408
        except (OSError, RequestPayloadError, HttpProcessingError) as e:  # the client's body broke off
            conn.close()
            return self._error(400, f"the request body could not be read: {shown(str(e), 100)}", rid), 400

        try:
            await conn.wait_head(self.upstream_timeout)
        except UpstreamError as e:
            return self._upstream_failed(route, target, conn, e, rid)
        if target.health.streak:  # it answered: its failure streak ends
            target.health = after_answer(target.health)
        status = conn.status
        headers, length = response_headers(conn.headers)
        if conn.complete:  # the usual answer: all of it came with its head
            body = conn.take_body()
            pool.release(conn)
            return BufferedResponse(status, headers, rid, body, conn.head_only, length), status
        return await self._relay_rest(request, route, target, pool, conn, status, headers, length, rid)

    async def _relay_rest(self, request: BaseRequest, route: APIRoute, target: ReplicaTarget,
                          pool: UpstreamPool, conn: UpstreamConnection, status: int, headers: list[tuple[bytes, bytes]],
                          length: bytes | None, rid: str) -> tuple[web.StreamResponse, int]:
        """Relay a response whose body is still coming: whole when small, else streamed."""
        if length is not None and int(length) <= BUFFER_LIMIT:
            try:
                body = await read_rest(conn, self.upstream_timeout)
            except UpstreamError as e:
                return self._upstream_failed(route, target, conn, e, rid)
            pool.release(conn)
            return BufferedResponse(status, headers, rid, body), status
        out = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        out.append(("X-Request-Id", rid))
        return await self._stream(request, route, target, conn, status, out, length)

    async def _stream(self, request: BaseRequest, route: APIRoute, target: ReplicaTarget,
                      conn: UpstreamConnection, status: int, headers: list[tuple[str, str]],
                      length: bytes | None) -> tuple[web.StreamResponse, int]:
        """Relay a chunked or large response piece by piece, as the replica sends it."""
        resp = web.StreamResponse(status=status, headers=headers)
        if length is not None:
            resp.content_length = int(length)
        try:
            await resp.prepare(request)
            while data := await conn.read_body(self.upstream_timeout):
                await resp.write(data)
        except UpstreamError as e:
            # the status line is out: the only honest signal left is an incomplete response
            log.warning("api %r: replica %s failed mid-response: %s", route.name, target.replica_id, e)
            conn.close()
            transport = request.transport
            if transport is not None:
                transport.abort()
            return resp, 502
        except ConnectionError:  # the client went away; the rest of the response has no reader
            conn.close()
            return resp, status
        target.pool.release(conn)
        return resp, status

    # -- answers the gateway gives itself -----------------------------------------------

    def _upstream_failed(self, route: APIRoute, target: ReplicaTarget, conn: UpstreamConnection,
                         e: UpstreamError, rid: str) -> tuple[web.Response, int]:
        """502 (or 504 for a timeout) for an exchange that failed before anything was relayed.

        Raises _RetryElsewhere instead when the replica provably never read the request
        (_forward decides whether it can be sent again). Either way the failure counts
        toward the replica's passive health.
        """
        conn.close()
        self._note_failure(route, target, e)
        if isinstance(e, UpstreamNotDelivered):
            raise _RetryElsewhere(e)
        return self._failure_answer(route, target, e, rid)

    def _failure_answer(self, route: APIRoute, target: ReplicaTarget, e: UpstreamError,
                        rid: str) -> tuple[web.Response, int]:
        if isinstance(e, UpstreamTimeout):
            status, hint = 504, " (the gateway's upstream timeout)"
        else:
            status, hint = 502, ""
        return self._error(status, f"api {route.name!r}: replica {target.replica_id}: {e}{hint}", rid), status

    # -- passive health: failure streaks eject a replica from rotation (cortexd.core.health) --

    def _note_failure(self, route: APIRoute, target: ReplicaTarget, e: UpstreamError) -> None:
        before = target.health
        others = sum(1 for t in route.replicas if t is not target)
        if isinstance(e, UpstreamTimeout):
            kind = TIMEOUT
        elif type(e) is UpstreamDisconnected:  # it had the request and closed without an answer
            kind = DROPPED
        else:  # could not connect, or provably never read the request
            kind = FAILURE
        after = after_failure(before, kind, monotonic(), self.health, others_in_rotation=others)
        target.health = after
        if target.removed:
            return  # already out of rotation (draining)
        if (after.unhealthy is not None and before.unhealthy is None) or \
                (after.ejected_until is not None and after.ejected_until != before.ejected_until):
            self._eject(route, target, e)

    def _eject(self, route: APIRoute, target: ReplicaTarget, e: UpstreamError) -> None:
        health = target.health
        route.replicas = [t for t in route.replicas if t is not target]
        route.ejected[target.replica_id] = target
        target.pool.close()  # its pooled connections are as suspect as the one that failed
        if target.readmit is not None:
            target.readmit.cancel()
            target.readmit = None
        if health.unhealthy is None and health.ejected_until is not None:
            delay = max(0.0, health.ejected_until - monotonic())
            target.readmit = asyncio.get_running_loop().call_later(delay, self._readmit, route, target)
        log.warning("api %r: replica %s out of rotation: %s (last: %s)",
                    route.name, target.replica_id, health.reason, e)
        route.notify_changed()
        listener = self.on_replica_health
        if listener is not None:
            listener(route.name, target.replica_id, health.reason,
                     replace=health.unhealthy is not None, until=health.ejected_until)

    def _readmit(self, route: APIRoute, target: ReplicaTarget) -> None:
        target.readmit = None
        if target.removed or route.ejected.get(target.replica_id) is not target:
            return
        del route.ejected[target.replica_id]
        target.health = readmitted(target.health)
        target.pool = UpstreamPool(target.host, target.port, sockets=self.sockets)
        route.replicas = [*route.replicas, target]
        log.info("api %r: replica %s back in rotation", route.name, target.replica_id)
        route.notify_changed()

    @staticmethod
    def _error(status: int, message: str, rid: str, *, retry_after: bool = False,
               extra: dict | None = None) -> web.Response:
        headers = {"X-Request-Id": rid}
        if retry_after:
            headers["Retry-After"] = "1"
        body = {"error": message, "request_id": rid}
        if extra:
            body.update(extra)
        return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                            headers=headers)

    def _not_found(self, listener: _Listener, path: str, rid: str) -> web.Response:
        endpoints = listener.endpoints
        served = ", ".join(endpoints) if endpoints else "none"
        return self._error(
            404, f"no api is served at {path} on port {listener.port}; endpoints here: {served}",
            rid, extra={"endpoints": endpoints})

    def _body_timed_out(self, request: BaseRequest, rid: str) -> web.Response:
        """408 and close: the client paused its body longer than client_body_timeout."""
        timeout = self.client_body_timeout
        self._client_error("request body timeout", f"from {request.remote}: no body bytes for {timeout:g} s")
        resp = self._error(408, f"the request body paused for more than {timeout:g} s (the gateway's "
                                "client body timeout)", rid)
        resp.force_close()
        request.protocol.close_after_answer()
        return resp

    def _too_large(self, rid: str) -> web.Response:
        resp = self._error(
            413, f"the request body is larger than the gateway's limit of {size_text(self.max_body_size)}; "
                 "send a smaller payload", rid)
        resp.force_close()  # the unread rest of the body: closing beats reading it to keep the connection
        return resp

    def _at_limit(self, route: APIRoute, rid: str) -> web.Response:
        n = len(route.replicas)
        return self._error(
            503, f"api {route.name!r} is at its concurrency limit (max_replica_concurrency="
                 f"{route.max_replica_concurrency} per replica, {n} replica{'s' if n != 1 else ''})",
            rid, retry_after=True)

    # -- route bookkeeping ----------------------------------------------------------------

    def _retire_replica(self, route: APIRoute, target: ReplicaTarget) -> None:
        target.removed = True
        if route.ejected.get(target.replica_id) is target:
            del route.ejected[target.replica_id]
        if target.readmit is not None:
            target.readmit.cancel()
            target.readmit = None
        if target.in_flight:
            route.draining[target.replica_id] = target
        else:
            target.pool.close()

    def _retire_api(self, route: APIRoute) -> None:
        for target in [*route.replicas, *route.ejected.values()]:
            self._retire_replica(route, target)
        route.replicas = []
        route.starting = False
        route.error = f"api {route.name!r} was deleted"
        route.notify_changed()
        if route.in_flight:
            self._retired[route.name] = route
