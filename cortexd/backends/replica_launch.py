"""Launching one process replica: its command line, its environment, its spawn under isolation.

A replica is `python -m predictor_runtime --spec F --port P` on an ephemeral loopback port,
in its own process group (so its worker processes stop with it); a one-process replica also
serves the gateway on a unix socket the daemon binds and passes down (`--unix-fd`,
replica_files.gateway_socket). Its stdout and stderr are
one pipe that a thread of the daemon (LogPump) copies into the replica's log, rotated by size
(cortexd/logfiles.py): a child writing straight into the file could not be rotated, and would
fill the disk. The pump reads a bounded chunk at a time and never touches the event loop; a
predictor that prints faster than the disk takes it waits on the pipe.

A replica gets none of the daemon's environment but what the runtime needs
(isolation.inherited_environment), its folders (replica_files.py: a private spec and TMPDIR,
a persistent HOME), its user and cgroups (isolation.child_setup, between fork and exec), and
the project at /mnt/project where the host allows (project_mount.py).
compute.gpu maps to CUDA_VISIBLE_DEVICES from placement, with CUDA_DEVICE_ORDER=PCI_BUS_ID so
CUDA numbers the GPUs as NVML (placement) does. run_dir/<replica>.pid names the replica's
session and private folder, so the next daemon recognises what a killed one left
(is_replica_process reads the command line back). The backend's bookkeeping (who runs as
whom, the replicas it keeps, stopping them) is process.py's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cortexd.backends.base import WorkerLaunch
from cortexd.backends.cgroups import Cgroups, Limits, ReplicaCgroup
from cortexd.backends.isolation import (
    ReplicaUser,
    RunAs,
    child_setup,
    inherited_environment,
    layered_environment,
    read_dotenv,
)
from cortexd.backends.project_mount import ProjectMount
from cortexd.backends.replica_files import (
    api_home,
    default_homes_dir,
    gateway_socket,
    private_dir,
    remove_private_dir,
    write_private,
)
from cortexd.errors import BackendError
from cortexd.home import write_text_nofollow
from cortexd.logfiles import RotatingLogWriter
from cortexd.spec.model import APISpec
from predictor_runtime.mnt_namespace import NAMESPACE_ENV, namespace_setup
from predictor_runtime.mnt_project import UNAVAILABLE_ENV

log = logging.getLogger("cortexd.process")

PUMP_CHUNK = 256 * 1024
RUNTIME_MODULE = "predictor_runtime"


def free_loopback_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


RUNTIME_ROOT = str(Path(__file__).resolve().parents[2])  # where predictor_runtime is imported from


def replica_environment(
    spec: APISpec, gpu_ids: tuple[int, ...], base: Mapping[str, str], *,
    dotenv: Mapping[str, str] | None = None, home: str | None = None, user: str | None = None,
    limits: Mapping[str, str] | None = None, tmpdir: str | None = None,
) -> dict[str, str]:
    """The environment of a replica process, from nothing but: the few variables of the daemon's
    environment `base` that the runtime needs (isolation.INHERITED), HOME (the API's persistent home),
    TMPDIR (the replica's private folder) and USER, then the API's `env` < the project's `.env`,
    then PYTHONPATH, the GPUs and the daemon's `limits` (DaemonSettings.replica_limits: the
    runtime enforces what the gateway does)."""
    env = inherited_environment(base)
    env.setdefault("PATH", os.defpath)
    if tmpdir:
        env["TMPDIR"] = tmpdir
    if home:
        env["HOME"] = home
    if user:
        env["USER"] = env["LOGNAME"] = user
    env.update(layered_environment(spec.predictor.env, dotenv or {}, {}))
    paths = [spec.predictor.python_path, spec.project_dir, RUNTIME_ROOT]
    if env.get("PYTHONPATH"):  # the API's own (env or .env), after the project and the runtime
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    # placement numbers GPUs as NVML does (PCI bus order); CUDA's default order is fastest first
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids) if gpu_ids else ""
    env.update(limits or {})
    return env


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



def command_line(interpreter: str, spec_file: Path, host: str, port: int, unix_fd: int = -1) -> list[str]:
    """A replica's argv; is_replica_process() recognises it by its module and --spec. `unix_fd`:
    the gateway's unix socket (replica_files.gateway_socket), passed down to serve on too."""
    argv = [interpreter, "-m", RUNTIME_MODULE, "--spec", str(spec_file), "--host", host, "--port", str(port)]
    return argv + ["--unix-fd", str(unix_fd)] if unix_fd >= 0 else argv


def is_replica_process(pid: int, spec_file: str, proc: str = "/proc") -> bool:
    """Whether `pid` runs predictor_runtime (or one of its modules: a job's worker) on `spec_file`
    (a replica's supervisor or worker process, or a job's worker)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    try:
        i = args.index(b"--spec")
    except ValueError:
        return False
    runtime = any(a == RUNTIME_MODULE.encode() or a.startswith(RUNTIME_MODULE.encode() + b".") for a in args)
    return runtime and args[i + 1:i + 2] == [os.fsencode(spec_file)]


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class Launched:
    """A replica process that started: what the backend keeps of it."""

    process: asyncio.subprocess.Process
    port: int
    log_path: Path
    pump: LogPump
    private_dir: Path  # the replica's spec and TMPDIR (replica_files.private_dir())
    cgroup: ReplicaCgroup | None  # its limits (cgroups.py), a root daemon's
    mount: ProjectMount | None = None  # what it has at /mnt/project (project_mount.py)
    socket: str = ""  # the unix socket it serves the gateway on, "" for none (replica_files.gateway_socket)


@dataclass
class _Held:
    """What a start holds so far; release() lets go of all of it when the start fails."""

    private: Path | None = None
    gateway_socket: socket.socket | None = None  # the daemon's copy, closed once the child has it
    writer: RotatingLogWriter | None = None
    cgroup: ReplicaCgroup | None = None
    read_fd: int = -1
    write_fd: int = -1
    process: asyncio.subprocess.Process | None = None

    async def release(self) -> None:
        # a failed start leaves nothing behind: no process, folder, cgroup or descriptor
        if self.process is not None and self.process.returncode is None:
            signal_group(self.process.pid, signal.SIGKILL)
            await asyncio.shield(self.process.wait())
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        if self.gateway_socket is not None:
            self.gateway_socket.close()
        if self.writer is not None:
            self.writer.close()
        remove_private_dir(self.private)
        if self.cgroup is not None:
            await asyncio.shield(asyncio.to_thread(self.cgroup.remove))


@dataclass(frozen=True)
class ReplicaLauncher:
    """Starts a backend's replica processes, each with its files, environment, user and cgroups."""

    run_dir: Path  # the pid files (pid_file())
    log_dir: Path
    host: str
    log_rotation: tuple[int, int]  # per replica: at most size x files on disk
    homes_dir: Path | None  # where the APIs' persistent HOMEs are (api_home); None: default_homes_dir()
    limits: dict[str, str]  # DaemonSettings.replica_limits(), into every replica

    def pid_file(self, replica_id: str) -> Path:
        return self.run_dir / f"{replica_id}.pid"

    async def launch(self, spec: APISpec, replica_id: str, gpu_ids: tuple[int, ...], interpreter: str,
                     run_as: RunAs, cgroups: Cgroups, limits: Limits,
                     mount: Callable[[], ProjectMount] | None = None,
                     worker: WorkerLaunch | None = None) -> Launched:
        """Spawn a replica of `spec` as `run_as.user` on `interpreter`, in cgroups of its own
        holding `limits`, with /mnt/project as `mount()` (blocking: it may probe the host, once)
        says, once its files are made: its namespace, or the reason it has none, for the runtime's
        note. `worker`: a one-off worker of the API instead (its module, spec, environment and log;
        no port). A failed start is a BackendError and leaves nothing behind."""
        user = run_as.user
        log_path = worker.log_path if worker is not None else self.log_dir / spec.name / f"{replica_id}.log"
        log_dir = log_path.parent
        runtime = worker.runtime_spec if worker is not None else spec.runtime_spec()
        dotenv = read_dotenv(spec.project_dir, spec.name)
        held = _Held()
        try:
            try:  # a full disk or a read-only home: a clear error, not a traceback
                self.run_dir.mkdir(parents=True, exist_ok=True)
                log_dir.mkdir(parents=True, exist_ok=True)
                # outside the daemon's home (0700), which a replica of another user could not enter
                held.private = private = private_dir(replica_id, user)
                home = api_home(self.homes_dir or default_homes_dir(user, os.getuid()),
                                str(user.uid) if run_as.isolated else spec.name, user)
                spec_file = private / f"{replica_id}.json"
                # readable by the replica's user alone (it holds predictor.config's values)
                write_private(spec_file, runtime.dumps(), user)
                held.writer = writer = RotatingLogWriter(log_path, *self.log_rotation)
                held.cgroup = cgroup = await asyncio.to_thread(cgroups.create, replica_id, limits)
                attach = cgroup.open_attach() if cgroup is not None else []
            except OSError as e:
                raise BackendError(
                    f"could not start a replica of api {spec.name!r}: cannot write its files "
                    f"({e.strerror or e}: {e.filename or self.run_dir})"
                ) from e
            port = free_loopback_port(self.host) if worker is None else 0
            env = replica_environment(spec, gpu_ids, os.environ, dotenv=dotenv,
                                      home=str(home), user=user.name, limits=self.limits,
                                      tmpdir=str(private / "tmp"))
            project_mount = await asyncio.to_thread(mount) if mount is not None else None
            namespace = self._project_mount(project_mount, env)
            if worker is None:
                held.gateway_socket = self._gateway_socket(spec, runtime.predictor.processes_per_replica, private)
                unix_fd = held.gateway_socket.fileno() if held.gateway_socket is not None else -1
                argv = command_line(interpreter, spec_file, self.host, port, unix_fd)
            else:
                env.update(worker.env)
                argv = [interpreter, "-m", worker.module, "--spec", str(spec_file)]
            held.process = process = await self._spawn(spec, argv, env, user, attach, held, namespace)
            pump = LogPump(held.read_fd, writer, name=f"logs-{replica_id}")
            pump.start()
            held.read_fd = -1
            held.writer = None  # the pump closes it
            try:
                # the private folder's path: the next daemon recognises the replica by its --spec
                write_text_nofollow(self.pid_file(replica_id), f"{process.pid}\n{private}\n")
            except OSError as e:
                raise BackendError(
                    f"could not start a replica of api {spec.name!r}: cannot write its files "
                    f"({e.strerror or e}: {e.filename})"
                ) from e
        except BaseException:
            await held.release()
            raise
        unix = held.gateway_socket.getsockname() if held.gateway_socket is not None else ""
        if held.gateway_socket is not None:
            held.gateway_socket.close()  # the replica has it
        return Launched(process, port, log_path, pump, private, cgroup, project_mount, socket=unix)

    @staticmethod
    def _gateway_socket(spec: APISpec, processes: int, private: Path) -> socket.socket | None:
        """The unix socket the gateway reaches a one-process replica on (several processes share
        the port with SO_REUSEPORT, which spreads connections over them; a unix socket has no
        such thing), or None: the port then, which always works."""
        if processes != 1:
            return None
        try:
            return gateway_socket(private)
        except OSError as e:
            log.warning("api %s: no unix socket for the gateway (%s); it uses the replica's port",
                        spec.name, e.strerror or e)
            return None

    @staticmethod
    def _project_mount(mount: ProjectMount | None, env: dict[str, str]) -> Callable[[], None] | None:
        """/mnt/project (project_mount.py): what the child runs before it drops (a mount namespace,
        made with the daemon's CAP_SYS_ADMIN), or the plan the runtime carries out at its start (a
        user namespace: predictor_runtime/mnt_namespace.py says why not in the child), or the
        reason there is none, for the runtime's note on a failed open."""
        if mount is None:
            return None
        if mount.unavailable:
            env[UNAVAILABLE_ENV] = mount.unavailable
        if mount.plan is None:
            return None
        if mount.plan.user_ids is not None:
            env[NAMESPACE_ENV] = mount.plan.dumps()
            return None
        try:
            return namespace_setup(mount.plan)
        except OSError:
            return None  # no mount namespaces here: the probe said so already

    @staticmethod
    async def _spawn(spec: APISpec, argv: list[str], env: dict[str, str], user: ReplicaUser,
                     attach: list[int], held: _Held,
                     namespace: Callable[[], None] | None) -> asyncio.subprocess.Process:
        """The replica's process, its output into a pipe (held.read_fd) that LogPump reads."""
        held.read_fd, held.write_fd = os.pipe()  # the child's stdout and stderr
        drop = user if user.drops(os.getuid()) else None
        unix = held.gateway_socket
        try:
            return await asyncio.create_subprocess_exec(
                *argv, cwd=spec.project_dir, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=held.write_fd, stderr=held.write_fd,
                start_new_session=True,  # own session and process group: workers stop with it
                pass_fds=(unix.fileno(),) if unix is not None else (),
                # into its cgroups, as its user, and it stops with the daemon (isolation.py)
                preexec_fn=child_setup(drop, attach, sig=signal.SIGTERM, namespace=namespace),
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise BackendError(f"could not start a replica of api {spec.name!r}: {e}") from e
        finally:
            os.close(held.write_fd)  # the child has it; end of file comes when the replica is gone
            held.write_fd = -1
            if held.cgroup is not None:
                held.cgroup.close_attach()
