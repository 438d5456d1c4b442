"""What a replica can see and who it runs as: the rules both backends share.

A replica runs the user's predictor code, which must not be able to drive the
daemon, read what the daemon holds, or touch another API. So, on either backend:

- its environment is built from nothing but the API's `env`, the project's
  `.env` (read with python-dotenv; `.env` wins, as in Cortex, which sourced it
  after `env`) and the few variables of the daemon's own that the runtime needs
  (inherited_environment); never the daemon's credentials or settings;
- it never runs as root where the host allows otherwise. Docker: the daemon's
  own uid, or the image's uid 10001 for a root daemon (container_args.container_user).
  Process backend (RunAs): a root daemon runs each API's replicas
  under a uid of its own from a dynamic range (replica_uids.py), which must be
  able to run the interpreter and read the project (unreadable_by() finds the
  first path it cannot reach). When it cannot (a Python under /root, a project
  in a 0700 folder), the replicas run as the daemon's user and the API says why
  and what to do (RunAs.notice), rather than failing. An explicit replica user
  (--replica-user) that cannot work is an error naming the path and the fix. A
  non-root daemon's replicas run as its own user: no isolation between its APIs
  beyond what the runtime does itself (non-dumpable processes).

child_setup() is what a replica or an installer runs between fork and exec:
join its cgroups, enter its mount namespace (/mnt/project: project_mount.py), drop to its user,
die with the daemon.

The functions are pure but for read_dotenv(), the stat calls of unreadable_by()
and what child_setup()'s function does in the child.
"""

from __future__ import annotations

import io
import os
import pwd
import resource
import signal
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cortexd.errors import BackendError
from predictor_runtime.process_setup import libc_prctl

DOTENV = ".env"


def parse_dotenv(text: str) -> dict[str, str]:
    """A `.env` file's variables (python-dotenv's syntax: `export`, quotes, comments, multi-line
    values). Values are taken literally: `${VAR}` is not expanded, so nothing of the daemon's
    environment can reach a replica through it. A bare `KEY` (no value) is skipped."""
    from dotenv import dotenv_values

    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {k: v for k, v in values.items() if v is not None}


def read_dotenv(project_dir: str | os.PathLike, api: str) -> dict[str, str]:
    """The project's `.env` ({} when there is none); one that cannot be read is a BackendError
    naming it (the API shows it; the others keep serving)."""
    path = Path(project_dir) / DOTENV
    if not path.is_file():
        return {}
    try:
        return parse_dotenv(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise BackendError(f"api {api!r}: cannot read {path}: {e}") from None


# the only variables a replica takes from the daemon's environment: where programs and
# libraries are, locale, time zone, CA bundles and CUDA's settings. Never CORTEXD_HOME,
# credentials or anything else the daemon was started with.
INHERITED = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH",
                       "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"})
INHERITED_PREFIXES = ("LC_", "CUDA_")


def inherited_environment(base: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in base.items() if k in INHERITED or k.startswith(INHERITED_PREFIXES)}


def layered_environment(
    spec_env: Mapping[str, str], dotenv: Mapping[str, str], runtime: Mapping[str, str]
) -> dict[str, str]:
    """The API's `env` < the project's `.env` < what the runtime sets (PYTHONPATH is merged by
    the caller, which knows the runtime's paths)."""
    return {**spec_env, **dotenv, **runtime}


# -- the replica's user -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaUser:
    """Who a process-backend replica runs as; `drops` when that is not the daemon's own uid."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def drops(self, daemon_uid: int) -> bool:
        return self.uid != daemon_uid

    @classmethod
    def dynamic(cls, uid: int) -> ReplicaUser:
        """A uid of the dynamic range (no passwd entry): its own group, no other groups."""
        return cls(f"cortexd-{uid}", uid, uid, (uid,))


@dataclass(frozen=True)
class RunAs:
    """Who one API's process replicas run as, and whether that isolates them from other APIs.

    isolated: a uid of the API's own (a root daemon's default). notice: said once in `up`,
    `get API` and the live view when a root daemon could not isolate the API, with the fix."""

    user: ReplicaUser
    isolated: bool
    notice: str | None = None

    def describe(self) -> str:
        """One line for `cortexd get API`: who the replicas run as."""
        if self.isolated:
            return f"uid {self.user.uid} (this API's own; no other API or build shares it)"
        if self.user.uid == 0:
            return "root (not isolated from other APIs)"
        return f"{self.user.name} (uid {self.user.uid}, shared by the daemon's APIs)"


def not_isolated_notice(api: str, uid: int, part: str, blocked: str, interpreter: str) -> str:
    """Why a root daemon runs `api`'s replicas as root, and what to do (RunAs.notice); `part`:
    "python" when `blocked` is on the way to the interpreter or the runtime, else "project"."""
    if part == "python":
        why = (f"the Python interpreter {interpreter} is not reachable by other users ({blocked}); "
               "install cortexd in a Python every user can run (`python3 -m venv /opt/cortexd && "
               "/opt/cortexd/bin/pip install cortexd`, or under /usr/local)")
    else:
        why = (f"{blocked} is not readable by other users; make the project readable "
               "(`chmod -R o+rX` on it and o+x on its parent folders)")
    return (f"api {api!r}: replicas run as root, not isolated from other APIs: a uid of their own "
            f"(uid {uid}) could not run them, because {why}. Or use the Docker backend, which "
            "isolates every replica in a container.")


_PR_SET_PDEATHSIG = 1


def child_setup(user: ReplicaUser | None = None, attach: Sequence[int] = (), *,
                sig: int = signal.SIGTERM, umask: int | None = None,
                max_processes: int | None = None,
                namespace: Callable[[], None] | None = None) -> Callable[[], None] | None:
    """The preexec_fn of a replica or an installer: what runs in the child between fork and exec.

    In order: join its cgroups (write 0, "this process", to each `attach` descriptor of a
    cgroup.procs, opened by the daemon: the child will not be allowed once it drops), enter its
    `namespace` (mount_namespace.namespace_setup: /mnt/project; it needs the daemon's privilege,
    so before the drop), cap the
    processes of its uid (RLIMIT_NPROC, for a build's fresh uid), drop to `user` (groups, then
    gid, then uid: each step needs the privilege the next one gives up), set the umask, and ask
    for `sig` when the daemon dies (PR_SET_PDEATHSIG, which the kernel clears on a change of
    credentials, so it comes after the drop; it survives exec and setsid, so it reaches the
    replica even after a SIGKILL of the daemon; it fires when the *thread* that forked ends, so
    spawn from the event loop's thread). os.setresuid etc. instead of subprocess's user=/group=
    keywords: uvloop's subprocess_exec refuses those, and this works under every loop.
    Everything is prepared here; the child only makes system calls. None when nothing is to do.
    """
    prctl = libc_prctl()
    if prctl is None and user is None and not attach and umask is None and namespace is None:
        return None
    signum, parent = int(sig), os.getpid()
    fds = tuple(attach)
    ids = (user.uid, user.gid, tuple(user.groups) or (user.gid,)) if user is not None else None

    def preexec() -> None:
        for fd in fds:
            os.write(fd, b"0")
        if namespace is not None:
            namespace()
        if max_processes is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        if ids is not None:
            uid, gid, groups = ids
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        if umask is not None:
            os.umask(umask)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)  # the daemon died before prctl: the signal will never come

    return preexec


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return None


def resolve_replica_user(setting: str | None, daemon_uid: int | None = None) -> ReplicaUser | None:
    """The user every process-backend replica runs as, for the `replica_user` setting; None for
    a root daemon's default: each API a uid of its own (replica_uids.py).

    Empty (the default): a non-root daemon's replicas run as the daemon's user (it cannot switch
    users); a root daemon's get a uid per API (None). A name or uid: that user for every API (a
    non-root daemon can only name itself; `root` opts out of isolation). A user that does not
    exist is a BackendError saying what to set.
    """
    daemon_uid = os.getuid() if daemon_uid is None else daemon_uid
    wanted = (setting or "").strip()
    if not wanted:
        if daemon_uid == 0:
            return None
        entry = _lookup(str(daemon_uid))
        return ReplicaUser(entry.pw_name if entry else str(daemon_uid), daemon_uid, os.getgid())
    entry = _lookup(wanted)
    if entry is None:
        if wanted.isdigit():  # a bare uid without a passwd entry (containers often have those)
            return ReplicaUser(wanted, int(wanted), int(wanted))
        raise BackendError(f"replica user {wanted!r} does not exist (set by --replica-user or "
                           "CORTEXD_REPLICA_USER); name an existing user or a uid")
    if daemon_uid != 0 and entry.pw_uid != daemon_uid:
        raise BackendError(
            f"replica user {entry.pw_name!r}: only a root daemon can run replicas as another user; "
            "unset --replica-user (CORTEXD_REPLICA_USER) or run cortexd as root")
    try:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        groups = (entry.pw_gid,)
    return ReplicaUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def _grants(st: os.stat_result, uid: int, gids: Iterable[int], bits: int) -> bool:
    """Whether the mode grants `bits` (rwx as 0o7) to uid/gids (root reads everything)."""
    if uid == 0:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid:
        return (mode >> 6) & bits == bits
    if st.st_gid in set(gids):
        return (mode >> 3) & bits == bits
    return mode & bits == bits


def unreadable_by(uid: int, gids: Iterable[int], roots: Iterable[str], files: Iterable[str] = ()) -> str | None:
    """The first path that uid/gids cannot reach (a parent without x, a root folder without r+x,
    a file without r), or None. Missing paths are not reported: the runtime says those itself."""
    gids = tuple(gids)

    def lacks(path: str, bits: int) -> bool:
        try:
            return not _grants(os.stat(path), uid, gids, bits)
        except OSError:
            return False

    for root in roots:
        parts = Path(root).parts
        for i in range(2, len(parts)):
            parent = str(Path(*parts[:i]))
            if lacks(parent, 0o1):
                return parent
        if os.path.isdir(root) and lacks(root, 0o5):
            return root
    for path in files:
        if lacks(path, 0o4):
            return path
    return None


def _local(path: str | None) -> str | None:
    if not path or "://" in path or not os.path.isabs(path):
        return None
    return os.path.normpath(path)


def replica_paths(spec) -> list[str]:
    """The host folders a replica of `spec` reads: the project, python_path and local model
    paths, nested ones folded into their parent (Docker mounts each of these read-only)."""
    p = spec.predictor
    wanted = [spec.project_dir, p.python_path, p.model_path]
    if p.models is not None:
        wanted.append(p.models.dir)
        wanted.extend(m.path for m in p.models.paths)
    roots: list[str] = []
    for path in sorted({q for q in map(_local, wanted) if q}, key=lambda s: (len(s), s)):
        if not any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots):
            roots.append(path)
    return roots
