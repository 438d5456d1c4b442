"""The gateway: listens on every local_port and proxies each request to a ready replica.

Its rules: docs/architecture.md, "A request, end to end" and "The gateway's hot path".

    client --HTTP--> asyncio server (one per local_port)
                       | one ClientConnection per client   (client_connection.py: httptools framing,
                       |                                    client_request.py, answer_writer.py,
                       |                                    connections.py)
                       | path -> APIRoute                   (routes.Listener's port table)
                       | body, replica, exchange, answer    (request_path.py, relay.py)
                       v
                     UpstreamPool of the replica            (upstream.py: raw bytes out, httptools in)
                       v
                     predictor runtime (python -m predictor_runtime) on 127.0.0.1:PORT

The daemon (cortexd/daemon) drives it: `configure()` with the desired APIs, traffic
splitters and ports, `set_replicas()` with each API's ready replicas, `set_state()` while an API
is starting, waits or is in error (the kind of its failure: a client is told the
kind, never the daemon's detail), and reads the in-flight counts for autoscaling,
draining and status. This class is that interface and the gateway's lifecycle; the
parts live beside it: the book of routes and replicas (route_book.py), the request
path (request_path.py), passive health (passive_health.py), the connections'
shared budgets (connections.py) and the answers it makes itself (answers.py).

Why a protocol of its own on httptools and not aiohttp's server: aiohttp made a
request object, a stream reader, a stream writer and a task per request, and its
server side was most of the gateway's CPU per request (issue 20); the route table is a
dict built on configure. Why not aiohttp.ClientSession upstream: measured at 0.34x of
direct throughput (see upstream.py).

Clients are not trusted to be quick, well-formed or few (nginx is the model): request
heads and bodies are bounded in time and size (client_connection.py,
request_path.py), and the sockets stay below the open-file limit with room kept for
the control API (admission.py): at the cap idle keep-alive connections are closed
first, and a new connection is refused (503) only when none is idle. close() drains
with `Connection: close`, so kept-alive clients are told, never cut.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from cortexd.core.api_status import Failure
from cortexd.core.health import HealthPolicy
from cortexd.errors import CortexdError
from cortexd.gateway.admission import HELD_HEADS_BUDGET, HeldHeads, SocketCount
from cortexd.gateway.client_connection import ClientConnection
from cortexd.gateway.connections import ClientConnections
from cortexd.gateway.passive_health import HealthListener, PassiveHealth
from cortexd.gateway.request_path import CLIENT_BODY_TIMEOUT, REQUEST_BUFFER_LIMIT, RequestPath
from cortexd.gateway.route_book import RouteBook
from cortexd.gateway.routes import (
    APIRoute,
    JobRoute,
    Listener,
    ReplicaAddress,
    Replicas,
    RouteConfig,
    SplitConfig,
    SplitRoute,
    endpoint_clashes,
)
from cortexd.gateway.upstream import UpstreamPool

if TYPE_CHECKING:
    from cortexd.gateway.shared_counts import WorkerCounts

log = logging.getLogger(__name__)

CLIENT_KEEPALIVE = 75.0  # seconds an idle client connection stays open (nginx's default)
CLOSE_GRACE = 0.5  # seconds kept-alive connections get, at close(), to be told to close
# nginx's client_header_timeout: the whole request head must arrive within it
CLIENT_HEADER_TIMEOUT = 60.0
# nginx's send_timeout: a client that takes nothing of its answer for this long is cut off
CLIENT_SEND_TIMEOUT = 60.0


class Gateway:
    """Listens on every configured local_port and proxies requests to ready replicas."""

    def __init__(self, host: str = "127.0.0.1", *, max_body_size: int = 32 * 2**20,
                 no_replica_wait: float = 30.0, upstream_timeout: float = 60.0,
                 client_header_timeout: float = CLIENT_HEADER_TIMEOUT,
                 client_body_timeout: float = CLIENT_BODY_TIMEOUT,
                 request_buffer_size: int = REQUEST_BUFFER_LIMIT,
                 health: HealthPolicy | None = None, held_heads_budget: int = HELD_HEADS_BUDGET,
                 open_files: int | None = None,
                 client_send_timeout: float = CLIENT_SEND_TIMEOUT, counts: WorkerCounts | None = None):
        """`open_files`: the open-file limit the gateway's sockets stay below (default: this
        process's soft RLIMIT_NOFILE, read now; the daemon raised it at start). `counts`: one of
        several gateway processes (workers.py), its in-flight counts in the table they share
        (shared_counts.py)."""
        self.host = host
        # a gateway worker: it listens on nothing; the daemon hands its connections over (adopt)
        self.adopting = False
        self.upstream_timeout = upstream_timeout
        self._listeners: dict[int, Listener] = {}
        # what client connections share: unfinished heads and sockets against their limits
        self.clients = ClientConnections(client_header_timeout, held_heads_budget, open_files,
                                         connections=self._connections, send_timeout=client_send_timeout)
        def new_pool(address: ReplicaAddress) -> UpstreamPool:
            return UpstreamPool(address.host, address.port, socket=address.socket, sockets=self.clients.sockets)
        self._health = PassiveHealth(health or HealthPolicy(), new_pool)  # cortexd.core.health
        self._book = RouteBook(new_pool, counts)
        self._configured: tuple[list[RouteConfig], list[SplitConfig]] = ([], [])
        self._path = RequestPath(self.clients, self._health, max_body_size=max_body_size,
                                 no_replica_wait=no_replica_wait, upstream_timeout=upstream_timeout,
                                 client_body_timeout=client_body_timeout, request_buffer_size=request_buffer_size)
        self._forced = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def held_heads(self) -> HeldHeads:
        """Bytes of unfinished request heads, per connection and in all (admission.py)."""
        return self.clients.held_heads

    @property
    def sockets(self) -> SocketCount:
        """The gateway's open sockets (clients and replicas) against its cap (admission.py)."""
        return self.clients.sockets

    @property
    def on_replica_health(self) -> HealthListener | None:
        """Called (api, replica id, reason, replace=, until=) when a replica leaves rotation: the
        reconciler reports it, and replaces it when `replace` (hung, not just ejected until the
        monotonic time `until`)."""
        return self._health.listener

    @on_replica_health.setter
    def on_replica_health(self, listener: HealthListener | None) -> None:
        self._health.listener = listener

    @property
    def unrouted(self) -> int:
        """Requests answered 404 (no API at that path)."""
        return self._path.unrouted

    # -- the daemon's interface -------------------------------------------------------

    async def configure(self, apis: Sequence[RouteConfig], splitters: Sequence[SplitConfig] = (),
                        jobs: Sequence[JobRoute] | None = None) -> None:
        """Desired API set, one RouteConfig each, traffic splitters, one SplitConfig each, and
        BatchAPI endpoints, one JobRoute each (None: those served now, see set_jobs).

        Opens a listener for every new port and closes ports no longer used; routes
        of APIs that stay keep their replicas and counters, splitters that stay their
        counters (a weight change applies from the next request). Raises CortexdError
        (and changes nothing) when a port cannot be bound or two routes clash.
        """
        desired = {api.name: api for api in apis}
        splits = {s.name: s for s in splitters}
        job_routes = dict(self._book.jobs) if jobs is None else {j.name: j for j in jobs}
        served = [(r.name, r.endpoint, r.port) for r in desired.values()]
        served += [(s.name, s.endpoint, s.port) for s in splits.values()]
        served += [(j.name, j.endpoint, j.port) for j in job_routes.values()]
        problems = endpoint_clashes(served)
        if problems:
            raise CortexdError("\n".join(problems))
        ports = {port for _, _, port in served}

        opened: dict[int, Listener] = {}
        try:
            for port in sorted(ports - self._listeners.keys()):
                opened[port] = await self._listen(port)
        except CortexdError:
            for listener in opened.values():
                await listener.stop(0)
            raise
        self._listeners.update(opened)
        self._book.update(desired, splits)
        self._book.jobs = job_routes
        self._configured = (list(apis), list(splitters))
        for port, listener in self._listeners.items():
            listener.serve(self._book.on_port(port))
        for port in [p for p in self._listeners if p not in ports]:
            listener = self._listeners.pop(port)
            listener.close()  # no new connections from now on
            self._spawn(listener.stop(self.upstream_timeout))  # running requests finish

    async def set_jobs(self, jobs: Sequence[JobRoute]) -> None:
        """Serve `jobs` (the BatchAPIs' endpoints) beside the APIs and splitters configured now."""
        await self.configure(*self._configured, jobs=jobs)

    def set_replicas(self, api: str, replicas: Replicas) -> None:
        """The ready, routable replicas of `api`: a ReplicaAddress (replica_id, host, port, and the
        unix socket it serves the gateway on, if any) or (replica_id, host, port) each.

        Replicas left out get no new requests; their in-flight requests finish
        (draining). Replicas that stay keep their in-flight counts and connections.
        """
        self._book.set_replicas(api, replicas)

    def set_state(self, api: str, *, starting: bool, failure: Failure | None = None,
                  waiting_for: str | None = None) -> None:
        """While `starting`, requests without a ready replica wait; with `failure` they get 503 at once.

        `failure` is the kind of the API's failure: clients are told what it means
        (answers.client_reason), never the daemon's detail, which the gateway never gets.
        `waiting_for` (e.g. "a free GPU"): no replica is on its way and none can start until that
        comes, so requests without a ready replica get 503 at once, saying what it waits for.
        """
        self._book.set_state(api, starting=starting, failure=failure, waiting_for=waiting_for)

    def replica_in_flight(self, api: str, replica_id: str) -> int:
        """Requests in progress on a replica, including one removed but still draining."""
        route = self._book.find(api)
        if route is None:
            return 0
        for routable in route.replicas:
            if routable.replica_id == replica_id:
                return routable.in_flight
        target = route.draining.get(replica_id) or route.ejected.get(replica_id)
        return target.in_flight if target is not None else 0

    def api_in_flight(self, api: str) -> int:
        """Requests in progress for an API, including those waiting for a replica."""
        route = self._book.find(api)
        return route.in_flight if route is not None else 0

    def route(self, api: str) -> APIRoute:
        """The configured route of `api` (its counters); UnknownAPI if there is none."""
        return self._book.route(api)

    def routes(self) -> list[APIRoute]:
        """The configured APIs' routes, by name (metrics and monitoring read from them)."""
        routes = self._book.routes
        return [routes[name] for name in sorted(routes)]

    def splits(self) -> list[SplitRoute]:
        """The traffic splitters' routes, by name (their per-target counters)."""
        splits = self._book.splits
        return [splits[name] for name in sorted(splits)]

    async def counted(self) -> None:
        """Every request this gateway answered is in its counters (GatewayWorkers waits for its
        workers' reports)."""

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
        path = self._path
        path.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        for listener in self._listeners.values():
            listener.close()
        self._book.refuse_all("the gateway is shutting down")  # waiting requests get no replica now
        if not await path.drained(drain_timeout):
            log.warning("%d request(s) still in flight after %g s; closing anyway", path.in_flight, drain_timeout)
        await path.shadows.close()  # copies to shadow apis are not waited for
        # a kept-alive client may have a request on the wire right now: closing its connection
        # would cut it, so connections get a moment to bring it and be answered (503, close)
        grace_end = min(deadline, loop.time() + CLOSE_GRACE)
        # polled: nothing says "no connection left"
        while not self._forced and loop.time() < grace_end and any(  # noqa: ASYNC110
                listener.connections for listener in self._listeners.values()):
            await asyncio.sleep(0.02)
        listeners, self._listeners = list(self._listeners.values()), {}
        # past the drain deadline, requests still running are cancelled
        await asyncio.gather(*(listener.stop(0.01) for listener in listeners))
        for target in self._book.targets():
            target.pool.close()
            if target.readmit is not None:
                target.readmit.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def force_close(self) -> None:
        """Stop waiting for in-flight requests (a second Ctrl-C): close() goes on at once."""
        self._forced = True
        self._path.release()

    # -- listeners ------------------------------------------------------------------

    async def _listen(self, port: int) -> Listener:
        listener = Listener(port)
        if self.adopting:  # a gateway worker: its connections come from the daemon (adopt)
            return listener
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(self._factory(listener), self.host, port, reuse_address=True,
                                              backlog=1024)
        except OSError as e:
            raise CortexdError(self._bind_problem(port, e)) from e
        listener.servers = [server]
        return listener

    def _factory(self, listener: Listener) -> Callable[[], ClientConnection]:
        # no access log (the gateway keeps counters; a line per request is too slow); bodies are
        # forwarded exactly as sent, Content-Encoding included
        return functools.partial(ClientConnection, listener.connections, self.clients,
                                 functools.partial(self._path.serve, listener), CLIENT_KEEPALIVE,
                                 functools.partial(self._path.start, listener))

    def adopt(self, port: int, conn: socket.socket) -> None:
        """Serve a client connection accepted elsewhere on `port` (gateway workers: handoff.py)."""
        listener = self._listeners.get(port)
        if listener is None or self._path.closing:
            conn.close()  # the port closed meanwhile: as if it had been refused
            return
        loop = asyncio.get_running_loop()
        self._spawn(self._adopted(loop.connect_accepted_socket(self._factory(listener), conn), conn))

    async def _adopted(self, connecting: Awaitable[Any], conn: socket.socket) -> None:
        try:
            await connecting
        except OSError:  # the client went before it could be served
            conn.close()

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

    def _connections(self) -> Iterator[ClientConnection]:
        """Every client connection of every listener, now (ClientConnections sheds idle ones)."""
        for listener in self._listeners.values():
            yield from listener.connections

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
