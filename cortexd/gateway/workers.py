"""The gateway on N processes (issue 20.4): the daemon's own gateway and N - 1 worker processes.

    daemon process                                  worker process (worker.py), N - 1 of them
      GatewayWorkers (a Gateway: serves too)  ==pipe==>  Gateway(its slots; listens on nothing)
        | configure / set_replicas / set_state    <==     ack, health, job, report
        | accepted client connections (SCM_RIGHTS, handoff.py) ==>
        | the shared count table (memfd)  <-- every process writes its own column -->

One event loop is a ceiling on a large host (many replicas, many cores). With `gateway_workers`
N > 1 the daemon builds a GatewayWorkers instead of a Gateway: it listens and serves like one,
and starts N - 1 worker processes. It accepts every client connection itself and deals them in
turn, to itself and to each worker (handoff.py says why not SO_REUSEPORT or a shared listening
socket); a connection and all its requests stay with the process it was dealt to. The daemon
drives it exactly as it drives a Gateway: each call is applied here and sent to every worker, in
order. What must stay exact across processes:

- in-flight counts: the shared table (shared_counts.py); least-in-flight routing, admission past
  `max_replica_concurrency` (up to N - 1 over for an instant), autoscaling and draining read its
  row sums. A replica the daemon removed counts as busy until every worker has acknowledged the
  removal, so it is never stopped while a worker could still send it a request;
- request metrics, prediction monitoring, splitter counters and 404s: every worker reports its
  own every REPORT_S (worker.py), and at once when the daemon is about to read them (`counted()`:
  GET /status, an API's detail, /metrics); `route()`, `routes()`, `splits()` and `unrouted` add
  them up (a worker that ended keeps its last counts in the sums);
- passive health: each process judges the replicas by its own requests; a replica one of them takes
  out of rotation is reported to the daemon's listener as its own gateway's are;
- a BatchAPI's job requests that reach a worker are answered by the daemon's job runner, over the pipe.

A worker that ends on its own is said in the daemon's events and started again (its column of the
table cleared: its requests ended with it) with the current configuration. So is one that is stuck:
a worker reports every REPORT_S, and one not heard from for STUCK_AFTER seconds (its event loop
blocked, or the process stopped) is killed, its clients' connections with it, and started again;
from QUIET_AFTER seconds of silence on, it is dealt no new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal

from cortexd.core.api_status import Failure
from cortexd.core.health import HealthPolicy
from cortexd.errors import CortexdError
from cortexd.gateway.handoff import Acceptor, channel_pair, listening_sockets, send_connection
from cortexd.gateway.metrics import APIMetrics, Monitor
from cortexd.gateway.proxy import Gateway
from cortexd.gateway.routes import APIRoute, JobRoute, Listener, Replicas, RouteConfig, SplitConfig, SplitRoute
from cortexd.gateway.shared_counts import CountTable, Slots, WorkerCounts
from cortexd.gateway.worker_wire import frame, read_message
from cortexd.settings import DaemonSettings

log = logging.getLogger(__name__)

TABLE_SLOTS = 4096  # APIs and replicas the count table holds at once
RESTART_DELAY = 1.0  # seconds before a worker that ended is started again
MAX_RESTART_DELAY = 30.0  # the wait doubles up to this while it ends before it applied its start
COUNTED_WAIT = 0.25  # seconds a status read waits for the workers' counts, at most
ENDING_WAIT = 1.0  # seconds a worker whose pipe ended has to end before it is killed
STUCK_AFTER = 15.0  # seconds without a message (it reports every 0.5 s) before a worker is killed
QUIET_AFTER = 2.0  # seconds without a message after which a worker is dealt no new connection

# (message, level) for the daemon's events
EventSink = Callable[[str, Literal["info", "warning", "error"]], object]

# a worker's last report: {api: (metrics, monitor)}, {splitter: (refused, {api: (dropped, metrics)})}, 404s
Report = tuple[dict[str, tuple[APIMetrics, Monitor | None]],
               dict[str, tuple[int, dict[str, tuple[int, APIMetrics]]]], int]
_EMPTY: Report = ({}, {}, 0)


async def open_gateway(s: DaemonSettings, on_event: EventSink) -> Gateway:
    """The daemon's gateway as `s` says: a Gateway, or with gateway_workers > 1 a GatewayWorkers
    whose worker processes have started."""
    health = HealthPolicy(eject_after_failures=s.eject_after_failures, ejection_time=s.ejection_time,
                          unhealthy_after_timeouts=s.unhealthy_after_timeouts)
    if s.gateway_workers == 1:
        return Gateway(s.host, max_body_size=s.max_body_size, no_replica_wait=s.no_replica_wait,
                       upstream_timeout=s.upstream_timeout, client_header_timeout=s.client_header_timeout,
                       client_body_timeout=s.client_body_timeout, health=health)
    workers = GatewayWorkers(s.host, workers=s.gateway_workers, on_event=on_event,
                             max_body_size=s.max_body_size, no_replica_wait=s.no_replica_wait,
                             upstream_timeout=s.upstream_timeout, client_header_timeout=s.client_header_timeout,
                             client_body_timeout=s.client_body_timeout, health=health)
    await workers.start()
    return workers


class _Process:
    """One worker process as the daemon sees it: its pipe, what it acknowledged, what it reported."""

    def __init__(self, index: int):
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.channel: socket.socket | None = None  # where its client connections go (handoff.py)
        self.acked = 0  # the last change it applied (a sequence number)
        self.answered = 0  # the last report_now it answered
        self.report: Report = _EMPTY
        self.task: asyncio.Task[None] | None = None
        self.heard = 0.0  # loop time of its last message (or of its start)
        self.stuck = False  # killed for saying nothing for stuck_after seconds
        self.applied_start = False  # it acknowledged the configuration it was started with
        self.restart_delay = RESTART_DELAY

    def send(self, message: tuple[Any, ...]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(frame(message))


class GatewayWorkers(Gateway):
    """A Gateway in the daemon that also runs `workers - 1` gateway worker processes on its ports."""

    def __init__(self, host: str = "127.0.0.1", *, workers: int, on_event: EventSink | None = None,
                 stuck_after: float = STUCK_AFTER, **options: Any):
        self.table = CountTable(TABLE_SLOTS, workers)
        self.slots = Slots(TABLE_SLOTS)
        super().__init__(host, counts=WorkerCounts(self.table, 0, self.slots.of), **options)
        self._options = {"host": host, **options}
        self.on_event = on_event or (lambda message, level: None)
        self._workers = [_Process(i) for i in range(1, workers)]
        self._seq = 0
        self._jobs: dict[str, JobRoute] = {}
        self._turn = 0  # connections dealt so far (handoff.py)
        self._opened_at: dict[int, int] = {}  # port -> the change that opened it (workers serve it after)
        self._replicas: dict[str, tuple[Any, ...]] = {}  # the last replicas message of each API
        self._states: dict[str, tuple[Any, ...]] = {}  # the last state message of each API
        self._removed: dict[Hashable, int] = {}  # (replica key) -> the change that removed it
        self._gone: Report = ({}, {}, 0)  # what ended workers counted, kept in the sums
        self._closing = False
        self._closed = asyncio.Event()  # set with _closing: a worker waiting to start again stops waiting
        self._asked = 0  # report_now requests sent (counted())
        self._reported = asyncio.Event()  # a report came
        self.stuck_after = stuck_after
        self._watchdog: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker processes (they serve once the first configure reaches them)."""
        for worker in self._workers:
            await self._start(worker)
        self._watchdog = asyncio.ensure_future(self._watch())

    async def _start(self, worker: _Process) -> None:
        ours, theirs = socket.socketpair()
        try:
            channel, its_channel = channel_pair()
        except OSError:
            ours.close()
            theirs.close()
            raise
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cortexd.gateway.worker", str(theirs.fileno()), str(its_channel.fileno()),
                str(self.table.fd), str(worker.index), str(self.table.workers), str(self.table.slots),
                pass_fds=(theirs.fileno(), its_channel.fileno(), self.table.fd), stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True)  # a terminal's Ctrl-C is the daemon's to act on: it drains them
        except BaseException:
            ours.close()
            channel.close()
            raise
        finally:
            theirs.close()
            its_channel.close()
        reader, worker.writer = await asyncio.open_unix_connection(sock=ours)
        worker.channel = channel
        worker.heard, worker.stuck = asyncio.get_running_loop().time(), False
        # it starts from the configuration as it is now, and is dealt connections only once it
        # applied all of it: the last of these messages carries the sequence number of now
        worker.acked, worker.applied_start = 0, False
        worker.send(("init", {k: v for k, v in self._options.items()}))
        start = [self._configure_message(0), *self._replicas.values(), *self._states.values()]
        for message in start[:-1]:
            worker.send((message[0], 0, *message[2:]))
        worker.send((start[-1][0], self._seq, *start[-1][2:]))
        worker.task = asyncio.ensure_future(self._follow(worker, reader))

    async def _follow(self, worker: _Process, reader: asyncio.StreamReader) -> None:
        ending = ENDING_WAIT
        try:
            while (message := await read_message(reader)) is not None:
                self._received(worker, message)
        except Exception:  # a message it should not have sent: it is ended and started again
            log.exception("gateway worker %d", worker.index)
            ending = 0.0
        proc = worker.proc
        if proc is not None and proc.returncode is None and not self._closing:
            # the pipe's end comes as the process ends: kill() at once would poll (waitpid) the
            # ended process and take its exit status from asyncio's waiter (then 255, not the signal)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), ending)
            except TimeoutError:  # alive: it sent what it should not have, or closed the pipe
                proc.kill()
        code = await proc.wait() if proc is not None else None
        self._worker_ended(worker)
        if not self._closing:
            why = (f"said nothing for {self.stuck_after:g} s and was killed" if worker.stuck
                   else f"ended (exit code {code})")
            # one that ends before it applied its start would otherwise be a process a second
            delay = RESTART_DELAY if worker.applied_start else min(2 * worker.restart_delay, MAX_RESTART_DELAY)
            worker.restart_delay = delay
            self.on_event(f"gateway worker {worker.index} {why}; starting it again in {delay:g} s", "warning")
            await self._start_again(worker, delay)

    async def _start_again(self, worker: _Process, delay: float) -> None:
        """Start `worker` again after `delay`, and again later while that fails (no file
        descriptor or process left, the interpreter gone)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)
            if self._closing:
                return
            try:
                await self._start(worker)
                return
            except OSError as e:
                delay = min(2 * delay, MAX_RESTART_DELAY)
                self.on_event(f"gateway worker {worker.index} could not be started ({e}); "
                              f"trying again in {delay:g} s", "error")

    def _worker_ended(self, worker: _Process) -> None:
        self.table.clear_column(worker.index)
        self._gone = _fold(self._gone, worker.report)
        worker.report = _EMPTY
        if worker.writer is not None:
            worker.writer.close()
        if worker.channel is not None:
            worker.channel.close()
        worker.writer, worker.channel = None, None

    async def _watch(self) -> None:
        """Kill a worker not heard from for stuck_after seconds (_follow starts it again)."""
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.stuck_after / 4)
        last = loop.time()
        while not self._closing:
            await asyncio.sleep(tick)
            now = loop.time()
            if now - last > 2 * tick + 1.0:  # the daemon itself was held up: its pipes were not read either
                for worker in self._workers:
                    worker.heard = max(worker.heard, now)
            last = now
            for worker in self._workers:
                proc = worker.proc
                if proc is not None and proc.returncode is None and not worker.stuck \
                        and now - worker.heard > self.stuck_after:
                    worker.stuck = True
                    log.warning("gateway worker %d said nothing for %.0f s: killed", worker.index,
                                now - worker.heard)
                    proc.kill()

    def _received(self, worker: _Process, message: tuple[Any, ...]) -> None:
        worker.heard = asyncio.get_running_loop().time()
        kind = message[0]
        if kind == "ack":
            worker.acked = max(worker.acked, message[1])
            worker.applied_start = True
            self._release_drained()
        elif kind == "report":  # the routes that changed since its last report
            apis, splits, _ = worker.report
            worker.report = ({**apis, **message[1]}, {**splits, **message[2]}, message[3])
            worker.answered = max(worker.answered, message[4])
            self._reported.set()
        elif kind == "health":
            _, api, replica_id, reason, replace, until = message
            listener = self.on_replica_health
            if listener is not None:
                listener(api, replica_id, reason, replace=replace, until=until)
        elif kind == "job":
            self._spawn(self._answer_job(worker, *message[1:]))
        elif kind == "error":
            self.on_event(f"gateway worker {worker.index}: {message[1]}", "error")
        elif kind == "log":  # its log records, in the daemon's log (which rotates; the worker's stderr does not)
            log.log(message[1], "gateway worker %d: %s", worker.index, message[2])
        else:
            raise ValueError(f"unknown message {kind!r} from gateway worker {worker.index}")

    async def _answer_job(self, worker: _Process, call: int, name: str, method: str, query: str,
                          body: bytes) -> None:
        route = self._jobs.get(name)
        if route is None:
            status, answer = 404, {"error": f"batch api {name!r} is not deployed"}
        else:
            try:
                status, answer = await route.handler(method, query, body)
            except Exception:  # the job runner's own failure: said, never a traceback to the client
                log.exception("job request to %s failed", name)
                status, answer = 500, {"error": f"the job request to {name!r} failed; see the daemon log"}
        worker.send(("job_reply", call, status, answer))

    async def close(self, drain_timeout: float = 10.0) -> None:
        self._closing = True
        self._closed.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
        for worker in self._workers:
            worker.send(("close", drain_timeout))
        await super().close(drain_timeout)
        for worker in self._workers:
            if worker.proc is not None:
                try:
                    await asyncio.wait_for(worker.proc.wait(), drain_timeout + 5.0)
                except TimeoutError:
                    worker.proc.kill()
            if worker.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(worker.task, 5.0)
        # the table stays mapped: the daemon reads in-flight counts (all 0 now) until it ends

    def force_close(self) -> None:
        self._closing = True
        self._closed.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
        for worker in self._workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.kill()
        super().force_close()

    # -- the daemon's interface: applied here, then sent to every worker ---------------------

    def _broadcast(self, message: tuple[Any, ...]) -> None:
        for worker in self._workers:
            worker.send(message)

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _configure_message(self, seq: int) -> tuple[Any, ...]:
        apis, splitters = self._configured
        jobs = [(j.name, j.endpoint, j.port) for j in self._jobs.values()]
        return ("configure", seq, apis, splitters, jobs, dict(self.slots.of))

    # -- accepting: every connection here, dealt in turn (handoff.py) -----------------------

    async def _listen(self, port: int) -> Listener:
        listener = Listener(port)
        try:
            sockets = listening_sockets(self.host, port)
        except OSError as e:
            raise CortexdError(self._bind_problem(port, e)) from e
        deal = functools.partial(self._deal, port)
        listener.servers = [Acceptor(sock, deal) for sock in sockets]
        self._opened_at[port] = self._seq + 1  # the configure that opens it is the next change
        return listener

    def _deal(self, port: int, conn: socket.socket) -> None:
        """The next process in turn serves `conn`: this one, or a worker that serves `port` by now."""
        self._turn += 1
        turn = self._turn % (len(self._workers) + 1)
        if turn:
            worker = self._workers[turn - 1]
            opened = self._opened_at.get(port, 0)
            # a worker silent for QUIET_AFTER (stuck, or too busy to report) gets none until it speaks
            if worker.channel is not None and worker.acked >= opened and not self._closing \
                    and asyncio.get_running_loop().time() - worker.heard <= QUIET_AFTER \
                    and send_connection(worker.channel, port, conn):
                return
        self.adopt(port, conn)  # its turn, or a worker that cannot take it now

    async def configure(self, apis: Sequence[RouteConfig], splitters: Sequence[SplitConfig] = (),
                        jobs: Sequence[JobRoute] | None = None) -> None:
        for api in apis:
            self.slots.slot(("api", api.name))
        await super().configure(apis, splitters, jobs)  # a port or clash problem raises here first
        if jobs is not None:
            self._jobs = {j.name: j for j in jobs}
        names = {api.name for api in apis}
        seq = self._next()
        for name in self._replicas.keys() - names:  # a removed API's replicas drain as removed replicas do
            for replica_id, _, _ in self._replicas[name][3]:
                self._removed[("replica", name, replica_id)] = seq
        self._replicas = {n: m for n, m in self._replicas.items() if n in names}
        self._states = {n: m for n, m in self._states.items() if n in names}
        # a removed API's or splitter's counts go with it (deployed again, it starts from none, as
        # its route here does); the workers send their every route's counts after this configure
        split_names = {s.name for s in splitters}
        for worker in self._workers:
            worker.report = _kept(worker.report, names, split_names)
        self._gone = _kept(self._gone, names, split_names)
        # until a worker applied this configure it would answer a route added on a port it already
        # serves with 404: the daemon serves those ports' new connections meanwhile (milliseconds)
        for port in {a.port for a in apis} | {s.port for s in splitters} | {j.port for j in self._jobs.values()}:
            self._opened_at[port] = seq
        self._broadcast(self._configure_message(seq))

    def set_replicas(self, api: str, replicas: Replicas) -> None:
        known = {address[0] for address in replicas}
        seq = self._next()
        before = self._replicas.get(api)
        for replica_id, *_ in (before[3] if before is not None else ()):
            if replica_id not in known:
                self._removed[("replica", api, replica_id)] = seq
        slots = {}
        for replica_id in known:
            key = ("replica", api, replica_id)
            self._removed.pop(key, None)
            slots[key] = self.slots.slot(key)
        super().set_replicas(api, replicas)
        message = ("replicas", seq, api, list(replicas), slots)
        self._replicas[api] = message
        self._broadcast(message)

    def set_state(self, api: str, *, starting: bool, failure: Failure | None = None,
                  waiting_for: str | None = None) -> None:
        super().set_state(api, starting=starting, failure=failure, waiting_for=waiting_for)
        message = ("state", self._next(), api, starting, failure, waiting_for)
        self._states[api] = message
        self._broadcast(message)

    def _unacknowledged(self, seq: int) -> bool:
        return any(w.writer is not None and w.acked < seq for w in self._workers)

    def _release_drained(self) -> None:
        """Free the slots of removed replicas no worker routes to or holds requests on any more."""
        for key, seq in list(self._removed.items()):
            slot = self.slots.of.get(key)
            if slot is None or (not self._unacknowledged(seq) and self.table.row_sum(slot) == 0
                                and not self._held_here(key)):
                del self._removed[key]
                self.slots.release(key)

    def _held_here(self, key: Hashable) -> bool:
        assert isinstance(key, tuple)
        return super().replica_in_flight(key[1], key[2]) > 0

    # -- reading: every worker's counts -----------------------------------------------------

    async def counted(self, timeout: float = COUNTED_WAIT) -> None:
        """Ask every running worker for its counts now and wait for them (at most `timeout`: a busy
        or stuck worker's last report stands)."""
        self._asked += 1
        asked = self._asked
        for worker in self._workers:
            worker.send(("report_now", asked))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(w.writer is not None and w.answered < asked for w in self._workers):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._reported.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reported.wait(), remaining)

    def applied(self) -> bool:
        """Whether every worker runs and has applied every change sent so far."""
        return all(w.writer is not None and w.acked >= self._seq for w in self._workers)

    def worker_pids(self) -> list[int | None]:
        """The worker processes' pids (None: not running now), by worker 1..N-1."""
        return [w.proc.pid if w.proc is not None and w.proc.returncode is None else None
                for w in self._workers]

    def requests_per_worker(self) -> list[int]:
        """Requests each process answered (APIs and 404s; as last reported), the daemon's first."""
        def total(apis: Mapping[str, tuple[APIMetrics, Monitor | None]], unrouted: int) -> int:
            return unrouted + sum(n for metrics, _ in apis.values() for n in metrics.codes.values())
        own = {r.name: (r.metrics, None) for r in super().routes()}
        return [total(own, super().unrouted)] + [total(w.report[0], w.report[2]) for w in self._workers]

    def replica_in_flight(self, api: str, replica_id: str) -> int:
        key = ("replica", api, replica_id)
        slot = self.slots.of.get(key)
        if slot is None:
            return 0
        busy = self.table.row_sum(slot)
        removed = self._removed.get(key)
        if removed is not None and self._unacknowledged(removed):
            return max(busy, 1)  # a worker may still send it a request
        return busy

    def api_in_flight(self, api: str) -> int:
        slot = self.slots.of.get(("api", api))
        return self.table.row_sum(slot) if slot is not None else 0

    def _reports(self) -> list[Report]:
        return [w.report for w in self._workers] + [self._gone]

    def _merged(self, route: APIRoute) -> APIRoute:
        view = APIRoute(route.name, route.endpoint, route.port, route.max_replica_concurrency)
        view.metrics.add(route.metrics)
        if route.monitor is not None:
            view.monitor = Monitor(route.monitor.model_type, route.monitor.key)
            view.monitor.add(route.monitor)
        for apis, _, _ in self._reports():
            metrics, monitor = apis.get(route.name, (None, None))
            if metrics is not None:
                view.metrics.add(metrics)
            if monitor is not None and view.monitor is not None and \
                    (monitor.model_type, monitor.key) == (view.monitor.model_type, view.monitor.key):
                view.monitor.add(monitor)
        view.in_flight = self.api_in_flight(route.name)
        view.replicas, view.starting, view.error = route.replicas, route.starting, route.error
        return view

    def route(self, api: str) -> APIRoute:
        return self._merged(super().route(api))

    def routes(self) -> list[APIRoute]:
        return [self._merged(r) for r in super().routes()]

    def splits(self) -> list[SplitRoute]:
        configs = {c.name: c for c in self._configured[1]}
        out = []
        for split in super().splits():
            view = SplitRoute(configs[split.name]) if split.name in configs else split
            if view is split:
                out.append(split)
                continue
            view.shares, view.refused = split.shares, split.refused
            for target, mine in zip(view.targets, split.targets, strict=True):
                target.down, target.dropped = mine.down, mine.dropped
                target.metrics.add(mine.metrics)
            for _, splits, _ in self._reports():
                refused, targets = splits.get(split.name, (0, {}))
                view.refused += refused
                for target in view.targets:
                    dropped, metrics = targets.get(target.name, (0, None))
                    target.dropped += dropped
                    if metrics is not None:
                        target.metrics.add(metrics)
            out.append(view)
        return out

    @property
    def unrouted(self) -> int:
        return super().unrouted + sum(unrouted for _, _, unrouted in self._reports())


def _kept(report: Report, apis: set[str], splitters: set[str]) -> Report:
    """`report`'s counts of the APIs and splitters named (those configured now)."""
    return ({n: c for n, c in report[0].items() if n in apis}, {n: c for n, c in report[1].items() if n in splitters},
            report[2])


def _fold(into: Report, report: Report) -> Report:
    """`into` with `report`'s counts added (an ended worker's, kept in the sums)."""
    apis, splits, unrouted = into
    for name, (metrics, monitor) in report[0].items():
        kept, kept_monitor = apis.get(name, (None, None))
        if kept is None:
            kept = APIMetrics()
        kept.add(metrics)
        if monitor is not None:
            if kept_monitor is None or (kept_monitor.model_type, kept_monitor.key) != (monitor.model_type, monitor.key):
                kept_monitor = Monitor(monitor.model_type, monitor.key)
            kept_monitor.add(monitor)
        apis[name] = (kept, kept_monitor)
    for name, (refused, targets) in report[1].items():
        kept_refused, kept_targets = splits.get(name, (0, {}))
        for api, (dropped, metrics) in targets.items():
            kept_dropped, kept_metrics = kept_targets.get(api, (0, APIMetrics()))
            kept_metrics.add(metrics)
            kept_targets[api] = (kept_dropped + dropped, kept_metrics)
        splits[name] = (kept_refused + refused, kept_targets)
    return apis, splits, unrouted + report[2]
