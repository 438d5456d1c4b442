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

A replica gets none of the daemon's environment but what the runtime needs
(isolation.inherited_environment), a private folder outside the daemon's home (its spec,
readable by its user alone, and its TMPDIR, 0700: private_dir(), removed off the loop when it
stops), a HOME that persists across replica starts (its ~/.cache: api_home()), and, when the
daemon runs as root, a uid of its API's own (isolation.RunAs, replica_uids.py) or, where that
uid could not run it, the daemon's user with a notice; replica_of_peer() tells the control API
which connecting processes are a replica's, to refuse them (and the daemon refuses all its
descendants: process_guard.py).

A root daemon also puts each replica in cgroups of its own (cgroups.py): compute.mem and a
pids limit hold there, and an OOM kill shows as one. compute.cpu is not enforced here
(Cortex's request; the Docker backend makes it a limit); compute.gpu maps to
CUDA_VISIBLE_DEVICES from placement, with CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA numbers the GPUs
as NVML (placement) does. `isolation(api)` says, for `cortexd get API`, who the replicas run as
and which limits hold.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cortexd.backends.base import ReplicaInfo
from cortexd.backends.cgroups import Cgroups, Limits, ReplicaCgroup
from cortexd.backends.container_args import instance_for_home, pids_limit
from cortexd.backends.isolation import (
    ReplicaUser,
    RunAs,
    child_setup,
    inherited_environment,
    layered_environment,
    not_isolated_notice,
    read_dotenv,
    replica_paths,
    resolve_replica_user,
    unreadable_by,
)
from cortexd.backends.replica_uids import UidRegistry
from cortexd.errors import BackendError
from cortexd.home import write_text_nofollow
from cortexd.logfiles import (
    DEFAULT_FILES,
    DEFAULT_MAX_BYTES,
    RotatingLogWriter,
    read_tail,
)
from cortexd.procfs import cpu_seconds_by_session, processes_of, session_members, stat_fields
from cortexd.spec.model import APISpec

if TYPE_CHECKING:
    from cortexd.backends.environments import ProjectEnvironments

log = logging.getLogger("cortexd.process")

PUMP_CHUNK = 256 * 1024
RUNTIME_MODULE = "predictor_runtime"


PRIVATE_PREFIX = "cortexd-replica-"


def private_dir(replica_id: str, user: ReplicaUser) -> Path:
    """A new folder of the replica's own, in the system's temporary folder: its runtime spec
    (read-only) and its TMPDIR `tmp` (writable by the replica's user only). Mode 0711: the
    replica's user can reach both without listing it; nobody else can enter its TMPDIR."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{replica_id}-"))
    folder.chmod(0o711)
    tmp = folder / "tmp"
    tmp.mkdir(mode=0o700)
    if user.drops(os.getuid()):
        os.chown(tmp, user.uid, user.gid)
    return folder


def write_private(path: Path, text: str, user: ReplicaUser) -> None:
    """A new file readable by `user` alone (0400), from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    if user.drops(os.getuid()):
        os.chown(path, user.uid, user.gid)


def remove_private_dir(folder: Path | None) -> None:
    """(blocking: a predictor's TMPDIR can be large; stop() runs it in a thread)"""
    if folder is not None and folder.name.startswith(PRIVATE_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)


# a root daemon's replica HOMEs (next to its environment cache, settings.SHARED_ENV_CACHE):
# its own home is closed to the replicas' users. An isolated API's HOME is named by its uid
# (replica_uids.py), which belongs to that API for as long as its daemon's home exists.
SHARED_REPLICA_HOMES = Path("/var/cache/cortexd/replica-homes")


def default_homes_dir(user: ReplicaUser, daemon_uid: int) -> Path:
    """Where the APIs' persistent HOMEs live: shared for a root daemon with unprivileged
    replicas, else the user's cache folder (outside the daemon's home)."""
    if user.drops(daemon_uid):
        return SHARED_REPLICA_HOMES
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "cortexd" / "replica-homes"


def api_home(homes_dir: Path, name: str, user: ReplicaUser) -> Path:
    """The persistent HOME of an API's replicas (kept across replica starts, so ~/.cache, the
    Hugging Face and torch hub caches, is downloaded once): homes_dir/<name>, 0700, owned by
    the replicas' user (what an earlier owner left in it too); homes_dir itself 0711 (entered,
    never listed, by that user)."""
    homes_dir.mkdir(parents=True, exist_ok=True)
    homes_dir.chmod(0o711)
    home = homes_dir / name
    home.mkdir(mode=0o700, exist_ok=True)
    st = home.lstat()
    if home.is_symlink() or not home.is_dir():
        raise OSError(f"{home} is not a folder")
    if user.drops(os.getuid()) and (st.st_uid, st.st_gid) != (user.uid, user.gid):
        for path in [home, *home.rglob("*")]:
            os.chown(path, user.uid, user.gid, follow_symlinks=False)
    home.chmod(0o700)
    return home


def remove_homes(homes_dir: Path, names: list[str]) -> None:
    """(blocking) The HOMEs of uids given up (replica_uids.py drops them with their daemon)."""
    for name in names:
        path = homes_dir / name
        if not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


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


@dataclass
class _Child:
    info: ReplicaInfo
    process: asyncio.subprocess.Process
    log_path: Path
    pump: LogPump | None = None
    stopping: bool = False
    private_dir: Path | None = None  # the replica's spec and TMPDIR (private_dir())
    cgroup: ReplicaCgroup | None = None  # its limits (cgroups.py), a root daemon's


@dataclass(frozen=True)
class _APIIsolation:
    """What start() found for an API's replicas, for isolation()."""

    run_as: RunAs
    limits: dict[str, str]


class ProcessBackend:
    """ReplicaBackend running replicas as local processes."""

    name = "process"
    builds_images = False

    def __init__(self, run_dir: Path, log_dir: Path, host: str = "127.0.0.1", *,
                 log_max_bytes: int = DEFAULT_MAX_BYTES, log_files: int = DEFAULT_FILES,
                 replica_user: str | None = None, interpreter: str | None = None,
                 environments: ProjectEnvironments | None = None,
                 limits: Mapping[str, str] | None = None, homes_dir: Path | None = None,
                 uids: UidRegistry | None = None, owner: str | None = None,
                 notify: Callable[[str, str], None] | None = None):
        # where the APIs' persistent HOMEs are (api_home); None: default_homes_dir()
        self._homes_dir = Path(os.path.abspath(homes_dir)) if homes_dir is not None else None
        # absolute: the --spec argument is what reap_leftovers() recognises a replica by
        self._run_dir = Path(os.path.abspath(run_dir))
        self._log_dir = Path(os.path.abspath(log_dir))
        self._host = host
        self._log_rotation = (log_max_bytes, log_files)  # per replica: at most size x files on disk
        self._children: dict[str, _Child] = {}
        # the daemon whose replicas these are (its home): the uid registry's and cgroups' owner
        self._owner = owner or str(self._run_dir.parent)
        # who replicas run as (isolation.resolve_replica_user; resolved at the first start, so a
        # user that does not exist is that API's error, not the daemon's); None: a root
        # daemon's default, a uid per API from `uids`
        self._replica_user_setting = replica_user
        self._replica_user: ReplicaUser | None = None
        self._resolved = False
        self._uids = uids or UidRegistry(owner=self._owner)
        self._uids.on_dropped = self._drop_homes
        self._api_uids: dict[int, str] = {}  # uid -> api, of the isolated APIs started here
        self._leased: set[int] = set()  # uids of builds in progress (lease_build_user)
        self._isolation: dict[str, _APIIsolation] = {}
        self._notify = notify  # (message, api): a notice for the user, once per API and notice
        self._cgroups: Cgroups | None = None  # detected at the first start (or reap_leftovers)
        self._interpreter = interpreter or sys.executable
        # per-project Python environments (requirements.txt ...); None: every replica runs on
        # self._interpreter
        self._environments = environments
        if environments is not None:  # builds run project code: never as another API's uid
            environments.build_users = self
        self._limits = dict(limits or {})  # DaemonSettings.replica_limits(), into every replica

    async def collect_garbage(self, deployed: list[APISpec]) -> None:
        """At start: remove the cached environments no deployed API uses (but the newest few)."""
        if self._environments is not None:
            await self._environments.collect_garbage(deployed)

    def notices(self, spec: APISpec) -> list[str]:
        """predictor.image does nothing here: replicas run the cortexd runtime as local processes."""
        if not spec.predictor.image:
            return []
        return [f"{spec.source_file}:{spec.source_line}: api {spec.name!r}: predictor.image "
                f"({spec.predictor.image}) is ignored on the process backend: replicas run the cortexd "
                "runtime in local processes (the docker backend runs the image)"]

    async def ensure_image(self, spec: APISpec) -> None:
        """Build the project's environment (environments.py) if it needs one and has none yet."""
        if self._environments is not None:
            await self._environments.interpreter_for(spec)

    def preparing(self, api: str) -> tuple[str, str] | None:
        """(phase, detail) of what an API's replicas wait for, e.g. ("installing requirements",
        "collecting six==1.16.0 (requirements.txt line 2)"); None when nothing is in progress."""
        return self._environments.activity(api) if self._environments is not None else None

    def isolation(self, api: str) -> dict[str, Any] | None:
        """Who the API's replicas run as and which limits hold, for `cortexd get API` (None
        before its first replica start): {"runs_as", "isolated", "notice", "limits"}."""
        found = self._isolation.get(api)
        if found is None:
            return None
        return {"runs_as": found.run_as.describe(), "isolated": found.run_as.isolated,
                "notice": found.run_as.notice, "limits": dict(found.limits)}

    async def start(self, spec: APISpec, replica_id: str, gpu_ids: tuple[int, ...] = ()) -> ReplicaInfo:
        interpreter = (await self._environments.interpreter_for(spec)
                       if self._environments is not None else None) or self._interpreter
        run_as = await asyncio.to_thread(self.run_as, spec, interpreter)
        user = run_as.user
        limits = Limits(int(spec.compute.mem) if spec.compute.mem else None, pids_limit(spec))
        cgroups = await asyncio.to_thread(self._detect_cgroups)
        known = self._isolation.get(spec.name)
        self._isolation[spec.name] = _APIIsolation(run_as, {
            **cgroups.enforcement(limits),
            "disk": "not limited on the process backend (HOME and TMPDIR are on the host's disk)"})
        if run_as.notice and self._notify is not None and (known is None or known.run_as.notice != run_as.notice):
            self._notify(run_as.notice, spec.name)
        if run_as.isolated:
            self._api_uids[user.uid] = spec.name
        log_dir = self._log_dir / spec.name
        log_path = log_dir / f"{replica_id}.log"
        dotenv = read_dotenv(spec.project_dir, spec.name)
        private: Path | None = None
        cgroup: ReplicaCgroup | None = None
        writer: RotatingLogWriter | None = None
        read_fd = write_fd = -1
        process = None
        try:
            try:  # a full disk or a read-only home: a clear error, not a traceback
                self._run_dir.mkdir(parents=True, exist_ok=True)
                log_dir.mkdir(parents=True, exist_ok=True)
                # outside the daemon's home (0700), which a replica of another user could not enter
                private = private_dir(replica_id, user)
                home = api_home(self._homes_dir or default_homes_dir(user, os.getuid()),
                                str(user.uid) if run_as.isolated else spec.name, user)
                spec_file = private / f"{replica_id}.json"
                # readable by the replica's user alone (it holds predictor.config's values)
                write_private(spec_file, spec.runtime_spec().dumps(), user)
                writer = RotatingLogWriter(log_path, *self._log_rotation)
                cgroup = await asyncio.to_thread(cgroups.create, replica_id, limits)
                attach = cgroup.open_attach() if cgroup is not None else []
            except OSError as e:
                raise BackendError(
                    f"could not start a replica of api {spec.name!r}: cannot write its files "
                    f"({e.strerror or e}: {e.filename or self._run_dir})"
                ) from e
            port = free_loopback_port(self._host)
            env = replica_environment(spec, gpu_ids, os.environ, dotenv=dotenv,
                                      home=str(home), user=user.name, limits=self._limits,
                                      tmpdir=str(private / "tmp"))
            read_fd, write_fd = os.pipe()  # the child's stdout and stderr; LogPump reads it
            drop = user if user.drops(os.getuid()) else None
            try:
                process = await asyncio.create_subprocess_exec(
                    interpreter, "-m", RUNTIME_MODULE,
                    "--spec", str(spec_file), "--host", self._host, "--port", str(port),
                    cwd=spec.project_dir, env=env,
                    stdin=asyncio.subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                    start_new_session=True,  # own session and process group: workers stop with it
                    # into its cgroups, as its user, and it stops with the daemon (isolation.py)
                    preexec_fn=child_setup(drop, attach, sig=signal.SIGTERM),
                )
            except (OSError, subprocess.SubprocessError) as e:
                raise BackendError(f"could not start a replica of api {spec.name!r}: {e}") from e
            finally:
                os.close(write_fd)  # the child has it; end of file comes when the replica is gone
                write_fd = -1
                if cgroup is not None:
                    cgroup.close_attach()
            pump = LogPump(read_fd, writer, name=f"logs-{replica_id}")
            pump.start()
            read_fd = -1
            writer = None  # the pump closes it
            try:
                # the private folder's path: the next daemon recognises the replica by its --spec
                write_text_nofollow(self._pid_file(replica_id), f"{process.pid}\n{private}\n")
            except OSError as e:
                raise BackendError(
                    f"could not start a replica of api {spec.name!r}: cannot write its files "
                    f"({e.strerror or e}: {e.filename})"
                ) from e
        except BaseException:
            # a failed start leaves nothing behind: no process, folder, cgroup or descriptor
            if process is not None and process.returncode is None:
                self._signal_group(process.pid, signal.SIGKILL)
                await asyncio.shield(process.wait())
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if writer is not None:
                writer.close()
            remove_private_dir(private)
            if cgroup is not None:
                await asyncio.shield(asyncio.to_thread(cgroup.remove))
            raise
        info = ReplicaInfo(
            api=spec.name, replica_id=replica_id, spec_hash=spec.spec_hash, state="running",
            host=self._host, port=port, started_at=time.time(), gpu_ids=tuple(gpu_ids),
            extra={"pid": str(process.pid), "user": user.name},
        )
        self._children[replica_id] = _Child(info, process, log_path, pump, private_dir=private,
                                            cgroup=cgroup)
        return info

    # -- who replicas run as ---------------------------------------------------------------------
    def _explicit_user(self) -> ReplicaUser | None:
        """The --replica-user setting's user (None: a root daemon's default, a uid per API)."""
        if not self._resolved:
            self._replica_user = resolve_replica_user(self._replica_user_setting)
            self._resolved = True
        return self._replica_user

    def run_as(self, spec: APISpec, interpreter: str | None = None) -> RunAs:
        """(blocking) Who `spec`'s replicas run as (isolation.RunAs). A root daemon's default: a
        uid of the API's own when that uid can run the interpreter and read the project, else
        the daemon's user with a notice saying why and what to do. An explicit replica user that
        cannot read them is a BackendError with the path and the fix."""
        interpreter = os.path.abspath(interpreter or self._interpreter)
        explicit = self._explicit_user()
        if explicit is not None:
            if explicit.drops(os.getuid()):
                self._check_readable(spec, explicit, interpreter)
            return RunAs(explicit, isolated=False)
        root = ReplicaUser("root", 0, 0, (0,))
        problem = self._uids.problem()
        if problem is not None:
            return RunAs(root, False, f"api {spec.name!r}: replicas run as root, not isolated from "
                                      f"other APIs: {problem}. Or use the Docker backend.")
        try:
            uid = self._uids.assign(f"api:{spec.name}")
        except BackendError as e:
            return RunAs(root, False, f"api {spec.name!r}: replicas run as root, not isolated from "
                                      f"other APIs: {e}")
        blocked = self._unreachable(spec, uid, (uid,), interpreter)
        if blocked is not None:
            return RunAs(root, False, not_isolated_notice(spec.name, uid, *blocked, interpreter))
        return RunAs(ReplicaUser.dynamic(uid), True)

    def _unreachable(self, spec: APISpec, uid: int, gids: tuple[int, ...],
                     interpreter: str) -> tuple[str, str] | None:
        """The first path uid/gids cannot reach of what a replica needs, and which part it is
        of: ("python", path) for the interpreter (the venv's and the one it links to, with its
        standard library) and the runtime (its code and site-packages), ("project", path) for
        the project and its model folders; None when every one is reachable."""
        real = os.path.realpath(interpreter)
        paths = sysconfig.get_paths()
        python = [os.path.dirname(interpreter), os.path.dirname(real), paths["stdlib"],
                  paths["purelib"], paths["platlib"], RUNTIME_ROOT]
        blocked = unreadable_by(uid, gids, list(dict.fromkeys(python)), [interpreter, real])
        if blocked is not None:
            return "python", blocked
        blocked = unreadable_by(uid, gids, replica_paths(spec), [spec.predictor.path])
        return ("project", blocked) if blocked is not None else None

    def _check_readable(self, spec: APISpec, user: ReplicaUser, interpreter: str | None = None) -> None:
        """A BackendError naming the first path an explicit replica user cannot reach, and the fix."""
        interpreter = os.path.abspath(interpreter or self._interpreter)
        found = self._unreachable(spec, user.uid, user.groups or (user.gid,), interpreter)
        if found is None:
            return
        part, blocked = found
        if part == "python":
            what = (f" on the way to the Python interpreter {interpreter}; install cortexd in a Python "
                    "every user can run (under /usr/local or /opt, for example), or make the path "
                    f"traversable (`chmod o+x {blocked}`)")
        else:
            what = ("; make the project readable by that user (`chmod -R o+rX` on it and o+x on its "
                    "parent folders)")
        raise BackendError(
            f"api {spec.name!r}: its replicas run as user {user.name!r} (uid {user.uid}, set by "
            f"--replica-user) and that user cannot read {blocked}{what}. Or unset --replica-user "
            "(CORTEXD_REPLICA_USER): a root daemon then gives each API a uid of its own where it "
            "can, and runs it as root, saying so, where it cannot."
        )

    # -- environment builds: never as an API's uid --------------------------------------------
    def lease_build_user(self, spec: APISpec, interpreter: str) -> ReplicaUser | None:
        """(blocking) Who builds the environment of `spec`'s project: a fresh uid of its own
        when the API's replicas are isolated (end_build() gives it back), the explicit replica
        user when one is set, else None (the daemon's user, as the replicas)."""
        run_as = self.run_as(spec, interpreter)
        if not run_as.isolated:
            return run_as.user if run_as.user.drops(os.getuid()) else None
        uid = self._uids.lease()
        self._leased.add(uid)
        return ReplicaUser.dynamic(uid)

    def leases(self, user: ReplicaUser) -> bool:
        return user.uid in self._leased

    def end_build(self, user: ReplicaUser | None) -> None:
        """(blocking) After a build as a leased `user`: kill what it left running, give its uid back."""
        if user is None or user.uid not in self._leased:
            return
        self._leased.discard(user.uid)
        for _ in range(50):  # a build that forks while being killed: until none is left
            pids = processes_of(user.uid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)
        self._uids.release(user.uid)

    def _drop_homes(self, uids: list[int]) -> None:
        remove_homes(self._homes_dir or SHARED_REPLICA_HOMES, [str(u) for u in uids])

    def _detect_cgroups(self) -> Cgroups:
        if self._cgroups is None:
            self._cgroups = Cgroups.detect(instance_for_home(self._owner))
        return self._cgroups

    async def stop(self, replica_id: str, timeout: float = 10.0) -> None:
        child = self._children.get(replica_id)
        if child is None:
            return
        child.stopping = True
        proc = child.process
        if proc.returncode is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                self._signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        # workers that outlived their supervisor still belong to the group
        self._signal_group(proc.pid, signal.SIGKILL)
        self._children.pop(replica_id, None)
        await asyncio.to_thread(remove_private_dir, child.private_dir)  # off the loop: TMPDIR
        if child.cgroup is not None:  # (and what a predictor daemonized inside it)
            await asyncio.to_thread(child.cgroup.remove)
        try:
            self._pid_file(replica_id).unlink()
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
        privates: list[Path] = []
        for path in pid_files:
            try:
                # "<session id>\n<private folder>\n"; the folder holds <replica>.json
                sid_line, _, private = path.read_text().partition("\n")
                sid = int(sid_line.strip())
            except (OSError, ValueError):
                continue
            private = private.strip()
            if private and Path(private).name.startswith(PRIVATE_PREFIX):
                privates.append(Path(private))
                spec_file = str(Path(private) / f"{path.stem}.json")
            else:
                spec_file = str(path.with_suffix(".json"))
            if sid > 1:
                sids[sid] = spec_file
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
        for private in privates:
            remove_private_dir(private)
        self._detect_cgroups().reap()
        return sorted(killed)

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def replica_of_peer(self, pid: int, uid: int, proc: str = "/proc") -> str | None:
        """The replica a control-socket peer (SO_PEERCRED pid and uid) belongs to, else None.

        A peer is a replica's when it runs as the uid of an isolated API (a root daemon's
        replicas), as the explicit replica user (when that is not the daemon's), or when it is in
        a replica's session or descends from a replica's session leader (a predictor's
        subprocesses and workers).
        """
        leaders = {int(c.info.extra["pid"]): rid for rid, c in self._children.items()}
        if uid in self._api_uids:
            api = self._api_uids[uid]
            return next((rid for rid, c in self._children.items() if c.info.api == api), f"{api}-?")
        user = self._replica_user
        if user is not None and user.drops(os.getuid()) and uid == user.uid and leaders:
            return next(iter(leaders.values()))
        for _ in range(256):  # a bounded walk up the parent chain
            if pid <= 1:
                return None
            if pid in leaders and self._children[leaders[pid]].process.returncode is None:
                return leaders[pid]  # (a gone leader's pid may have been reused)
            fields = stat_fields(pid, proc)
            if fields is None:
                return None
            if int(fields[3]) in leaders:
                return leaders[int(fields[3])]
            pid = int(fields[1])
        return None

    async def list(self) -> list[ReplicaInfo]:
        out = []
        for child in self._children.values():
            code = child.process.returncode
            if code is None:
                out.append(child.info)
            else:
                oom = child.cgroup is not None and child.cgroup.oom_kills() > 0
                out.append(replace(child.info, state="exited", exit_code=code, oom_killed=oom))
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
