"""The control API: JSON over HTTP on a unix socket (mode 0600) for the CLI and the live view.

    GET    /status                 the status snapshot (one model for get, status, -o json)
    GET    /metrics                Prometheus text format (also on 127.0.0.1:metrics_port)
    GET    /apis/{name}            one API's status and what each replica serves (its models), or
                                   one traffic splitter's status (its apis, weights, counters), or
                                   one BatchAPI's jobs
    GET    /apis/{name}/logs       replica output; ?tail=N&follow=1&since=EPOCH streams new lines;
                                   ?previous=1: the daemon's previous run's; ?job=ID: a BatchAPI
                                   job's workers' (its newest job's without it)
    POST   /deploy                 {"paths": [...], "cpu_only": false, "nearest_pins": false}: add or
                                   update those projects' APIs (others stay); cpu_only, nearest_pins:
                                   `deploy --cpu-only`, `deploy --nearest-pins` (issue 17)
    DELETE /apis/{name}            remove one API (until the next deploy)
    GET    /apis/{name}/jobs/{job} a BatchAPI's job: its status (DELETE: stop it first)
    POST   /shutdown               graceful shutdown

Errors are JSON {"error": "..."} with 4xx/5xx: a CortexdError a handler raises is
answered with the status cortexd/errors.py's one table (CONTROL_API_ANSWERS) gives
its class, which cortexd/control_client.py turns back into that class for the
CLI's messages and exit codes. The handlers only translate HTTP <-> Daemon method calls.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from cortexd.console.guard import guard_middleware, machine_names
from cortexd.console.server import Console
from cortexd.daemon.process_guard import descends_from
from cortexd.daemon.prometheus import MetricsCollector, build_registry, exposition
from cortexd.daemon.seams import ControlledDaemon
from cortexd.errors import ConfigError, CortexdError, UnknownAPI, http_status
from cortexd.settings import OPTIONS, check_socket_path


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def peer_credentials(transport) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a unix-socket connection (SO_PEERCRED,
    Linux), None elsewhere."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return None
    return pid, uid


def replica_peer_refusal(daemon: ControlledDaemon, transport) -> str | None:
    """Why this connection is refused, when it comes from a replica's process (predictor code
    must not drive the daemon: docs/architecture.md, "What a replica may reach"), else None.

    In the real daemon (a child subreaper: process_guard.py) every process it started,
    their children and their orphans descend from it: replicas, pip and dependencies.sh,
    the config loader. None of them is served; a CLI never descends from the daemon."""
    creds = peer_credentials(transport)
    if creds is None:
        return None
    guarded = daemon.guarded_pid
    if guarded and creds[0] != guarded and descends_from(creds[0], guarded):
        return (f"the control API does not serve replicas or anything else cortexd started: the "
                f"connecting process (pid {creds[0]}, uid {creds[1]}) descends from the daemon "
                f"(pid {guarded}); predictor code cannot drive cortexd")
    replica = daemon.replica_of_peer(*creds)
    if replica is None:
        return None
    return (f"the control API does not serve replicas: the connecting process (pid {creds[0]}, "
            f"uid {creds[1]}) belongs to replica {replica}; predictor code cannot drive cortexd")


def _refusing_replicas(daemon: ControlledDaemon) -> Middleware:
    @web.middleware
    async def refuse_replicas(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = replica_peer_refusal(daemon, request.transport)
        if refusal is not None:
            return _error(403, refusal)
        return await handler(request)

    return refuse_replicas


@web.middleware
async def _answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A CortexdError a handler raises is answered with its status (errors.CONTROL_API_ANSWERS);
    a ConfigError lists its problems too."""
    try:
        return await handler(request)
    except CortexdError as e:
        extra = {"problems": [str(p) for p in e.problems]} if isinstance(e, ConfigError) else {}
        return _error(http_status(e), str(e), **extra)


# the options `cortexd deploy` takes too, sent by name in POST /deploy's body
DEPLOY_OPTIONS = tuple(name for name, option in OPTIONS.items() if option.deploy)


class _Routes:
    """The handlers: each reads its arguments, makes one ControlledDaemon call, answers JSON."""

    def __init__(self, daemon: ControlledDaemon):
        self.daemon = daemon

    async def status(self, request: web.Request) -> web.Response:
        await self.daemon.counted()
        return web.json_response(self.daemon.status().to_json())

    async def api_detail(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self.daemon.counted()
        status = self.daemon.status()
        api = status.api(name)
        if api is None:
            splitter = status.splitter(name)
            if splitter is not None:
                return web.json_response(splitter.to_json())
            batch = await self.daemon.batch_api(name)
            if batch is not None:
                return web.json_response(batch)
            names = ", ".join(a.name for a in status.apis) or "none"
            splitters = ", ".join(s.name for s in status.splitters)
            raise UnknownAPI(f"no api named {name!r} (apis: {names}"
                             + (f"; traffic splitters: {splitters})" if splitters else ")"))
        return web.json_response({**api.to_json(), "models": await self.daemon.replica_models(name)})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        query = request.query
        previous = query.get("previous") in ("1", "true")  # the previous run's: they no longer grow
        follow = query.get("follow") in ("1", "true") and not previous
        tail, since = query.get("tail"), query.get("since")
        try:
            tail_n = int(tail) if tail else None
            since_t = float(since) if since else None
        except ValueError:
            return _error(400, f"tail must be an integer and since epoch seconds, got {tail!r}, {since!r}")
        sources = self.daemon.log_sources(name, previous=previous, job=query.get("job"))
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        # since: what was written after it (LogClock), across rotations; then new lines
        async for line in self.daemon.stream_logs(name, sources, tail_n, follow, since=since_t):
            await resp.write(line.encode("utf-8", "replace") + b"\n")
        await resp.write_eof()
        return resp

    async def deploy(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            paths = body["paths"]
            # the options `cortexd deploy` takes too (settings.OPTIONS, deploy=True), by name
            modes = {name: body.get(name, False) for name in DEPLOY_OPTIONS}
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, 'expected a JSON body {"paths": [...]}')
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            return _error(400, 'expected a JSON body {"paths": [...]} with at least one path')
        for name, value in modes.items():
            if not isinstance(value, bool):
                return _error(400, f'"{name}" must be true or false, got {value!r}')
        result = await self.daemon.deploy(paths, **modes)
        # created / updated / removed / unchanged / left_alone api names, and the notices
        return web.json_response({"ok": True, **result})

    async def delete(self, request: web.Request) -> web.Response:
        await self.daemon.delete_api(request.match_info["name"])
        return web.json_response({"ok": True})

    async def job(self, request: web.Request) -> web.Response:
        name, job_id = request.match_info["name"], request.match_info["job"]
        answer = await self.daemon.batch_api(name, job_id, stop=request.method == "DELETE")
        if answer is None:
            raise UnknownAPI(f"no batch api named {name!r}")
        return web.json_response(answer)

    async def shutdown(self, request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_soon(self.daemon.request_shutdown)
        return web.json_response({"ok": True})


def build_app(daemon: ControlledDaemon) -> web.Application:
    """The control API's routes (the module docstring lists them)."""
    routes = _Routes(daemon)
    app = web.Application(middlewares=[_refusing_replicas(daemon), _answer_errors])
    app.router.add_get("/status", routes.status)
    app.router.add_get("/metrics", metrics_handler(daemon))
    app.router.add_get("/apis/{name}", routes.api_detail)
    app.router.add_get("/apis/{name}/logs", routes.logs)
    app.router.add_post("/deploy", routes.deploy)
    app.router.add_delete("/apis/{name}", routes.delete)
    app.router.add_get("/apis/{name}/jobs/{job}", routes.job)
    app.router.add_delete("/apis/{name}/jobs/{job}", routes.job)
    app.router.add_post("/shutdown", routes.shutdown)
    return app


async def serve(daemon: ControlledDaemon, socket_path: str) -> web.AppRunner:
    check_socket_path(socket_path)  # SocketPathTooLong names the path, not "AF_UNIX path too long"
    app = build_app(daemon)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    if os.path.exists(socket_path):  # noqa: ASYNC240 - once, at start
        os.unlink(socket_path)  # stale: the caller checked that no daemon answers on it
    old = os.umask(0o177)  # the socket is created 0600: only this user controls the daemon
    try:
        site = web.UnixSite(runner, socket_path)
        await site.start()
    finally:
        os.umask(old)
    os.chmod(socket_path, 0o600)
    return runner


def metrics_handler(daemon: ControlledDaemon):
    """GET /metrics: the daemon's Prometheus metrics, from a private CollectorRegistry."""
    registry = None

    async def metrics(request: web.Request) -> web.Response:
        nonlocal registry
        if registry is None:
            registry = build_registry(MetricsCollector(daemon.status, daemon.route_metrics,
                                                       daemon.unrouted_requests, daemon.split_metrics))
        await daemon.counted()
        body, content_type = exposition(registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return metrics


async def serve_metrics(daemon: ControlledDaemon, port: int, host: str = "127.0.0.1",
                        console: Console | None = None) -> web.AppRunner | None:
    """The admin HTTP port: GET /metrics, and the web console (cortexd/console/) when given one,
    on `host` (the gateway's: 127.0.0.1 unless --host). None when disabled or taken.

    A taken port is not fatal (another daemon, a Prometheus exporter): the metrics
    stay available on the control socket, and an event says so.
    """
    if not port:
        return None
    # a try-it body may be as large as an API takes (the gateway's limit is checked there)
    app = web.Application(middlewares=[guard_middleware(machine_names())], client_max_size=64 * 2**20)
    app.router.add_get("/metrics", metrics_handler(daemon))
    if console is not None:
        console.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    bind = "127.0.0.1" if host in ("", "127.0.0.1") else host
    try:
        await web.TCPSite(runner, bind, port).start()
    except OSError as e:
        await runner.cleanup()
        why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
        daemon.events.add(
            f"metrics port {bind}:{port} {why}; Prometheus metrics stay available at /metrics "
            "on the control socket, and the web console is off (choose another port with --metrics-port)",
            level="warning")
        return None
    return runner
