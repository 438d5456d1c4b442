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
import logging
import os
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator, Sequence

import aiohttp

from cortexd import __version__
from cortexd.backends.process import ProcessBackend
from cortexd.daemon import control
from cortexd.daemon.autoscaler import Autoscaler
from cortexd.daemon.events import EventLog
from cortexd.daemon.logclock import LogClock
from cortexd.daemon.gpus import GPUPlacer
from cortexd.daemon.reconciler import Reconciler
from cortexd.daemon.watcher import ProjectWatcher, api_digest, project_files
from cortexd.errors import (
    BackendUnavailable,
    CortexdError,
    DaemonAlreadyRunning,
    UnknownAPI,
)
from cortexd.gateway.proxy import Gateway
from cortexd.gpu import inventory_json
from cortexd.logfiles import START, Position, read_history, read_new, read_since
from cortexd.settings import DaemonSettings
from cortexd.spec import APISpec, load_config

log = logging.getLogger("cortexd")


async def daemon_answers(socket_path: Path, timeout: float = 1.0) -> bool:
    """True if a daemon answers on the control socket (a stale socket file does not)."""
    if not socket_path.exists():
        return False
    try:
        conn = aiohttp.UnixConnector(path=str(socket_path))
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get("http://cortexd/status") as resp:
                return resp.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


def _build_progress(events: EventLog):
    """Image build output: every line to the daemon log, the milestones to the event log."""

    def progress(line: str) -> None:
        text = line.split("] ", 1)[1] if line.startswith("[") and "] " in line else line
        if text.startswith(("building ", "built ", "pulling ", "notice: ", "Step ")):
            events.add(text if len(text) <= 160 else text[:157] + "...",
                       level="warning" if text.startswith("notice: ") else "info")
        else:
            log.info("build: %s", line)

    return progress


async def choose_backend(settings: DaemonSettings, events: EventLog):
    """The replica backend for settings.backend (auto: Docker when an engine answers)."""
    wanted = settings.backend
    if wanted not in ("auto", "process", "docker"):
        raise BackendUnavailable(f"unknown backend {wanted!r}; choose auto, process or docker")
    if wanted in ("docker", "auto"):
        from cortexd.backends.docker import DockerBackend, instance_for_home

        problem = await asyncio.to_thread(DockerBackend.probe)
        if problem is None:
            return DockerBackend(
                instance=instance_for_home(settings.home), base_image=settings.base_image,
                progress=_build_progress(events), log_dir=settings.log_dir,
                log_max_bytes=settings.log_max_bytes, log_files=settings.log_files,
            )
        if wanted == "docker":
            raise BackendUnavailable(problem)
        events.add(f"{problem.splitlines()[0]} -- using the process backend", level="warning")
    return ProcessBackend(settings.run_dir, settings.log_dir, host="127.0.0.1",
                          log_max_bytes=settings.log_max_bytes, log_files=settings.log_files)


def with_project_digests(specs: Sequence[APISpec], config_files: Sequence[str] = ()) -> list[APISpec]:
    """Fold each API's project-file digest into its spec hash: a code edit rolls that API.

    The configuration files themselves are left out: what they say about an API is
    already in its spec, so an edit to one API's entry rolls that API only.
    """
    files = {d: project_files(d) for d in {s.project_dir for s in specs}}
    configs = {str(Path(f).resolve()) for f in config_files}
    out = []
    for spec in specs:
        others = {o.predictor.path for o in specs
                  if o.project_dir == spec.project_dir and o.predictor.path != spec.predictor.path}
        digest = api_digest(files[spec.project_dir], exclude=others | configs)
        out.append(replace(spec, raw={**spec.raw, "_project_digest": digest}))
    return out


class Daemon:
    def __init__(self, settings: DaemonSettings, paths: Sequence[str], *, backend=None):
        self.settings = settings
        self.paths = [str(Path(p).resolve()) for p in paths]
        self.events = EventLog(time.time)
        self.backend = backend
        self.gateway: Gateway | None = None
        self.reconciler: Reconciler | None = None
        self.placer: GPUPlacer | None = None
        self.started_at = time.time()
        self.config_files: list[str] = []
        self.config_error: str | None = None
        self.notices: list[str] = []
        self._control: aiohttp.web.AppRunner | None = None
        self._metrics: aiohttp.web.AppRunner | None = None  # the admin port (Prometheus)
        self.watcher: ProjectWatcher | None = None
        self.autoscaler: Autoscaler | None = None
        self.log_clock = LogClock(settings.log_dir)  # for `logs --since`
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self._config_lock = asyncio.Lock()  # reload, deploy and delete apply one at a time
        self._deleted: set[str] = set()  # `cortexd delete`d; file saves do not bring them back
        self._signals = 0

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        s.check_socket_path()  # before anything starts: the control socket must be bindable
        s.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if await daemon_answers(s.socket_path):
            raise DaemonAlreadyRunning(
                f"a cortexd daemon is already running (control socket {s.socket_path}); "
                "use `cortexd deploy PATH` to change what it serves, or `cortexd down` first"
            )
        loaded = load_config(self.paths)  # ConfigError aborts the start
        if self.backend is None:
            self.backend = await choose_backend(s, self.events)
        # replica processes a killed daemon left behind hold ports and GPUs: end them first
        # (whatever backend serves now: the previous daemon may have run processes)
        reaper = self.backend if isinstance(self.backend, ProcessBackend) else ProcessBackend(s.run_dir, s.log_dir)
        reaped = await asyncio.to_thread(reaper.reap_leftovers)
        if reaped:
            self.events.add(f"stopped {len(reaped)} replica process(es) left by a previous daemon "
                            f"(pids {', '.join(map(str, reaped))})", level="warning")
        if isinstance(self.backend, ProcessBackend):
            shutil.rmtree(s.log_dir, ignore_errors=True)  # logs of a previous run's replicas
            shutil.rmtree(s.run_dir, ignore_errors=True)
        self.gateway = Gateway(
            s.host, max_body_size=s.max_body_size, no_replica_wait=s.no_replica_wait,
            upstream_timeout=s.upstream_timeout,
        )
        self.placer = GPUPlacer()
        self.reconciler = Reconciler(self.backend, self.gateway, s, self.events, placer=self.placer)
        self._record_config(loaded)
        await self.reconciler.apply(await asyncio.to_thread(with_project_digests, loaded.apis, loaded.files))
        self._control = await control.serve(self, str(s.socket_path))
        self._metrics = await control.serve_metrics(self, s.metrics_port)
        self._start_watcher()
        s.pid_path.write_text(str(os.getpid()))
        self.autoscaler = Autoscaler(self.reconciler, self.gateway, sample_interval=s.sample_interval,
                                     tick=s.autoscale_tick)
        self._tasks.append(asyncio.ensure_future(self.reconciler.run()))
        self._tasks.append(asyncio.ensure_future(self.autoscaler.run()))
        self._tasks.append(asyncio.ensure_future(self.log_clock.run()))
        self.events.add(
            f"cortexd {__version__} started (backend: {self.backend.name}, pid {os.getpid()})"
        )

    def _record_config(self, loaded) -> None:
        self.config_files = list(loaded.files)
        self.config_error = None
        self.notices = list(loaded.notices)
        for notice in loaded.notices:
            self.events.add(notice, level="warning")

    def _start_watcher(self) -> None:
        if self.watcher is not None:
            asyncio.ensure_future(self.watcher.stop())
        roots = {str(Path(p) if Path(p).is_dir() else Path(p).parent) for p in self.paths}
        roots |= {str(Path(f).parent) for f in self.config_files}
        self.watcher = ProjectWatcher(roots, self.reload, debounce=self.settings.debounce)
        self.watcher.start()

    async def reload(self, changed: Sequence[str] = ()) -> None:
        """A watched file changed: load and validate, then apply; a broken edit keeps the old state."""
        async with self._config_lock:
            try:
                loaded = load_config(self.paths)
                specs = await asyncio.to_thread(with_project_digests, loaded.apis, loaded.files)
                # APIs deleted with `cortexd delete` stay deleted until the next deploy
                await self.reconciler.apply([s for s in specs if s.name not in self._deleted])
            except CortexdError as e:  # ConfigError, or e.g. a new local_port that is taken
                self.config_error = str(e)
                self.events.add(f"configuration rejected; the previous version keeps serving. {e}",
                                level="error")
                return
            except Exception as e:  # never silent: the watcher task would swallow it
                log.exception("reloading the configuration failed")
                self.config_error = f"reloading failed: {type(e).__name__}: {e}"
                self.events.add(f"{self.config_error}; the previous version keeps serving", level="error")
                return
            self._record_config(loaded)

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
                self.reconciler.settings = self.settings
                self.reconciler.forced = True
            if self.gateway is not None:
                self.gateway.force_close()

    def request_shutdown(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # stop accepting, drain in-flight, then stop replicas; cleanup is shielded so a
        # second signal cannot leave replicas behind
        async def cleanup() -> None:
            if self.gateway is not None:
                await self.gateway.close(drain_timeout=self.settings.drain_timeout)
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

    async def deploy(self, paths: Sequence[str]) -> list[str]:
        resolved = [str(Path(p).resolve()) for p in paths]
        async with self._config_lock:
            loaded = load_config(resolved)
            await self.reconciler.apply(
                await asyncio.to_thread(with_project_digests, loaded.apis, loaded.files))
            # only an applied configuration replaces what is watched and shown
            self.paths = resolved
            self._deleted.clear()
            self._record_config(loaded)
            self._start_watcher()
        self.events.add(f"configuration applied: {len(loaded.apis)} api(s)")
        return list(loaded.notices)

    async def delete_api(self, name: str) -> None:
        async with self._config_lock:
            if name not in self.reconciler.apis:
                raise UnknownAPI(self._unknown(name))
            specs = [s.spec for n, s in self.reconciler.apis.items() if n != name]
            await self.reconciler.apply(specs)
            self._deleted.add(name)

    def _unknown(self, name: str) -> str:
        names = ", ".join(sorted(self.reconciler.apis)) or "none"
        return f"no api named {name!r} (apis: {names})"

    def snapshot(self) -> dict:
        wall, mono = time.time(), time.monotonic()
        rec = self.reconciler
        return {
            "daemon": {
                "version": __version__,
                "pid": os.getpid(),
                "backend": self.backend.name if self.backend else None,
                "host": self.settings.host,
                "uptime_s": round(wall - self.started_at, 1),
                "config_files": self.config_files,
                "config_error": self.config_error,
                "notices": self.notices,
                "metrics_url": (f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
                                if self._metrics is not None else None),
            },
            "apis": [
                {**rec.api_snapshot(state, wall, mono),
                 "url": self._url(state.spec.networking.local_port, state.spec.networking.endpoint)}
                for state in sorted(rec.apis.values(), key=lambda s: s.spec.name)
            ],
            "events": [e.to_json() for e in self.events.recent(50)],
            "gpus": inventory_json(self.placer.inventory()) if self.placer else None,
        }

    def _url(self, port: int, endpoint: str) -> str:
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}{endpoint}"

    # -- logs -------------------------------------------------------------------------------

    def log_sources(self, name: str) -> list[tuple[str, str | None]]:
        """(replica_id, log file or None) for the API's current replicas and the most recent
        dead ones (their tracebacks are what a user looks for)."""
        if name not in self.reconciler.apis:
            raise UnknownAPI(self._unknown(name))
        sources: dict[str, str | None] = {}
        api_dir = self.settings.log_dir / name
        if api_dir.is_dir():
            files = sorted(api_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
            for f in files[-8:]:
                sources[f.stem] = str(f)
        for info in self.reconciler.observed.values():
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
                lines, positions[rid] = await asyncio.to_thread(_history, path, tail, start)
            else:
                lines = await self.backend.logs(rid, tail=tail)
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
            for rid, path in self.log_sources(name) if name in self.reconciler.apis else []:
                if path is not None and rid not in positions:
                    positions[rid] = START
                    sources.append((rid, path))
            followed = [(rid, path, positions[rid]) for rid, path in sources if path is not None]
            busy = False
            for rid, lines, positions[rid] in await asyncio.to_thread(_read_new_all, followed):
                busy = busy or bool(lines)
                for line in lines:
                    yield f"{rid} | {line}"


def _history(path: str, tail: int | None, since: Position | None) -> tuple[list[str], Position]:
    if since is not None:
        return read_since(path, since)
    return read_history(path, tail)


def _read_new_all(followed: list[tuple[str, str, Position]]) -> list[tuple[str, list[str], Position]]:
    return [(rid, *read_new(path, at)) for rid, path, at in followed]


async def run_daemon(settings: DaemonSettings, paths: Sequence[str], *, on_started=None) -> None:
    """Run a daemon until it is asked to stop (used by the CLI, foreground and detached)."""
    daemon = Daemon(settings, paths)
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


__all__ = ["Daemon", "run_daemon", "daemon_answers", "choose_backend", "CortexdError"]
