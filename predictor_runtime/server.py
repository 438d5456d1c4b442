"""The replica's HTTP server: one worker's request path, its lifecycle, and the entry point.

`main()` (run by `python -m predictor_runtime`) reads the runtime spec (the typed
contract of contract.py) and the replica's limits from the environment
(contract.ReplicaLimits), once, and either serves
in this process (processes_per_replica == 1) or hands over to supervisor.py,
which starts `processes_per_replica` workers (`--worker N --control-fd FD`,
entering `run_worker` below) sharing the port with SO_REUSEPORT.
What the supervisor shares with each worker (log setup, the bound socket,
stop signals, the drain deadline) lives in process_setup.py, so supervisor.py
never imports this module.

Readiness rule (the daemon relies on it): a worker binds its socket early but
only LISTENS after the predictor's __init__ finished in every worker, so "the
port accepts connections" means "ready", and GET /healthz answers 200.

`--unix-fd FD` (one process per replica only): a unix stream socket the daemon bound
(not listening) and passed down, served beside the port with the same rules. The
gateway reaches a process replica through it (cortexd/backends/replica_files.py's
gateway_socket: about 5 us less CPU per exchange on each side than loopback TCP); the
daemon's probes keep the port. It listens when the port does.

Request path (kept lean, it is benchmarked): the runtime's own HTTP/1.1 protocol
on httptools (http_server.py; aiohttp's server measured 1.27-1.30x bare aiohttp's CPU
per request, a protocol of this shape 0.50x: bench/README.md), one handler, no router
and no access log. POST to any path predicts;
GET /healthz is the health check; any other GET returns a usage message. A
sync `predict` runs on `threads_per_process` threads (predict_threads.py); an
`async def predict` is awaited on the loop. `post_predict` runs after the
response was written, in the same pool, and cannot affect the response.

The predictor's constructor runs on the request thread pool (as Cortex did), so
with threads_per_process: 1 `__init__` and `predict` share one thread and
thread-bound handles (sqlite3 connections, TF1 sessions) made in __init__ work.

Health: GET /healthz answers 503 with a reason while every predictor thread has
been running one call (predict or post_predict) for longer than the request
timeout (env CORTEXD_REQUEST_TIMEOUT, seconds, default 60, the gateway's
upstream timeout): a hung predictor then reads as unhealthy, and the daemon
replaces the replica.

Limits: request bodies are bounded after decoding (env CORTEXD_MAX_BODY_SIZE,
bytes, default 32 MiB; see payload.py). Bad client input answers 4xx with a
one-line reason; http_server.py's reports of malformed requests go through
log_limits.py (one line per kind per interval).

Legacy `kind: api` (predictor type "legacy") answers as Cortex's Flask server
did: predictions always JSON, an exception in predict -> 406
`prediction failed: ...`, CORS headers on every answer (OPTIONS too).

Shutdown (SIGTERM/SIGINT, or the supervisor gone): stop listening, let
in-flight requests finish for up to the drain deadline (ReplicaLimits.drain_seconds), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from aiohttp import web

from predictor_runtime import log_limits
from predictor_runtime.contract import ContractError, ReplicaLimits, RuntimeSpec, read_spec
from predictor_runtime.http_server import Answer, HTTPServer, Reply, Request
from predictor_runtime.inflight import PROMETHEUS_CONTENT_TYPE, InFlight, gauge_for
from predictor_runtime.mnt_project import PROJECT_DIR_ENV, failure_text
from predictor_runtime.payload import (
    ASGIAnswer,
    CortexFormData,
    NotSerializable,
    PayloadError,
    aiohttp_answer,
    encode_legacy_response,
    encode_response,
    json_answer,
    query_params,
    read_payload,
    request_headers,
)
from predictor_runtime.predict_threads import PredictThreads
from predictor_runtime.predictors import (
    LoadedPredictor,
    StartupError,
    check_supported,
    display_path,
    load_predictor,
)
from predictor_runtime.process_setup import (
    bind_socket,
    guard_process,
    ignore_stop_signals,
    setup_logging,
)

DEBUG_TRUNCATE = 1000
ERROR_TRUNCATE = 300
LEGACY_ALLOW = "GET, HEAD, OPTIONS, POST"

log = logging.getLogger("predictor_runtime")

_JSON = [("Content-Type", "application/json")]


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"


def stuck_reason(busy_since: list[float], threads: int, timeout: float, now: float) -> str | None:
    """Why the replica is unhealthy, or None: every predictor thread busy on one call past `timeout`."""
    stuck = sum(1 for started in busy_since if now - started > timeout)
    if stuck < threads:
        return None
    which = "the predictor thread has" if threads == 1 else f"all {threads} predictor threads have"
    return (f"{which} been running one request for more than {timeout:g}s (the request timeout); "
            "the predictor looks hung")


_FAILED = object()  # no prediction to hand to post_predict


def not_encoded(e: NotSerializable) -> Answer:
    log.error("error: %s", e)
    return json_answer(500, {"error": "the prediction could not be encoded as a response; see the API's logs"})


class PredictionHandler:
    """The request handler of one worker: predict, usage message, health."""

    def __init__(self, spec: RuntimeSpec, predictor: LoadedPredictor, pool: PredictThreads,
                 limits: ReplicaLimits):
        self.predictor = predictor
        self._predict = predictor.predict
        self._is_async = predictor.is_async
        self._wants_headers = predictor.wants_headers
        self._post_predict = predictor.post_predict
        self.pool = pool
        self.threads = spec.predictor.threads_per_process
        self.max_body_size = limits.max_body_size
        self.request_timeout = limits.request_timeout
        self.drain_seconds = limits.drain_seconds
        self.header_timeout = limits.header_timeout
        self.body_timeout = limits.body_timeout
        self.ready = False
        self.in_flight = InFlight()  # exported at GET /metrics (the pods' autoscaling signal)
        self.in_pool = 0  # sync predictions running in threads (exit cannot wait for them forever)
        self._post_tasks: set[asyncio.Future[Any]] = set()
        endpoint = spec.endpoint
        self._usage = {
            "api": spec.name,
            "endpoint": endpoint,
            "predictor_type": predictor.type,
            "usage": f"POST a request body to {endpoint} (JSON with Content-Type: application/json, "
                     "form data, or any bytes) to get a prediction",
            **predictor.metadata,
        }
        self._usage_body = json.dumps(self._usage).encode()
        self._describe = predictor.describe
        self._healthy = b'{"ok":true}'

    async def __call__(self, request: Request, reply: Reply) -> None:
        if request.method == "POST":
            self.in_flight.enter()
            try:
                await self.predict(request, reply)
            finally:
                self.in_flight.leave()
            return
        await self.answer_other(request).send(reply, self.extra_headers(request))

    def answer_other(self, request: Request) -> Answer:
        method = request.method
        if method == "GET" or method == "HEAD":
            if request.path == "/metrics":
                return Answer(200, [("Content-Type", PROMETHEUS_CONTENT_TYPE)], self.in_flight.exposition())
            if request.path == "/healthz":
                return self.health()
            return Answer(200, _JSON, self.usage_body())
        return Answer(405, [("Allow", "GET, POST"), *_JSON],
                      json.dumps({"error": f"method {method} not allowed; "
                                           "POST a request body to get a prediction"}).encode())

    def health(self) -> Answer:
        if not self.ready:
            return json_answer(503, {"ok": False, "reason": "shutting down"})
        busy = self.pool.busy
        if busy:
            reason = stuck_reason(list(busy.values()), self.threads, self.request_timeout,
                                  time.monotonic())
            if reason is not None:
                return json_answer(503, {"ok": False, "reason": reason})
        return Answer(200, _JSON, self._healthy)

    def usage_body(self) -> bytes:
        """The GET answer: usage, plus live model metadata (versions, signatures, caches) when there is any."""
        if self._describe is None:
            return self._usage_body
        try:
            live = self._describe()
        except Exception:
            log.exception("error: describing the models failed")
            return self._usage_body
        return json.dumps({**self._usage, **live}, default=str).encode()

    # hooks the legacy handler replaces
    encode = staticmethod(encode_response)

    def extra_headers(self, request: Request) -> list[tuple[str, str]] | None:
        """Headers every answer gets besides its own (None: none)."""
        return None

    def prediction_failed(self, e: Exception) -> Answer:
        log.error("error: predict raised an exception (the client got 500):\n%s",
                  failure_text())
        return json_answer(500, {"error": truncate(f"predict raised {type(e).__name__}: {e}",
                                                   ERROR_TRUNCATE)})

    async def predict(self, request: Request, reply: Reply) -> None:
        raw_query = request.raw_query
        query = query_params(raw_query)
        debug = bool(raw_query) and query.get("debug", "").lower() == "true"
        try:
            payload = await read_payload(request, self.max_body_size)
        except PayloadError as e:
            # a 413 closes the connection: the rest of the body is not read (or inflated)
            answer = Answer(e.status, _JSON, json.dumps({"error": str(e)}).encode(), close=e.status == 413)
            await answer.send(reply, self.extra_headers(request))
            return
        headers = request_headers(request) if self._wants_headers else None
        if debug:
            log.info("debug: payload: %s", truncate(safe_repr(payload), DEBUG_TRUNCATE))
        # `type() is`: FormData is a typing.Mapping, whose isinstance check is an ABC walk per request
        uploads = payload if type(payload) is CortexFormData and payload.has_files() else None
        try:
            answer, prediction = await self._predict_answer(payload, query, headers, debug)
            if type(answer) is ASGIAnswer:
                answer.request = request
            # post_predict must not delay or alter the answer; uploaded files stay open until the
            # answer (which may stream them) was sent
            try:
                await answer.send(reply, self.extra_headers(request))
            finally:
                if self._post_predict is not None and prediction is not _FAILED:
                    self._start_post_predict(prediction, payload, query, headers, uploads)
        finally:
            # uploaded files are closed once the answer is sent, whatever it was; post_predict
            # closes them itself when it is done with them
            if uploads is not None and not uploads.handed_to_post_predict:
                await uploads.close()

    async def _predict_answer(self, payload: Any, query: Any, headers: Any, debug: bool) -> tuple[Any, Any]:
        """(the answer, the prediction), or (an error answer, _FAILED)."""
        try:
            if self._is_async:
                prediction = await self._predict(payload, query, headers)
            else:
                self.in_pool += 1
                try:
                    prediction = await self.pool.run(self._predict, payload, query, headers)
                finally:
                    self.in_pool -= 1
        except web.HTTPException as e:  # a predictor may answer 4xx itself, aiohttp style
            try:
                return aiohttp_answer(e), _FAILED
            except NotSerializable as error:
                return not_encoded(error), _FAILED
        except Exception as e:
            return self.prediction_failed(e), _FAILED
        if debug:
            log.info("debug: prediction: %s", truncate(safe_repr(prediction), DEBUG_TRUNCATE))
        try:
            return self.encode(prediction), prediction
        except NotSerializable as e:
            return not_encoded(e), _FAILED

    def _start_post_predict(self, prediction: Any, payload: Any, query: Any, headers: Any,
                            uploads: CortexFormData | None) -> None:
        if uploads is not None:
            uploads.handed_to_post_predict = True
        # the task is kept in _post_tasks until done: the loop holds only a weak reference
        task = asyncio.ensure_future(self._run_post_predict(prediction, payload, query, headers, uploads))
        self._post_tasks.add(task)
        task.add_done_callback(self._post_tasks.discard)

    async def _run_post_predict(self, prediction: Any, payload: Any, query: Any, headers: Any,
                                uploads: CortexFormData | None) -> None:
        post = self._post_predict
        assert post is not None
        try:
            if self.predictor.post_predict_is_async:
                await post(prediction, payload, query, headers)
            else:
                await self.pool.run(post, prediction, payload, query, headers)
        except Exception:
            log.error("error: post_predict raised an exception (the response was already sent):\n%s",
                      failure_text())
        finally:
            if uploads is not None:
                await uploads.close()

    async def drain_post_predict(self, timeout: float) -> None:
        if self._post_tasks:
            await asyncio.wait(list(self._post_tasks), timeout=timeout)


class LegacyHandler(PredictionHandler):
    """`kind: api` answers as Cortex's Flask server (v0.8-0.12) did.

    Every prediction is JSON (a str becomes a JSON string), an exception in
    predict is a 406 `prediction failed: error: <path>: predict: <reason>:
    runtime exception` (Cortex's UserRuntimeException text), and every answer,
    an OPTIONS preflight included, carries `Access-Control-Allow-Origin: *` and
    `Access-Control-Allow-Headers` (the preflight's requested headers, else `*`).
    """

    encode = staticmethod(encode_legacy_response)

    def __init__(self, spec: RuntimeSpec, *args: Any, **kw: Any):
        super().__init__(spec, *args, **kw)
        self._where = display_path(spec.predictor.path, spec.project_dir)

    def answer_other(self, request: Request) -> Answer:
        if request.method == "OPTIONS":
            return Answer(200, [("Allow", LEGACY_ALLOW)])
        return super().answer_other(request)

    def extra_headers(self, request: Request) -> list[tuple[str, str]] | None:
        return [("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Headers", request.header("Access-Control-Request-Headers") or "*")]

    def prediction_failed(self, e: Exception) -> Answer:
        message = f"prediction failed: error: {self._where}: predict: {e}: runtime exception"
        log.error("error: %s (the client got 406):\n%s", message, failure_text())
        return Answer(406, [("Content-Type", "text/html; charset=utf-8")], message.encode())


# ---- sockets and serving ---------------------------------------------------------

def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_on_new_loop(coro: Any) -> None:
    """asyncio.run on uvloop when available: on the way out the Runner cancels the tasks left
    (post_predict past the drain deadline), closes async generators and shuts the default
    executor down (a predictor's asyncio.to_thread), then closes the loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(coro)


async def serve(sock: socket.socket, handler: PredictionHandler,
                control: socket.socket | None = None, unix: socket.socket | None = None) -> None:
    """Listen on `sock` (and on the unix socket `unix`, bound by the daemon) and serve until
    SIGTERM/SIGINT (or the supervisor closes `control`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if control is not None:
        control.setblocking(False)

        def on_control() -> None:
            try:
                data = control.recv(64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the supervisor is gone: do not outlive it
                loop.remove_reader(control.fileno())
                stop.set()
        loop.add_reader(control.fileno(), on_control)

    http = HTTPServer(handler, handler.header_timeout, handler.body_timeout)
    servers = [await loop.create_server(http.protocol, sock=sock, backlog=1024)]  # listen() happens here
    where = f" and on {unix.getsockname()}" if unix is not None else ""  # (the server owns the socket after)
    if unix is not None:
        servers.append(await loop.create_unix_server(http.protocol, sock=unix, backlog=1024))
    handler.ready = True
    host, port = sock.getsockname()[:2]
    log.info("serving on http://%s:%s%s", host, port, where)

    await stop.wait()
    ignore_stop_signals(loop)
    handler.ready = False
    drain = handler.drain_seconds
    log.info("stopping: no new connections; finishing in-flight requests (up to %gs)", drain)
    deadline = loop.time() + drain
    for server in servers:
        server.close()  # no new connections
    await http.shutdown(deadline)
    await handler.drain_post_predict(max(0.0, deadline - loop.time()))
    handler.pool.shutdown()


# ---- start-up -------------------------------------------------------------------

def prepare_process(spec: RuntimeSpec) -> None:
    """cwd = project_dir, so user code opens relative paths as it did under Cortex; and
    CORTEX_PROJECT_DIR names it, as Cortex's runtime did (there, /mnt/project), unless the
    project's `.env` sets it (Cortex sourced `.env` after setting it)."""
    if spec.project_dir:
        os.chdir(spec.project_dir)
        os.environ.setdefault(PROJECT_DIR_ENV, spec.project_dir)


def load_or_report(spec: RuntimeSpec) -> LoadedPredictor | None:
    """The constructed predictor, or None after logging why it could not start."""
    where = display_path(spec.predictor.path, spec.project_dir)
    try:
        return load_predictor(spec)
    except StartupError as e:
        log.error("error: %s", e)
    except (Exception, SystemExit):
        log.error("error: the predictor in %s failed to start; the API cannot serve until it is fixed:\n%s",
                  where, failure_text())
    return None


def run_worker(spec: RuntimeSpec, host: str, port: int, index: int,
               control: socket.socket | None, reuse_port: bool, unix: socket.socket | None = None) -> int:
    """Load the predictor, report to the supervisor (if any), then serve (on the unix socket
    `unix` too, when the daemon passed one). Returns the exit code."""
    setup_logging(f"worker {index}")
    guard_process()  # before the predictor's code runs: its env is its API's secrets
    log_limits.install(log)
    limits = ReplicaLimits.from_environ(os.environ, log.error)
    prepare_process(spec)
    try:
        sock = bind_socket(host, port, reuse_port)
    except OSError as e:
        log.error("error: cannot bind %s:%s: %s", host, port, e)
        return 1
    pool = PredictThreads(spec.predictor.threads_per_process)
    # __init__ on the request pool, as Cortex did: with one thread it shares predict's thread
    predictor = pool.call(load_or_report, spec)
    if predictor is None:
        pool.shutdown()
        return 1
    handler_class = LegacyHandler if predictor.type == "legacy" else PredictionHandler
    handler = handler_class(spec, predictor, pool, limits)
    handler.in_flight = gauge_for(spec.predictor.processes_per_replica, index)
    if control is not None:
        # readiness barrier: say "initialised", then wait for "go" (every worker initialised)
        try:
            control.sendall(b"R")
            go = control.recv(1)
        except OSError:
            go = b""
        if go != b"G":
            return 1  # the supervisor stopped (another worker failed, or SIGTERM)
    run_on_new_loop(serve(sock, handler, control, unix))
    if handler.in_pool:
        # a prediction thread outlived the drain deadline: do not wait for it at exit
        log.info("exiting with %d prediction(s) still running", handler.in_pool)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m predictor_runtime",
                                     description="Serve a Cortex predictor over HTTP.")
    parser.add_argument("--spec", required=True, help="runtime spec JSON (see predictor_runtime's docstring)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--control-fd", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--unix-fd", type=int, default=-1,
                        help="a bound unix stream socket to serve on too (one process per replica)")
    return parser.parse_args(argv)


def unix_socket(fd: int) -> socket.socket:
    """The unix stream socket the daemon passed as `fd` (bound, not listening).

    Not inherited by what the predictor execs (os.system, subprocess with close_fds=False):
    a child holding the gateway's listener after the replica died would take the gateway's
    connections and leave them unanswered (not refused, so not retried elsewhere at once)."""
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise OSError(f"descriptor {fd} is not a unix stream socket")
    try:
        sock.getpeername()
    except OSError:
        pass  # not connected: as it should be
    else:
        sock.detach()
        raise OSError(f"descriptor {fd} is a connected socket, not one to listen on")
    if not sock.getsockname():
        sock.detach()
        raise OSError(f"descriptor {fd} is not bound to a path")
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    try:
        spec = read_spec(args.spec)
    except (OSError, ContractError) as e:
        print(f"[runtime] error: cannot read the runtime spec {args.spec}: {e}", file=sys.stderr)
        return 1
    try:
        check_supported(spec.predictor.type)
    except StartupError as e:
        print(f"[runtime] error: {e}", file=sys.stderr)
        return 1
    if args.worker:
        control = socket.socket(fileno=args.control_fd) if args.control_fd >= 0 else None
        return run_worker(spec, args.host, args.port, args.worker, control, reuse_port=True)
    if spec.predictor.processes_per_replica == 1:
        unix = None
        if args.unix_fd >= 0:
            try:
                unix = unix_socket(args.unix_fd)
            except OSError as e:
                print(f"[runtime] error: --unix-fd: {e}", file=sys.stderr)
                return 1
        return run_worker(spec, args.host, args.port, 1, None, reuse_port=False, unix=unix)
    if args.unix_fd >= 0:
        print("[runtime] error: --unix-fd serves one process per replica only "
              f"(predictor.processes_per_replica is {spec.predictor.processes_per_replica})", file=sys.stderr)
        return 1
    from predictor_runtime.supervisor import supervise
    return supervise(args.spec, spec, args.host, args.port)
