"""A gateway worker process: one more gateway on the same ports, fed by the daemon over a pipe.

    python -m cortexd.gateway.worker PIPE_FD CHANNEL_FD TABLE_FD WORKER WORKERS SLOTS

Started by the daemon's GatewayWorkers (workers.py) when `gateway_workers` > 1. It runs a Gateway
(proxy.py) that listens on nothing: the daemon accepts every client connection and hands this
worker its share on CHANNEL_FD (handoff.py). It applies what the daemon sends on the pipe
(worker_wire.py): the routes (`configure`), each API's replicas and state, with the slot of each
in the shared count table (shared_counts.py, TABLE_FD). It sends back, on the pipe:

- `ack` of each change applied (the daemon drains a removed replica only once every worker has
  stopped routing to it), `error` when a port cannot be bound here;
- `health`: a replica this worker took out of rotation (passive health), which the daemon reports
  and replaces as it does its own gateway's;
- `job`: a BatchAPI's job request, which the daemon's job runner answers (`job_reply`);
- `report`, every REPORT_S and when the daemon asks (`report_now`: it is about to read them): the
  request metrics, prediction monitoring and splitter counters of the routes that served requests
  since the last one, which the daemon keeps and adds to its own for status, the console and
  /metrics.

- `log`: what the worker logs (warnings and errors), which the daemon writes to its own log, so
  that it follows daemon.log's rotation (the stderr the worker was started with points into the
  daemon.log of that moment, and is used only once the pipe is gone).

The end of the pipe (the daemon is gone), `close` or SIGTERM drains the worker's requests and ends
it. It runs in a session of its own (a terminal's Ctrl-C reaches the daemon, which closes it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from cortexd.errors import CortexdError
from cortexd.gateway.handoff import receive_connections
from cortexd.gateway.proxy import Gateway
from cortexd.gateway.routes import JobRoute
from cortexd.gateway.shared_counts import CountTable, WorkerCounts
from cortexd.gateway.worker_wire import frame, read_message
from predictor_runtime.process_setup import libc_prctl

log = logging.getLogger("cortexd.gateway.worker")

REPORT_S = 0.5  # seconds between two reports of the worker's counters


class PipeLog(logging.Handler):
    """The worker's log records, sent to the daemon's log over the pipe (stderr once it is closed)."""

    def __init__(self, worker: Worker, fallback: logging.Handler):
        super().__init__()
        self.worker = worker
        self.fallback = fallback
        self._sending = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._sending or self.worker.writer.is_closing():  # a record logged while one is sent: stderr
            self.fallback.handle(record)
            return
        self._sending = True
        try:
            self.worker.send("log", record.levelno, self.format(record))
        except Exception:
            self.handleError(record)
        finally:
            self._sending = False


class Worker:
    """The worker's side of the pipe: applies the daemon's messages to its gateway."""

    def __init__(self, writer: asyncio.StreamWriter, counts: WorkerCounts):
        self.writer = writer
        self.counts = counts
        self.gateway: Gateway | None = None
        self._calls = itertools.count()
        self._waiting: dict[int, asyncio.Future[tuple[int, dict[str, Any]]]] = {}
        self.closing: float | None = None  # the drain timeout close() was asked with
        self._sent: dict[tuple[str, str], Any] = {}  # what the last reports said of each route

    def send(self, *message: Any) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame(message))

    async def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "init":
            self.gateway = Gateway(counts=self.counts, **message[1])
            self.gateway.adopting = True  # it listens on nothing: the daemon hands connections over
            self.gateway.on_replica_health = self._health
            return
        gateway = self.gateway
        assert gateway is not None, "the daemon sends init first"
        if kind == "configure":
            _, seq, apis, splitters, jobs, slots = message
            self.counts.slots.update(slots)
            self._sent.clear()  # the daemon forgot removed routes' counts: the next report says all
            try:
                await gateway.configure(apis, splitters, [JobRoute(name, endpoint, port, self._job_handler(name))
                                                          for name, endpoint, port in jobs])
            except CortexdError as e:
                self.send("error", str(e))
            self.send("ack", seq)
        elif kind == "replicas":
            _, seq, api, replicas, slots = message
            self.counts.slots.update(slots)
            gateway.set_replicas(api, replicas)
            self.send("ack", seq)
        elif kind == "state":
            _, seq, api, starting, failure, waiting_for = message
            gateway.set_state(api, starting=starting, failure=failure, waiting_for=waiting_for)
            self.send("ack", seq)
        elif kind == "job_reply":
            _, call, status, answer = message
            waiter = self._waiting.pop(call, None)
            if waiter is not None and not waiter.done():
                waiter.set_result((status, answer))
        elif kind == "report_now":  # the daemon is about to read the counts
            self.report(message[1])
        elif kind == "close":
            self.closing = message[1]
        else:
            raise ValueError(f"unknown gateway worker message {kind!r}")

    def adopt_connections(self, channel: socket.socket) -> None:
        """Serve the client connections the daemon handed over (handoff.py)."""
        gateway = self.gateway
        for port, conn in receive_connections(channel):
            if gateway is None:
                conn.close()
            else:
                gateway.adopt(port, conn)

    def _health(self, api: str, replica_id: str, reason: str | None, *, replace: bool,
                until: float | None = None) -> None:
        self.send("health", api, replica_id, reason, replace, until)

    def _job_handler(self, name: str) -> Callable[[str, str, bytes], Awaitable[tuple[int, dict[str, Any]]]]:
        async def handler(method: str, query: str, body: bytes) -> tuple[int, dict[str, Any]]:
            call = next(self._calls)
            waiter = self._waiting[call] = asyncio.get_running_loop().create_future()
            self.send("job", call, name, method, query, body)
            try:
                return await waiter
            finally:
                self._waiting.pop(call, None)
        return handler

    def report(self, asked: int = 0) -> None:
        """Send the counters of the APIs and splitters that served requests since the last report
        (the daemon keeps the last of each: an idle API costs no pickling)."""
        gateway = self.gateway
        if gateway is None:
            return
        apis = {}
        for route in gateway.routes():
            monitor = route.monitor
            if monitor is not None:
                monitor.drain()
            seen = (sum(route.metrics.codes.values()),
                    None if monitor is None else (monitor.predictions, monitor.unreadable))
            if self._sent.get(("api", route.name)) != seen:
                self._sent[("api", route.name)] = seen
                apis[route.name] = (route.metrics, monitor)
        splits = {}
        for split in gateway.splits():
            seen_split = (split.refused, tuple((t.dropped, sum(t.metrics.codes.values())) for t in split.targets))
            if self._sent.get(("split", split.name)) != seen_split:
                self._sent[("split", split.name)] = seen_split
                splits[split.name] = (split.refused, {t.name: (t.dropped, t.metrics) for t in split.targets})
        self.send("report", apis, splits, gateway.unrouted, asked)

    async def reports(self) -> None:
        while True:
            await asyncio.sleep(REPORT_S)
            self.report()


async def serve(pipe_fd: int, channel_fd: int, table_fd: int, worker: int, workers: int, slots: int) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=pipe_fd))
    me = Worker(writer, WorkerCounts(CountTable(slots, workers, fd=table_fd), worker))
    root = logging.getLogger()
    root.handlers = [PipeLog(me, root.handlers[0] if root.handlers else logging.StreamHandler(sys.stderr))]
    channel = socket.socket(fileno=channel_fd)
    channel.setblocking(False)
    loop.add_reader(channel.fileno(), me.adopt_connections, channel)
    closing = asyncio.Event()

    async def read_pipe() -> None:  # on while the gateway drains: job requests still get answers
        try:
            while (message := await read_message(reader)) is not None:
                await me.handle(message)
                if me.closing is not None:
                    closing.set()
        finally:  # the daemon is gone (or sent what no daemon sends): finish what runs, and end
            me.closing = 2.0 if me.closing is None else me.closing
            closing.set()

    def terminate() -> None:  # SIGTERM: drain as at the daemon's close
        me.closing = 10.0 if me.closing is None else me.closing
        closing.set()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    tasks = [loop.create_task(read_pipe()), loop.create_task(me.reports())]
    try:
        await closing.wait()
        loop.remove_reader(channel.fileno())  # no new connections (the daemon stopped dealing them)
        channel.close()
        if me.gateway is not None:
            await me.gateway.close(drain_timeout=me.closing or 0.0)
        me.report()  # the last counts, while the daemon still reads
        if not writer.is_closing():
            await writer.drain()
    finally:
        for task in tasks:
            task.cancel()
        writer.close()


PR_SET_DUMPABLE = 4


def main(argv: list[str]) -> None:
    pipe_fd, channel_fd, table_fd, worker, workers, slots = (int(a) for a in argv)
    # as the daemon (daemon/process_guard.py): its clients' requests pass here, so a process of the
    # same uid (a non-root daemon's replica) may not read this one's memory or descriptors in /proc
    prctl = libc_prctl()
    if prctl is not None:
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    logging.basicConfig(level=logging.WARNING, format=f"gateway worker {worker}: %(message)s")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(pipe_fd, channel_fd, table_fd, worker, workers, slots))
    else:
        uvloop.run(serve(pipe_fd, channel_fd, table_fd, worker, workers, slots))


if __name__ == "__main__":
    main(sys.argv[1:])
