"""The supervisor of a replica with processes_per_replica > 1.

It holds the port (bound, never listening, so nobody else takes it while
workers initialise), starts the workers as `python -m predictor_runtime
--worker N --control-fd FD`, and keeps one socketpair to each:

  worker -> "R"  its predictor __init__ finished
  supervisor -> "G"  every worker finished: start listening (SO_REUSEPORT)
  EOF either way     the other side is gone

so no worker accepts a connection before all are initialised (the readiness
rule of the package docstring), and workers never outlive the supervisor.

Exit codes: a worker failing to start -> the others are stopped, exit 1. A
worker dying later -> the others are stopped, exit 1 (the daemon restarts the
replica). SIGTERM/SIGINT -> workers drain their in-flight requests, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from predictor_runtime.contract import ReplicaLimits, RuntimeSpec
from predictor_runtime.inflight import INFLIGHT_FILE_ENV, remove_shared_gauge_file, shared_gauge_file
from predictor_runtime.process_setup import (
    bind_socket,
    guard_process,
    ignore_stop_signals,
    setup_logging,
)

log = logging.getLogger("predictor_runtime")

STOP_GRACE_EXTRA = 2.0  # workers drain for ReplicaLimits.drain_seconds; this much later they get killed


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process
    control: socket.socket


def supervise(spec_path: str, spec: RuntimeSpec, host: str, port: int) -> int:
    """Run processes_per_replica workers until SIGTERM or a failure; returns the exit code."""
    setup_logging("runtime")
    guard_process()
    processes = spec.predictor.processes_per_replica
    grace = ReplicaLimits.from_environ(os.environ, log.error).drain_seconds + STOP_GRACE_EXTRA
    try:
        holder = bind_socket(host, port, reuse_port=True)
    except OSError as e:
        log.error("error: cannot bind %s:%s: %s", host, port, e)
        return 1
    try:  # the workers' shared in-flight gauge, in a private folder removed when we exit
        gauge = shared_gauge_file(processes)
        os.environ[INFLIGHT_FILE_ENV] = gauge  # into every worker's environment (_worker_env)
    except OSError as e:
        log.warning("the in-flight gauge is per worker: cannot create its file (%s)", e)
        gauge = None
    try:
        return asyncio.run(_supervise(os.path.abspath(spec_path), host, port, processes, grace))
    finally:
        holder.close()
        if gauge is not None:
            remove_shared_gauge_file(gauge)


def _worker_env() -> dict[str, str]:
    # the workers must import this same package, however the supervisor found it
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, root])
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def _start_worker(index: int, spec_path: str, host: str, port: int, env: dict[str, str]) -> Worker:
    parent, child = socket.socketpair()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "predictor_runtime", "--spec", spec_path, "--host", host,
            "--port", str(port), "--worker", str(index), "--control-fd", str(child.fileno()),
            pass_fds=(child.fileno(),), env=env, stdin=asyncio.subprocess.DEVNULL)
    finally:
        child.close()  # only the worker holds its end: its exit is our EOF
    parent.setblocking(False)
    return Worker(index, process, parent)


async def _stop(workers: list[Worker], timeout: float) -> None:
    """SIGTERM every live worker, wait up to `timeout`, then SIGKILL the rest."""
    for w in workers:
        if w.process.returncode is None:
            try:
                w.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    waits = [asyncio.ensure_future(w.process.wait()) for w in workers]
    _, pending = await asyncio.wait(waits, timeout=timeout)
    if pending:
        for w in workers:
            if w.process.returncode is None:
                log.error("worker %d did not stop within %gs; killing it", w.index, timeout)
                try:
                    w.process.kill()
                except ProcessLookupError:
                    pass
        await asyncio.wait(pending)
    for w in workers:
        w.control.close()


async def _supervise(spec_path: str, host: str, port: int, processes: int, grace: float) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_wait = asyncio.ensure_future(stop.wait())

    env = _worker_env()
    workers = [await _start_worker(i, spec_path, host, port, env) for i in range(1, processes + 1)]
    log.info("started %d workers; waiting for each predictor's __init__", processes)

    # phase 1: every worker reports "R" (initialised), or one fails
    reports = {asyncio.ensure_future(loop.sock_recv(w.control, 1)): w for w in workers}
    pending = set(reports)
    while pending:
        done, _ = await asyncio.wait(pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if stop_wait in done:
            ignore_stop_signals(loop)
            for t in pending:
                t.cancel()
            log.info("stop requested before the workers were ready")
            await _stop(workers, grace)
            return 0
        for t in pending & done:  # the workers' reports (stop_wait is not done)
            pending.discard(t)
            w = reports[t]
            try:
                said = t.result()
            except OSError:
                said = b""
            if said != b"R":
                for other in pending:
                    other.cancel()
                code = await w.process.wait()
                log.error("error: worker %d failed to start (exit code %s); stopping the other workers",
                          w.index, code)
                await _stop(workers, grace)
                return 1

    # phase 2: all initialised -> let every worker listen
    for w in workers:
        try:
            await loop.sock_sendall(w.control, b"G")
        except OSError:
            pass  # it died meanwhile: noticed just below
    log.info("all %d workers initialised; serving", processes)

    exits = {asyncio.ensure_future(w.process.wait()): w for w in workers}
    ended, _ = await asyncio.wait(set(exits) | {stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if stop_wait in ended:
        ignore_stop_signals(loop)
        await _stop(workers, grace)
        codes = {w.index: w.process.returncode for w in workers}
        failed = {i: c for i, c in codes.items() if c != 0}
        if failed:
            log.error("workers exited with errors while stopping: %s", failed)
            return 1
        log.info("stopped")
        return 0
    dead = [w for t, w in exits.items() if t in ended]
    for w in dead:
        log.error("error: worker %d exited unexpectedly (exit code %s); stopping the replica "
                  "so that it is restarted", w.index, w.process.returncode)
    await _stop(workers, grace)
    return 1
