"""The process backend: each replica is a local child process running predictor_runtime.

The embedded default when no Docker engine answers, so a fresh machine serves
without Docker. This module is the backend's bookkeeping: who an API's replicas run
as, the replicas it started (their spec hash is recorded with each child, so the
reconciler re-reads observed state from here like it does from Docker labels), their
logs, CPU time and exit, stopping them, and what a killed daemon left. Starting one
replica (command line, environment, files, spawn under isolation) is replica_launch.py's;
its folders (a private spec and TMPDIR, a persistent HOME) are replica_files.py's.

Replicas die with the daemon: on Linux each one gets SIGTERM when the daemon dies, even by
SIGKILL (PR_SET_PDEATHSIG), and run_dir/<replica>.pid lets the next daemon SIGKILL what is
left anyway (reap_leftovers(), called before it clears run_dir).

When the daemon runs as root, a replica runs as a uid of its API's own (isolation.RunAs,
replica_uids.py) or, where that uid could not run it, the daemon's user with a notice;
replica_of_peer() tells the control API which connecting processes are a replica's, to
refuse them (and the daemon refuses all its descendants: process_guard.py).

A root daemon also puts each replica in cgroups of its own (cgroups.py): compute.mem and a
pids limit hold there, and an OOM kill shows as one. compute.cpu is not enforced here
(Cortex's request; the Docker backend makes it a limit); compute.gpu maps to
CUDA_VISIBLE_DEVICES from placement (replica_launch.replica_environment). `isolation(api)`
says, for `cortexd get API`, who the replicas run as, which limits hold, and what they have at
/mnt/project, where Cortex put the project (a mount namespace per replica where the host allows:
project_mount.py, mount_namespace.py).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import os
import signal
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cortexd.backends.base import ReplicaInfo, Worker, WorkerExit, WorkerLaunch
from cortexd.backends.cgroups import Cgroups, Limits, ReplicaCgroup
from cortexd.backends.container_args import instance_for_home, pids_limit
from cortexd.backends.isolation import (
    ReplicaUser,
    RunAs,
    not_isolated_notice,
    replica_paths,
    resolve_replica_user,
    unreadable_by,
)
from cortexd.backends.mount_namespace import ReplicaMounts
from cortexd.backends.project_mount import ProjectMount, unavailable_notice
from cortexd.backends.replica_files import (
    PRIVATE_PREFIX,
    SHARED_REPLICA_HOMES,
    remove_homes,
    remove_private_dir,
)
from cortexd.backends.replica_launch import (
    RUNTIME_ROOT,
    Launched,
    LogPump,
    ReplicaLauncher,
    is_replica_process,
    signal_group,
)
from cortexd.backends.replica_uids import UidRegistry
from cortexd.errors import BackendError
from cortexd.logfiles import DEFAULT_FILES, DEFAULT_MAX_BYTES, read_tail
from cortexd.procfs import cpu_seconds_by_session, processes_of, session_members, stat_fields
from cortexd.spec.model import APISpec

if TYPE_CHECKING:
    from cortexd.backends.environments import ProjectEnvironments

log = logging.getLogger("cortexd.process")


@dataclass
class _Child:
    info: ReplicaInfo
    process: asyncio.subprocess.Process
    log_path: Path
    pump: LogPump | None = None
    stopping: bool = False
    private_dir: Path | None = None  # the replica's spec and TMPDIR (replica_files.private_dir())
    cgroup: ReplicaCgroup | None = None  # its limits (cgroups.py), a root daemon's


@dataclass(frozen=True)
class _APIIsolation:
    """What start() found for an API's replicas, for isolation()."""

    run_as: RunAs
    limits: dict[str, str]
    mount: ProjectMount | None = None


class ProcessWorker:
    """A worker process (start_worker): its end, and what it held removed once it ended."""

    def __init__(self, name: str, launched: Launched, pid_file: Path):
        self.name = name
        self.pid: int | None = launched.process.pid
        self._launched = launched
        self._pid_file = pid_file
        self._exit: WorkerExit | None = None

    async def wait(self) -> WorkerExit:
        launched = self._launched
        code = await launched.process.wait()
        if self._exit is None:
            signal_group(launched.process.pid, signal.SIGKILL)  # what it left in its session
            oom = launched.cgroup is not None and await asyncio.to_thread(launched.cgroup.oom_kills) > 0
            self._exit = WorkerExit(code, oom)
            await asyncio.to_thread(launched.pump.join, 2.0)  # its last words, in its log
            await asyncio.to_thread(remove_private_dir, launched.private_dir)
            if launched.cgroup is not None:
                await asyncio.to_thread(launched.cgroup.remove)
            self._pid_file.unlink(missing_ok=True)
        return self._exit

    async def stop(self, timeout: float = 5.0) -> None:
        process = self._launched.process
        if process.returncode is None:
            signal_group(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                signal_group(process.pid, signal.SIGKILL)
        await self.wait()


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
        self._host = host
        # how each replica starts: its log (at most size x files on disk per replica), its HOME,
        # and DaemonSettings.replica_limits() in its environment
        self._launcher = ReplicaLauncher(self._run_dir, Path(os.path.abspath(log_dir)), host,
                                         (log_max_bytes, log_files), self._homes_dir, dict(limits or {}))
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
        self._mounts = ReplicaMounts(self._interpreter)  # /mnt/project (project_mount.py)
        # per-project Python environments (requirements.txt ...); None: every replica runs on
        # self._interpreter
        self._environments = environments
        if environments is not None:  # builds run project code: never as another API's uid
            environments.build_users = self

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
                "notice": found.run_as.notice, "limits": dict(found.limits),
                **(found.mount.describe() if found.mount is not None else {})}

    async def _prepare(self, spec: APISpec) -> tuple[str, RunAs, Cgroups, Limits, Callable[[], ProjectMount]]:
        """What a start of `spec`'s replicas (or workers) needs: the interpreter of its environment,
        who runs it (recorded for isolation(), a notice said once), its cgroups and limits, and the
        /mnt/project probe."""
        interpreter = (await self._environments.interpreter_for(spec)
                       if self._environments is not None else None) or self._interpreter
        run_as = await asyncio.to_thread(self.run_as, spec, interpreter)
        user = run_as.user
        limits = Limits(int(spec.compute.mem) if spec.compute.mem else None, pids_limit(spec))
        cgroups = await asyncio.to_thread(self._detect_cgroups)
        known = self._isolation.get(spec.name)
        self._isolation[spec.name] = _APIIsolation(run_as, {
            **cgroups.enforcement(limits),
            "disk": "not limited on the process backend (HOME and TMPDIR are on the host's disk)"},
            known.mount if known is not None else None)
        if run_as.notice and self._notify is not None and (known is None or known.run_as.notice != run_as.notice):
            self._notify(run_as.notice, spec.name)
        if run_as.isolated:
            self._api_uids[user.uid] = spec.name
        mount = functools.partial(self._mounts.for_api, spec.project_dir, replica_paths(spec),
                                  user.drops(os.getuid()))
        return interpreter, run_as, cgroups, limits, mount

    async def start(self, spec: APISpec, replica_id: str, gpu_ids: tuple[int, ...] = ()) -> ReplicaInfo:
        interpreter, run_as, cgroups, limits, mount = await self._prepare(spec)
        launched = await self._launcher.launch(spec, replica_id, gpu_ids, interpreter, run_as, cgroups, limits,
                                               mount)
        self._said_mount(spec.name, launched.mount)
        info = ReplicaInfo(
            api=spec.name, replica_id=replica_id, spec_hash=spec.spec_hash, state="running",
            host=self._host, port=launched.port, started_at=time.time(), gpu_ids=tuple(gpu_ids),
            extra={"pid": str(launched.process.pid), "user": run_as.user.name}, socket=launched.socket,
        )
        self._children[replica_id] = _Child(info, launched.process, launched.log_path, launched.pump,
                                            private_dir=launched.private_dir, cgroup=launched.cgroup)
        return info

    async def start_worker(self, spec: APISpec, launch: WorkerLaunch) -> Worker:
        """A worker of `spec` started as its replicas are (_prepare: the same environment, user,
        cgroups with the API's limits, /mnt/project), reaching the daemon over loopback."""
        interpreter, run_as, cgroups, limits, mount = await self._prepare(spec)
        launch = replace(launch, env={**launch.env, "CORTEXD_JOB_URL": launch.endpoint.url})
        launched = await self._launcher.launch(spec, launch.worker_id, launch.gpu_ids, interpreter, run_as,
                                               cgroups, limits, mount, worker=launch)
        self._said_mount(spec.name, launched.mount)
        return ProcessWorker(launch.worker_id, launched, self._launcher.pid_file(launch.worker_id))

    async def end_workers(self) -> None:
        """Nothing: workers die with the daemon, and reap_leftovers() ends what is left (pid files)."""

    def _said_mount(self, api: str, mount: ProjectMount | None) -> None:
        """Record what `api`'s replicas have at /mnt/project (isolation()), and say once, per
        reason, why they have nothing there."""
        found = self._isolation.get(api)
        if found is None or mount is None:
            return
        self._isolation[api] = replace(found, mount=mount)
        said = found.mount.unavailable if found.mount is not None else None
        if mount.unavailable and self._notify is not None and said != mount.unavailable:
            self._notify(unavailable_notice(api, mount.unavailable), api)

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
            signal_group(proc.pid, signal.SIGTERM)
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        # workers that outlived their supervisor still belong to the group
        signal_group(proc.pid, signal.SIGKILL)
        self._children.pop(replica_id, None)
        await asyncio.to_thread(remove_private_dir, child.private_dir)  # off the loop: TMPDIR
        if child.cgroup is not None:  # (and what a predictor daemonized inside it)
            await asyncio.to_thread(child.cgroup.remove)
        try:
            self._launcher.pid_file(replica_id).unlink()
        except FileNotFoundError:
            pass

    def reap_leftovers(self, wait: float = 5.0, proc: str = "/proc") -> list[int]:
        """SIGKILL the replicas a previous daemon on this run_dir left running; the pids killed.

        For a daemon that was SIGKILLed (or crashed) before stopping its replicas:
        call at start, before run_dir is cleared. Each run_dir/<replica>.pid names
        a replica's session and its private folder; its processes are killed only when one
        of them is provably that replica (`python -m predictor_runtime --spec
        <private folder>/<replica>.json`),
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
            signal_group(sid, signal.SIGKILL)
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
        for folder in privates:
            remove_private_dir(folder)
        self._detect_cgroups().reap()
        return sorted(killed)

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

    async def cpu_seconds(self, replica_ids: builtins.list[str]) -> dict[str, float]:
        """CPU time (user + system, seconds) used so far by each replica's live processes."""
        sids = {int(c.info.extra["pid"]): rid for rid, c in self._children.items()
                if rid in replica_ids and c.process.returncode is None}
        by_sid = cpu_seconds_by_session(set(sids))
        return {rid: by_sid.get(sid, 0.0) for sid, rid in sids.items()}

    async def settle(self) -> None:
        """Nothing to wait for: start() registers a child before it returns to the loop."""

    async def logs(self, replica_id: str, tail: int | None = None) -> builtins.list[str]:
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
