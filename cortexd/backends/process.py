"""The process backend: each replica is a local child process running predictor_runtime.

The embedded default when no Docker engine answers, so a fresh machine serves
without Docker. A replica is `python -m predictor_runtime --spec F --port P` on
an ephemeral loopback port, in its own process group (so its worker processes
stop with it), its output appended to a per-replica log file. The spec hash is
recorded with each child, so the reconciler re-reads observed state from here
like it does from Docker labels. Replicas die with the daemon.

compute.cpu and compute.mem are not enforced here (best effort: stated in the
README); compute.gpu maps to CUDA_VISIBLE_DEVICES from placement, with
CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA numbers the GPUs as NVML (placement) does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from cortexd.backends.base import ReplicaInfo
from cortexd.errors import BackendError
from cortexd.spec.model import APISpec

LOG_TAIL_BYTES = 256 * 1024


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


@dataclass
class _Child:
    info: ReplicaInfo
    process: asyncio.subprocess.Process
    log_path: Path
    stopping: bool = False


class ProcessBackend:
    """ReplicaBackend running replicas as local processes."""

    name = "process"

    def __init__(self, run_dir: Path, log_dir: Path, host: str = "127.0.0.1"):
        self._run_dir = Path(run_dir)
        self._log_dir = Path(log_dir)
        self._host = host
        self._children: dict[str, _Child] = {}

    async def ensure_image(self, spec: APISpec) -> None:
        return None

    async def start(self, spec: APISpec, replica_id: str, gpu_ids: tuple[int, ...] = ()) -> ReplicaInfo:
        log_dir = self._log_dir / spec.name
        spec_file = self._run_dir / f"{replica_id}.json"
        log_path = log_dir / f"{replica_id}.log"
        try:  # a full disk or a read-only home: a clear error, not a traceback
            self._run_dir.mkdir(parents=True, exist_ok=True)
            log_dir.mkdir(parents=True, exist_ok=True)
            spec_file.write_text(json.dumps(spec.runtime_spec()))
            log = open(log_path, "ab", buffering=0)
        except OSError as e:
            raise BackendError(
                f"could not start a replica of api {spec.name!r}: cannot write its files "
                f"({e.strerror or e}: {e.filename or self._run_dir})"
            ) from e
        port = free_loopback_port(self._host)
        env = replica_environment(spec, gpu_ids, dict(os.environ))
        with log:
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "predictor_runtime",
                    "--spec", str(spec_file), "--host", self._host, "--port", str(port),
                    cwd=spec.project_dir, env=env,
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True,  # own process group: workers stop with it
                )
            except OSError as e:
                raise BackendError(f"could not start a replica of api {spec.name!r}: {e}") from e
        info = ReplicaInfo(
            api=spec.name, replica_id=replica_id, spec_hash=spec.spec_hash, state="running",
            host=self._host, port=port, started_at=time.time(), gpu_ids=tuple(gpu_ids),
            extra={"pid": str(process.pid)},
        )
        self._children[replica_id] = _Child(info, process, log_path)
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
        try:
            (self._run_dir / f"{replica_id}.json").unlink()
        except FileNotFoundError:
            pass

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

    async def logs(self, replica_id: str, tail: int | None = None) -> list[str]:
        child = self._children.get(replica_id)
        if child is None:
            return []
        return read_log_tail(child.log_path, tail)

    def log_path(self, replica_id: str) -> str | None:
        child = self._children.get(replica_id)
        return str(child.log_path) if child else None

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(rid) for rid in list(self._children)))


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds_by_session(sids: set[int], proc: str = "/proc") -> dict[int, float]:
    """{session id: utime+stime seconds of its live processes} (a replica is one session:
    its supervisor and the workers it forked). One pass over /proc."""
    out: dict[int, float] = {}
    if not sids:
        return out
    try:
        entries = os.listdir(proc)
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        # after "comm)": state ppid pgrp session ... utime(12) stime(13)
        sid = int(fields[3])
        if sid in sids:
            out[sid] = out.get(sid, 0.0) + (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


def read_log_tail(path: Path, tail: int | None) -> list[str]:
    """The last `tail` lines of a log file (all when None), reading at most the end of it."""
    try:
        with open(path, "rb") as f:
            if tail is not None:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if tail is None:
        return lines
    return list(deque(lines, maxlen=tail))
