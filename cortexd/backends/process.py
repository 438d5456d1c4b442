"""The process backend: each replica is a local child process running predictor_runtime.

The embedded default when no Docker engine answers, so a fresh machine serves
without Docker. A replica is `python -m predictor_runtime --spec F --port P` on
an ephemeral loopback port, in its own process group (so its worker processes
stop with it). Its stdout and stderr are one pipe that a thread of the daemon
(LogPump) copies into the replica's log, rotated by size (cortexd/logfiles.py):
a child writing straight into the file could not be rotated, and would fill the
disk. The pump reads a bounded chunk at a time and never touches the event loop;
a predictor that prints faster than the disk takes it waits on the pipe.
The spec hash is recorded with each child, so the reconciler re-reads observed
state from here like it does from Docker labels. Replicas die with the daemon: on Linux each
one gets SIGTERM when the daemon dies, even by SIGKILL (PR_SET_PDEATHSIG), and
run_dir/<replica>.pid lets the next daemon SIGKILL what is left anyway
(reap_leftovers(), called before it clears run_dir).

compute.cpu and compute.mem are not enforced here (best effort: stated in the
README); compute.gpu maps to CUDA_VISIBLE_DEVICES from placement, with
CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA numbers the GPUs as NVML (placement) does.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cortexd.backends.base import ReplicaInfo
from cortexd.errors import BackendError
from cortexd.logfiles import (
    DEFAULT_FILES,
    DEFAULT_MAX_BYTES,
    RotatingLogWriter,
    read_tail,
)
from cortexd.spec.model import APISpec

if TYPE_CHECKING:
    from cortexd.backends.environments import ProjectEnvironments

log = logging.getLogger("cortexd.process")

PUMP_CHUNK = 256 * 1024
RUNTIME_MODULE = "predictor_runtime"


def free_loopback_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def replica_environment(spec: APISpec, gpu_ids: tuple[int, ...], base: dict[str, str]) -> dict[str, str]:
    """The environment of a replica process: the daemon's, the API's `env`, PYTHONPATH, GPUs."""
    env = dict(base)
    env.update(spec.predictor.env)
    runtime_root = str(Path(__file__).resolve().parents[2])
    paths = [spec.predictor.python_path, spec.project_dir, runtime_root]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    # placement numbers GPUs as NVML does (PCI bus order); CUDA's default order is fastest first
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids) if gpu_ids else ""
    return env


_PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn that has the child receive `sig` when this process dies (Linux), else None.

    prctl(PR_SET_PDEATHSIG) survives exec and setsid, so it reaches the replica's
    supervisor even after a SIGKILL of the daemon. It fires when the *thread* that
    forked the child ends, so spawn from the event loop's thread (as start() does),
    never from a worker thread. Everything the child runs is prepared here: between
    fork and exec only the prctl call and getppid happen.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    signum, parent = int(sig), os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)  # the daemon died before prctl: the signal will never come

    return preexec


class LogPump:
    """Copies what a replica writes to its stdout/stderr pipe into its rotated log, on a thread.

    Ends when every process holding the pipe's write end has exited (end of file).
    A write that fails (disk full) drops that chunk, says so once in the daemon log,
    and goes on reading, so the replica never blocks on a full pipe.
    """

    def __init__(self, read_fd: int, writer: RotatingLogWriter, name: str):
        self._fd = read_fd
        self._writer = writer
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        failed = False
        try:
            while True:
                data = os.read(self._fd, PUMP_CHUNK)
                if not data:
                    return
                try:
                    self._writer.write(data)
                except OSError as e:
                    if not failed:
                        log.error("replica output to %s is lost: %s", self._writer.path, e)
                    failed = True
        finally:
            os.close(self._fd)
            self._writer.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@dataclass
class _Child:
    info: ReplicaInfo
    process: asyncio.subprocess.Process
    log_path: Path
    pump: LogPump | None = None
    stopping: bool = False


class ProcessBackend:
    """ReplicaBackend running replicas as local processes."""

    name = "process"

    def __init__(self, run_dir: Path, log_dir: Path, host: str = "127.0.0.1", *,
                 log_max_bytes: int = DEFAULT_MAX_BYTES, log_files: int = DEFAULT_FILES,
                 environments: ProjectEnvironments | None = None):
        # absolute: the --spec argument is what reap_leftovers() recognises a replica by
        self._run_dir = Path(os.path.abspath(run_dir))
        self._log_dir = Path(os.path.abspath(log_dir))
        self._host = host
        self._log_rotation = (log_max_bytes, log_files)  # per replica: at most size x files on disk
        self._children: dict[str, _Child] = {}
        # per-project Python environments (requirements.txt ...); None: every replica runs on
        # the daemon's interpreter
        self._environments = environments

    async def ensure_image(self, spec: APISpec) -> None:
        """Build the project's environment (environments.py) if it needs one and has none yet."""
        if self._environments is not None:
            await self._environments.interpreter_for(spec)

    def preparing(self, api: str) -> tuple[str, str] | None:
        """(phase, detail) of what an API's replicas wait for, e.g. ("installing requirements",
        "collecting six==1.16.0 (requirements.txt line 2)"); None when nothing is in progress."""
        return self._environments.activity(api) if self._environments is not None else None

    async def start(self, spec: APISpec, replica_id: str, gpu_ids: tuple[int, ...] = ()) -> ReplicaInfo:
        interpreter = (await self._environments.interpreter_for(spec)
                       if self._environments is not None else sys.executable)
        log_dir = self._log_dir / spec.name
        spec_file = self._run_dir / f"{replica_id}.json"
        log_path = log_dir / f"{replica_id}.log"
        try:  # a full disk or a read-only home: a clear error, not a traceback
            self._run_dir.mkdir(parents=True, exist_ok=True)
            log_dir.mkdir(parents=True, exist_ok=True)
            spec_file.write_text(json.dumps(spec.runtime_spec()))
            writer = RotatingLogWriter(log_path, *self._log_rotation)
        except OSError as e:
            raise BackendError(
                f"could not start a replica of api {spec.name!r}: cannot write its files "
                f"({e.strerror or e}: {e.filename or self._run_dir})"
            ) from e
        port = free_loopback_port(self._host)
        env = replica_environment(spec, gpu_ids, dict(os.environ))
        read_fd, write_fd = os.pipe()  # the child's stdout and stderr; LogPump reads it
        try:
            process = await asyncio.create_subprocess_exec(
                interpreter, "-m", RUNTIME_MODULE,
                "--spec", str(spec_file), "--host", self._host, "--port", str(port),
                cwd=spec.project_dir, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                start_new_session=True,  # own session and process group: workers stop with it
                preexec_fn=parent_death_signal(signal.SIGTERM),  # and it stops with the daemon
            )
        except (OSError, subprocess.SubprocessError) as e:
            os.close(read_fd)
            writer.close()
            raise BackendError(f"could not start a replica of api {spec.name!r}: {e}") from e
        finally:
            os.close(write_fd)  # the child has it; end of file comes when the replica is gone
        pump = LogPump(read_fd, writer, name=f"logs-{replica_id}")
        pump.start()
        try:
            self._pid_file(replica_id).write_text(f"{process.pid}\n")
        except OSError as e:
            self._signal_group(process.pid, signal.SIGKILL)
            await process.wait()
            raise BackendError(
                f"could not start a replica of api {spec.name!r}: cannot write its files "
                f"({e.strerror or e}: {e.filename})"
            ) from e
        info = ReplicaInfo(
            api=spec.name, replica_id=replica_id, spec_hash=spec.spec_hash, state="running",
            host=self._host, port=port, started_at=time.time(), gpu_ids=tuple(gpu_ids),
            extra={"pid": str(process.pid)},
        )
        self._children[replica_id] = _Child(info, process, log_path, pump)
        return info

    async def stop(self, replica_id: str, timeout: float = 10.0) -> None:
        child = self._children.get(replica_id)
        if child is None:
            return
        child.stopping = True
        proc = child.process
        if proc.returncode is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                self._signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        # workers that outlived their supervisor still belong to the group
        self._signal_group(proc.pid, signal.SIGKILL)
        self._children.pop(replica_id, None)
        for path in (self._run_dir / f"{replica_id}.json", self._pid_file(replica_id)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _pid_file(self, replica_id: str) -> Path:
        return self._run_dir / f"{replica_id}.pid"

    def reap_leftovers(self, wait: float = 5.0, proc: str = "/proc") -> list[int]:
        """SIGKILL the replicas a previous daemon on this run_dir left running; the pids killed.

        For a daemon that was SIGKILLed (or crashed) before stopping its replicas:
        call at start, before run_dir is cleared. Each run_dir/<replica>.pid names
        a replica's session; its processes are killed only when one of them is
        provably that replica (`python -m predictor_runtime --spec run_dir/<replica>.json`),
        so a pid the system has since given to something else is never touched.
        Waits up to `wait` seconds for them to be gone (ports and GPU memory freed).
        """
        try:
            pid_files = sorted(self._run_dir.glob("*.pid"))
        except OSError:
            return []
        sids: dict[int, str] = {}
        for path in pid_files:
            try:
                sid = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
            if sid > 1:
                sids[sid] = str(path.with_suffix(".json"))
        members = session_members(set(sids), proc)
        killed: list[int] = []
        killed_sids: set[int] = set()
        for sid, pids in members.items():
            if not any(is_replica_process(pid, sids[sid], proc) for pid in pids):
                continue  # the session id now belongs to something else
            log.warning("killing replica processes %s left by a previous daemon (%s)",
                        ", ".join(map(str, sorted(pids))), sids[sid])
            self._signal_group(sid, signal.SIGKILL)
            for pid in pids:  # members that left the group
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            killed.extend(pids)
            killed_sids.add(sid)
        deadline = time.monotonic() + wait
        while killed_sids and session_members(killed_sids, proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        return sorted(killed)

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def list(self) -> list[ReplicaInfo]:
        out = []
        for child in self._children.values():
            code = child.process.returncode
            if code is None:
                out.append(child.info)
            else:
                out.append(replace(child.info, state="exited", exit_code=code))
        return out

    async def cpu_seconds(self, replica_ids: list[str]) -> dict[str, float]:
        """CPU time (user + system, seconds) used so far by each replica's live processes."""
        sids = {int(c.info.extra["pid"]): rid for rid, c in self._children.items()
                if rid in replica_ids and c.process.returncode is None}
        by_sid = cpu_seconds_by_session(set(sids))
        return {rid: by_sid.get(sid, 0.0) for sid, rid in sids.items()}

    async def settle(self) -> None:
        """Nothing to wait for: start() registers a child before it returns to the loop."""

    async def logs(self, replica_id: str, tail: int | None = None) -> list[str]:
        child = self._children.get(replica_id)
        if child is None:
            return []
        if child.process.returncode is not None and child.pump is not None:
            # an exited replica's last words (its traceback) may still be in the pipe
            await asyncio.to_thread(child.pump.join, 2.0)
        return await asyncio.to_thread(read_tail, child.log_path, tail)

    def log_path(self, replica_id: str) -> str | None:
        child = self._children.get(replica_id)
        return str(child.log_path) if child else None

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(rid) for rid in list(self._children)))
        if self._environments is not None:
            await self._environments.close()  # builds in progress: their pip is stopped


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stats(proc: str = "/proc"):
    """(pid, fields after "comm)") of every process in /proc; one pass, vanished ones skipped.
    Fields: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12)."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        yield int(entry), fields


def cpu_seconds_by_session(sids: set[int], proc: str = "/proc") -> dict[int, float]:
    """{session id: utime+stime seconds of its live processes} (a replica is one session:
    its supervisor and the workers it forked)."""
    out: dict[int, float] = {}
    if not sids:
        return out
    for _, fields in _proc_stats(proc):
        sid = int(fields[3])
        if sid in sids:
            out[sid] = out.get(sid, 0.0) + (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


def session_members(sids: set[int], proc: str = "/proc") -> dict[int, list[int]]:
    """{session id: pids of its live (not zombie) processes}, for the sessions that have any."""
    out: dict[int, list[int]] = {}
    if not sids:
        return out
    for pid, fields in _proc_stats(proc):
        sid = int(fields[3])
        if sid in sids and fields[0] not in (b"Z", b"X"):
            out.setdefault(sid, []).append(pid)
    return out


def is_replica_process(pid: int, spec_file: str, proc: str = "/proc") -> bool:
    """Whether `pid` runs predictor_runtime on `spec_file` (a replica's supervisor or worker)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    try:
        i = args.index(b"--spec")
    except ValueError:
        return False
    return RUNTIME_MODULE.encode() in args and args[i + 1:i + 2] == [os.fsencode(spec_file)]
