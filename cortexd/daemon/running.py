"""The daemon: wires backend, gateway, reconciler and control API, and runs them until shutdown.

Lifecycle (uvicorn's shape): start() refuses a second daemon, picks the backend,
loads the configuration (a ConfigError here aborts the start), opens the gateway
listeners and the control socket, then the reconciler loop runs. A first
SIGINT/SIGTERM (or POST /shutdown) starts a graceful shutdown: the gateway stops
accepting, in-flight requests drain until a deadline, replicas stop. A second
signal forces: replicas are killed at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import aiohttp

from cortexd import __version__
from cortexd.console.guard import new_token
from cortexd.console.server import Console
from cortexd.core.placement import gpu_notices
from cortexd.daemon import control
from cortexd.daemon.autoscaler import Autoscaler
from cortexd.daemon.backend_choice import choose_backend, end_leftover_replicas, project_environments
from cortexd.daemon.events import EventLog
from cortexd.daemon.gpu_placer import GPUPlacer, WorkerPlacement
from cortexd.daemon.jobs import JobRunner
from cortexd.daemon.logclock import LogClock
from cortexd.daemon.process_guard import OrphanReaper, guard_daemon_process, waited_by_others
from cortexd.daemon.projects import (
    Project,
    conflicts,
    deploy_summary,
    die_with,
    load_projects,
    merged,
    reload_projects,
    roll_reasons,
    settled_splitters,
)
from cortexd.daemon.reconciler import Reconciler
from cortexd.daemon.sampler import Sampler
from cortexd.daemon.seams import PinChanges
from cortexd.daemon.watcher import ProjectWatcher, is_source
from cortexd.errors import (
    ConfigError,
    CortexdError,
    DaemonAlreadyRunning,
    UnknownAPI,
)
from cortexd.gateway.admission import raise_open_file_limit
from cortexd.gateway.proxy import Gateway
from cortexd.gateway.workers import open_gateway
from cortexd.home import prepare_home, write_text_nofollow
from cortexd.logfiles import (
    START,
    Position,
    keep_previous_logs,
    previous_logs,
    read_lines,
    read_new_all,
)
from cortexd.settings import OPTIONS, DaemonSettings
from cortexd.spec import APISpec
from cortexd.spec.model import SplitterSpec
from cortexd.status import DaemonStatus, GPUStatus, SplitterFacts, Status, build_status

log = logging.getLogger("cortexd")


async def daemon_answers(socket_path: Path, timeout: float = 1.0) -> bool:
    """True if a daemon answers on the control socket (a stale socket file does not)."""
    if not socket_path.exists():  # noqa: ASYNC240 - one stat of a local socket file
        return False
    try:
        conn = aiohttp.UnixConnector(path=str(socket_path))
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get("http://cortexd/status") as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


class Daemon:
    def __init__(self, settings: DaemonSettings, paths: Sequence[str], *, backend=None):
        self.settings = settings
        self.paths = [str(Path(p).resolve()) for p in paths]
        self.events = EventLog(time.time)
        self.backend = backend
        self.pin_changes: PinChanges | None = None  # the process backend's environments (status)
        self.gateway: Gateway | None = None
        self.reconciler: Reconciler | None = None
        self.placer: GPUPlacer | None = None
        self.jobs: JobRunner | None = None  # the BatchAPIs' jobs
        self.started_at = time.time()
        self.config_files: list[str] = []
        self.config_error: str | None = None
        self.notices: list[str] = []
        self._control: aiohttp.web.AppRunner | None = None
        self._metrics: aiohttp.web.AppRunner | None = None  # the admin port (Prometheus, the console)
        self.sampler: Sampler | None = None  # the console's history, once a second
        self.watcher: ProjectWatcher | None = None
        self.autoscaler: Autoscaler | None = None
        # for `logs --since`; it also removes the logs of replicas long gone
        self.log_clock = LogClock(settings.log_dir, live=self.live_log_paths)
        self._tasks: list[asyncio.Task] = []
        # run_daemon's process (a child subreaper): its descendants are refused by the control API
        self.guarded_pid: int | None = None
        self._stop = asyncio.Event()
        self._config_lock = asyncio.Lock()  # reload, deploy and delete apply one at a time
        self._deleted: set[str] = set()  # `cortexd delete`d; file saves do not bring them back
        self._signals = 0
        self.backend_reason: str | None = None  # why auto did not choose Docker, for `up -d`
        self.projects: list[Project] = []  # what is deployed, one entry per cortex.yaml
        self._noticed: set[str] = set()  # APIs told what the backend ignores of them (notices())
        self._loader: concurrent.futures.ProcessPoolExecutor | None = None  # see _load_off_loop

    @property
    def _started_reconciler(self) -> Reconciler:
        """The reconciler start() made: the control API, the watcher and the logs come after it."""
        assert self.reconciler is not None, "the daemon has not started"
        return self.reconciler

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        s.check_socket_path()  # before anything starts: the control socket must be bindable
        prepare_home(s.home)  # the daemon's own, or UnsafeHome: it writes through nothing planted there
        if await daemon_answers(s.socket_path):
            raise DaemonAlreadyRunning(
                f"a cortexd daemon is already running (control socket {s.socket_path}); "
                "use `cortexd deploy PATH` to change what it serves, or `cortexd down` first"
            )
        # each project on its own, off the loop; a ConfigError aborts the start
        projects = await asyncio.to_thread(load_projects, self.paths, s.default_local_port, s.cpu_only,
                                           s.nearest_pins)
        if self.backend is None:
            why: list[str] = []
            environments = project_environments(s, self.events)
            self.pin_changes = environments
            self.backend = await choose_backend(s, self.events, why, environments)
            self.backend_reason = why[0] if why else None
        reaped = await asyncio.to_thread(end_leftover_replicas, s)
        if reaped:
            self.events.add(f"stopped {len(reaped)} replica process(es) left by a previous daemon "
                            f"(pids {', '.join(map(str, reaped))})", level="warning")
        # the previous run's replica logs (a crashed replica's traceback) stay, one run back, for
        # `cortexd logs API --previous`; this run's replicas write a fresh logs folder
        await asyncio.to_thread(keep_previous_logs, s.log_dir, s.previous_log_dir)
        # the daemon's gateway, and gateway_workers - 1 processes beside it (gateway/workers.py)
        self.gateway = await open_gateway(s, lambda message, level: self.events.add(message, level=level))
        self.placer = GPUPlacer()
        self.reconciler = Reconciler(self.backend, self.gateway, s, self.events, placer=self.placer)
        # replicas the gateway takes out of rotation are reported, and replaced when hung
        self.gateway.on_replica_health = self.reconciler.replica_out_of_rotation
        self._record_config(projects)
        self.jobs = JobRunner(s.home, self.events, self.backend, max_attempts=s.batch_max_attempts,
                              gpus=WorkerPlacement(self.placer, lambda: self._started_reconciler.observed))
        await self.jobs.start()
        await self._apply_jobs(projects)
        await self.reconciler.apply(self._desired(), splitters=self._splitters())
        # what was prepared for replicas no deployed API uses goes (the process backend's environments;
        # a BatchAPI's workers use its API's)
        batch = [b for p in projects for b in p.batch_apis if b.name not in self._deleted]
        self._tasks.append(asyncio.ensure_future(self.backend.collect_garbage(self._desired() + batch)))
        self._control = await control.serve(self, str(s.socket_path))
        # the web console beside /metrics: its history is sampled once a second from the start
        self.sampler = Sampler(self.status, self.route_metrics)
        self._metrics = await control.serve_metrics(self, s.metrics_port, s.host,
                                                    Console(self, self.sampler, new_token()))
        self._tasks.append(asyncio.ensure_future(self.sampler.run()))
        self._start_watcher()
        write_text_nofollow(s.pid_path, str(os.getpid()))
        self.autoscaler = Autoscaler(self.reconciler, self.gateway, sample_interval=s.sample_interval,
                                     tick=s.autoscale_tick)
        self._tasks.append(asyncio.ensure_future(self.reconciler.run()))
        self._tasks.append(asyncio.ensure_future(self.autoscaler.run()))
        self._tasks.append(asyncio.ensure_future(self.log_clock.run()))
        self.events.add(
            f"cortexd {__version__} started (backend: {self.backend.name}, pid {os.getpid()}"
            + (f", {s.gateway_workers} gateway processes" if s.gateway_workers > 1 else "") + ")"
        )

    def _desired(self, projects: Sequence[Project] | None = None) -> list[APISpec]:
        # APIs deleted with `cortexd delete` stay deleted until they are deployed again
        return [s for p in (self.projects if projects is None else projects) for s in p.specs
                if s.name not in self._deleted]

    def _splitters(self, projects: Sequence[Project] | None = None) -> list[SplitterSpec]:
        return [s for p in (self.projects if projects is None else projects) for s in p.splitters
                if s.name not in self._deleted]

    async def _apply_jobs(self, projects: Sequence[Project]) -> None:
        """Serve the projects' BatchAPIs (their job endpoints; their unended jobs resume)."""
        assert self.jobs is not None and self.gateway is not None
        await self.jobs.set_apis([b for p in projects for b in p.batch_apis if b.name not in self._deleted])
        await self.gateway.set_jobs(self.jobs.routes())

    def _record_config(self, projects: Sequence[Project], error: str | None = None) -> None:
        self.projects = list(projects)
        self.paths = [p.path for p in projects]
        self.config_files = [f for p in projects for f in p.files]
        self.config_error = error
        self.notices = [n for p in projects for n in p.notices]
        for notice in self.notices:
            self.events.add(notice, level="warning")
        for spec in (s for p in projects for s in p.specs):
            if spec.name not in self._noticed:  # what the backend ignores of a spec, once per API
                said = self.backend.notices(spec) if self.backend is not None else []
                if said:
                    self._noticed.add(spec.name)
                for notice in said:
                    self.events.add(notice, api=spec.name, level="warning")

    async def _load_off_loop(self, load, *args):
        """Run a configuration load in a separate loader process while the daemon serves: a hostile
        file (200,000 values, deep nesting) costs seconds of CPU and a large heap, and in a thread
        its GIL holds and garbage collections would stall the gateway's loop."""
        if self._loader is None:
            self._loader = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with, initargs=(os.getpid(),))
        try:
            return await asyncio.get_running_loop().run_in_executor(self._loader, load, *args)
        except concurrent.futures.process.BrokenProcessPool:
            # the loader died (killed, out of memory): say so; the next load starts a new one
            self._loader = None
            raise CortexdError("loading the configuration failed: the loader process died (out of "
                               "memory?); the previous version keeps serving") from None

    def _counts(self, path: str) -> bool:
        """Whether a changed file can change a version (watchdog's thread): sources always,
        other files only if the version shipped with them (not what a predictor creates)."""
        inside = path.rstrip(os.sep) + os.sep  # a folder moved or removed at once
        return is_source(path) or path in self.config_files or any(
            path in p.shipped or any(f.startswith(inside) for f in p.shipped) for p in self.projects)

    def _start_watcher(self) -> None:
        if self.watcher is not None:
            self._tasks.append(asyncio.ensure_future(self.watcher.stop()))
        roots = {str(Path(p) if Path(p).is_dir() else Path(p).parent) for p in self.paths}
        roots |= {str(Path(f).parent) for f in self.config_files}
        self.watcher = ProjectWatcher(roots, self.reload, debounce=self.settings.debounce, counts=self._counts,
                                      max_wait=self.settings.debounce_max_wait)
        self.watcher.start()

    async def reload(self, changed: Sequence[str] = ()) -> None:
        """A watched file changed: load and validate (off the loop: a hostile file must not stall
        the gateway), then apply; a project whose edit is broken keeps its last good version."""
        async with self._config_lock:
            try:
                projects, problems = await self._load_off_loop(
                    reload_projects, self.projects, self.settings.default_local_port)
                reasons = roll_reasons(self.projects, projects)
                await self._started_reconciler.apply(self._desired(projects), reasons=reasons,
                                                     splitters=self._splitters(projects))
                await self._apply_jobs(projects)
            except CortexdError as e:  # e.g. a new local_port that is taken
                self.config_error = str(e)
                self.events.add(f"configuration rejected; the previous version keeps serving. {e}",
                                level="error")
                return
            except Exception as e:  # never silent: the watcher task would swallow it
                log.exception("reloading the configuration failed")
                self.config_error = f"reloading failed: {type(e).__name__}: {e}"
                self.events.add(f"{self.config_error}; the previous version keeps serving", level="error")
                return
            error = str(ConfigError(problems)) if problems else None
            self._record_config(projects, error)
            if error:
                self.events.add(f"configuration rejected; the previous version keeps serving. {error}",
                                level="error")

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self.events.add("shutting down: draining in-flight requests (Ctrl-C again to force)")
            self.request_shutdown()
        else:
            self.events.add("forced shutdown: killing replicas", level="warning")
            self.settings = self.settings.with_(drain_timeout=0.0, stop_timeout=0.5)
            if self.reconciler is not None:
                self.reconciler.force(stop_timeout=self.settings.stop_timeout)
            if self.gateway is not None:
                self.gateway.force_close()

    def request_shutdown(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        if self._loader is not None:
            self._loader.shutdown(wait=False, cancel_futures=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # stop accepting, drain in-flight, then stop replicas; cleanup is shielded so a
        # second signal cannot leave replicas behind
        async def cleanup() -> None:
            if self.gateway is not None:
                await self.gateway.close(drain_timeout=self.settings.drain_timeout)
            if self.jobs is not None:
                await self.jobs.close()
            if self.reconciler is not None:
                await self.reconciler.shutdown()
            if self.backend is not None:
                await self.backend.close()
            if self.placer is not None:
                self.placer.close()
            if self._metrics is not None:
                await self._metrics.cleanup()
            if self._control is not None:
                # only the daemon that owns the socket removes it (not one refused at start)
                await self._control.cleanup()
                for path in (self.settings.socket_path, self.settings.pid_path):
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass

        await asyncio.shield(cleanup())
        log.info("cortexd stopped")

    # -- control API methods ---------------------------------------------------------

    async def deploy(self, paths: Sequence[str], *, cpu_only: bool = False, nearest_pins: bool = False) -> dict:
        """Add or update the APIs of `paths`, leaving other projects' APIs serving (as Cortex's
        `deploy` does); an API no longer in a deployed cortex.yaml is removed. Returns what was
        created, updated, removed, unchanged and left alone, and the notices (among them what
        becomes of APIs that request compute.gpu). cpu_only: `deploy --cpu-only`; nearest_pins:
        `deploy --nearest-pins`, these projects install the nearest release of each pin that cannot
        be installed here (the daemon's own setting of either holds for every project)."""
        resolved = [str(Path(p).resolve()) for p in paths]  # noqa: ASYNC240 - a few local paths
        s = self.settings
        async with self._config_lock:
            # a splitter's apis may be in the projects already deployed: checked on the merged set below
            incoming = await self._load_off_loop(load_projects, resolved, s.default_local_port,
                                                 cpu_only or s.cpu_only, nearest_pins or s.nearest_pins, False)
            after = merged(self.projects, incoming)
            problems = conflicts(after, settled_splitters(self.projects))
            if problems:
                raise ConfigError(problems)
            summary = deploy_summary(self.projects, after, incoming, self._deleted)
            deleted = self._deleted - {n for p in incoming for n in p.names}  # deployed again: back
            await self._started_reconciler.apply(
                [s for p in after for s in p.specs if s.name not in deleted],
                reasons=roll_reasons(self.projects, after),
                splitters=[s for p in after for s in p.splitters if s.name not in deleted])
            self._deleted = deleted
            await self._apply_jobs(after)
            # only an applied configuration replaces what is watched and shown
            self._record_config(after)
            self._start_watcher()
        said = [f"{len(names)} {what}" for what, names in (
            ("created", summary.created), ("updated", summary.updated), ("removed", summary.removed),
            ("unchanged", summary.unchanged), ("left alone", summary.left_alone)) if names]
        self.events.add(f"deployed {', '.join(resolved)}: {', '.join(said) or 'no apis'}")
        notices = [n for p in incoming for n in p.notices] + self._gpu_notices([s for p in incoming for s in p.specs])
        return {**summary.to_json(), "notices": notices}

    def _gpu_notices(self, specs: Sequence[APISpec]) -> list[str]:
        """What becomes of the APIs that request compute.gpu: served on the CPU, or not at all here."""
        if self.placer is None:
            return []
        inventory = self.placer.inventory()
        return gpu_notices(specs, len(inventory.devices), inventory.reason, OPTIONS["cpu_only"].flag or "")

    async def delete_api(self, name: str) -> None:
        """Remove an API or a traffic splitter (until it is deployed again); the splitters that
        route to a removed API give its share to their other apis."""
        rec = self._started_reconciler
        async with self._config_lock:
            if self.jobs is not None and name in self.jobs.apis:
                self._deleted.add(name)
                await self._apply_jobs(self.projects)
                return
            if name not in rec.apis and name not in rec.splitters:
                raise UnknownAPI(self._unknown(name))
            specs = [s.spec for n, s in rec.apis.items() if n != name]
            await rec.apply(specs, splitters=[s for n, s in rec.splitters.items() if n != name])
            self._deleted.add(name)

    async def batch_api(self, name: str, job_id: str | None = None, *, stop: bool = False) -> dict | None:
        """A BatchAPI's jobs, or one job (stopped first with `stop`); None: no BatchAPI `name`."""
        if self.jobs is None or name not in self.jobs.apis:
            return None
        return await self.jobs.control(name, job_id, stop=stop)

    def _unknown(self, name: str) -> str:
        names = ", ".join(sorted(self._started_reconciler.apis)) or "none"
        splitters = ", ".join(sorted(self._started_reconciler.splitters))
        return f"no api named {name!r} (apis: {names}" + (f"; traffic splitters: {splitters})" if splitters else ")")

    def replica_of_peer(self, pid: int, uid: int) -> str | None:
        return self.backend.replica_of_peer(pid, uid)

    def status(self) -> Status:
        """The status snapshot (cortexd/status.py): control API /status, the live view, /metrics."""
        wall, mono = time.time(), time.monotonic()
        rec = self._started_reconciler
        daemon = DaemonStatus(
            __version__, os.getpid(), self.backend.name if self.backend else None, self.backend_reason,
            self.settings.host, round(wall - self.started_at, 1), tuple(self.config_files),
            self.config_error, tuple(self.notices),
            f"http://{self._admin_host()}:{self.settings.metrics_port}/metrics" if self._metrics is not None else None)
        status = build_status(
            daemon, rec.api_facts(), rec.replica_facts(), {n: rec.traffic(n) for n in rec.apis},
            self.events.recent(50), GPUStatus.of(self.placer.inventory()) if self.placer else None,
            urls={n: self._url(s.spec.networking.local_port, s.spec.networking.endpoint)
                  for n, s in rec.apis.items()},
            preparing={n: rec.preparing(n) for n in rec.apis}, wall_now=wall, mono_now=mono,
            isolation={n: rec.isolation(n) for n in rec.apis},
            pins={n: self.pin_changes.changes(n) for n in rec.apis} if self.pin_changes is not None else None,
            splitters=self._splitter_facts(mono),
            trends=self.sampler.history.trends() if self.sampler is not None else None)
        return replace(status, batch_apis=self.jobs.statuses(self._url, wall)) if self.jobs is not None else status

    def spec_of(self, name: str) -> APISpec | None:
        """The API's spec as loaded (the console's configuration and OpenAPI document)."""
        state = self.reconciler.apis.get(name) if self.reconciler is not None else None
        return state.spec if state is not None else None

    def _splitter_facts(self, now: float) -> list[SplitterFacts]:
        splits = {s.name: s for s in self.gateway.splits()} if self.gateway is not None else {}
        return [SplitterFacts(spec, self._url(spec.networking.local_port, spec.networking.endpoint),
                              splits[name].snapshot(now) if name in splits else {})
                for name, spec in self._started_reconciler.splitters.items()]

    async def counted(self) -> None:
        if self.gateway is not None:
            await self.gateway.counted()

    def route_metrics(self) -> list:
        """(api, APIMetrics, Monitor | None) per API, for the Prometheus collector."""
        return [(r.name, r.metrics, r.monitor) for r in self.gateway.routes()] if self.gateway else []

    def split_metrics(self) -> list:
        """(splitter, api, APIMetrics) per splitter api, for the Prometheus collector."""
        return [(s.name, t.name, t.metrics) for s in self.gateway.splits() for t in s.targets] if self.gateway else []

    def unrouted_requests(self) -> int:
        return self.gateway.unrouted if self.gateway is not None else 0

    async def replica_models(self, name: str) -> dict[str, dict]:
        """{replica id: the models it serves} for `cortexd get API` (control API /apis/{name})."""
        return await self._started_reconciler.replica_models(name)

    def _url(self, port: int, endpoint: str) -> str:
        return f"http://{self._admin_host()}:{port}{endpoint}"

    def _admin_host(self) -> str:
        """Where this machine reaches what the daemon serves on --host (a wildcard: loopback)."""
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    # -- logs -------------------------------------------------------------------------------

    def live_log_paths(self) -> set[str] | None:
        """The log files of the replicas the backend runs now (kept, whatever their age); None
        before the daemon knows them (nothing is removed then)."""
        if self.reconciler is None or self.backend is None:
            return None
        paths = (self.backend.log_path(rid) for rid in self.reconciler.observed)
        return {os.path.abspath(p) for p in paths if p}

    def log_sources(self, name: str, previous: bool = False, job: str | None = None) -> list[tuple[str, str | None]]:
        """(replica_id, log file or None) for the API's current replicas and the most recent
        dead ones (their tracebacks are what a user looks for); with `previous`, its replicas'
        logs of the daemon's previous run (an API no longer served included); a BatchAPI's: the
        workers' of `job` (None: its newest)."""
        if self.jobs is not None and name in self.jobs.apis and not previous:
            return self.jobs.log_sources(name, job)
        if previous:
            found = previous_logs(self.settings.previous_log_dir, name)
            if not found:
                known = (f"api {name!r} has" if name in self._started_reconciler.apis
                         else f"{self._unknown(name)}; it has")
                raise UnknownAPI(f"{known} no logs from the daemon's previous run (one run back is kept, in "
                                 f"{self.settings.previous_log_dir}); `cortexd logs {name}` shows this run's")
            return list(found)
        if name not in self._started_reconciler.apis:
            raise UnknownAPI(self._unknown(name))
        sources: dict[str, str | None] = {}
        api_dir = self.settings.log_dir / name
        if api_dir.is_dir():
            files = sorted(api_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
            for f in files[-8:]:
                sources[f.stem] = str(f)
        for info in self._started_reconciler.observed.values():
            if info.api == name and info.replica_id not in sources:
                sources[info.replica_id] = self.backend.log_path(info.replica_id)
        return list(sources.items())

    async def stream_logs(
        self, name: str, sources: list[tuple[str, str | None]], tail: int | None, follow: bool,
        since: float | None = None,
    ) -> AsyncIterator[str]:
        """The history (the last `tail` lines per replica, or every line written after `since`,
        then the last `tail` of those), then with `follow` new lines as they come. Each log is
        read across its rotations by position (cortexd/logfiles.py): none lost or repeated."""
        many = len(sources) > 1 or follow or since is not None  # keep followed lines' prefix alike
        positions: dict[str, Position] = {}
        picked: list[str] = []
        for rid, path in sources:
            if path is not None:
                start = self.log_clock.position_since(path, since) if since is not None else None
                # off the loop: a long log must not stall the gateway
                lines, positions[rid] = await asyncio.to_thread(read_lines, path, tail, start)
            elif since is None:
                lines = await self.backend.logs(rid, tail=tail)
            else:
                lines = []  # the engine keeps this log, unsampled: nothing to say of its times
            lines = [f"{rid} | {line}" if many else line for line in lines]
            if since is None:
                for line in lines:
                    yield line
            else:
                picked.extend(lines)
        if since is not None:
            if tail is not None:
                picked = picked[-tail:] if tail > 0 else []
            for line in picked:
                yield line
        busy = False
        while follow and not self._stop.is_set():
            if not busy:  # a log that grows fast is read on at once, so -f keeps up with it
                await asyncio.sleep(0.25)
            # pick up replicas started since (restarts, scale-ups)
            for rid, path in self.log_sources(name) if name in self._started_reconciler.apis else []:
                if path is not None and rid not in positions:
                    positions[rid] = START
                    sources.append((rid, path))
            followed = [(rid, path, positions[rid]) for rid, path in sources if path is not None]
            busy = False
            for rid, lines, positions[rid] in await asyncio.to_thread(read_new_all, followed):
                busy = busy or bool(lines)
                for line in lines:
                    yield f"{rid} | {line}"


async def run_daemon(settings: DaemonSettings, paths: Sequence[str], *, on_started=None) -> None:
    """Run a daemon until it is asked to stop (used by the CLI, foreground and detached)."""
    # a descriptor per client connection: the soft limit (often 1,024) goes up to the hard one,
    # and the gateway keeps its sockets below it, with room for the control API (admission.py)
    before, after = raise_open_file_limit()
    if after != before:
        log.info("open-file limit raised from %d to %d", before, after)
    daemon = Daemon(settings, paths)
    # a subreaper that is not dumpable: what it starts cannot use the control API nor read
    # its environment (process_guard.py); the orphans it adopts are reaped
    reaper = OrphanReaper() if guard_daemon_process() else None
    if reaper is not None:
        daemon.guarded_pid = os.getpid()
        daemon._tasks.append(asyncio.ensure_future(reaper.run()))
    try:
        try:
            await daemon.start()
        except BaseException:
            await daemon.shutdown()
            raise
        daemon.install_signal_handlers()
        if on_started is not None:
            on_started(daemon)
        try:
            await daemon.wait()
        finally:
            await daemon.shutdown()
    finally:
        if reaper is not None:  # what a predictor daemonized ends with the daemon
            await asyncio.to_thread(reaper.end_adopted, waited_by_others())


__all__ = ["CortexdError", "Daemon", "daemon_answers", "run_daemon"]
