"""Per-replica limits for process replicas through cgroups (v1 or v2), where this daemon may.

A root daemon gives each process replica a cgroup of its own, made under the daemon's own
cgroup (so whatever bounds the daemon's container or slice has still hold over its replicas):
`<daemon's cgroup>/cortexd-<instance>/<replica id>`, with
- memory: `compute.mem` (v1 memory.limit_in_bytes, v2 memory.max), and the kernel's OOM kills
  read back (v1 memory.oom_control, v2 memory.events: `oom_kill`), so a replica killed for
  memory shows `error (out of memory)` as a container does;
- pids: the limit a replica's container gets (container_args.pids_limit), so a fork bomb in a
  predictor stops at it instead of at the host's.
The replica joins its cgroups between fork and exec, through descriptors of `cgroup.procs`
the daemon opened (isolation.child_setup writes to them): nothing it forks can start outside.

On v1 each controller is its own hierarchy (this machine kind: memory and pids mounted under
/sys/fs/cgroup). On v2 the controllers must be enabled in the daemon's cgroup's
`cgroup.subtree_control`, which the kernel refuses while that cgroup holds processes (the
"no internal processes" rule); a daemon alone in its cgroup (a systemd scope or service with
`Delegate=yes`) moves itself into a leaf `cortexd-<instance>/daemon` first. Wherever a limit
cannot be had (a non-root daemon, controllers not delegated, a read-only /sys/fs/cgroup),
`Cgroups.enforcement()` says why, per limit, and `cortexd get API` shows it.

`hierarchies()` is pure (the text of /proc/self/mountinfo and /proc/self/cgroup in, paths
out); the rest reads and writes the cgroup files.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("cortexd.cgroups")

CONTROLLERS = ("memory", "pids")


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller lives: cgroup `version` 1 or 2, and the daemon's own cgroup's folder."""

    version: int
    base: str

    @property
    def label(self) -> str:
        return f"cgroup v{self.version}"


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return path.encode().decode("unicode_escape") if "\\" in path else path


def hierarchies(mountinfo: str, proc_cgroup: str,
                v2_controllers: Callable[[str], Iterable[str]] = lambda base: ()) -> dict[str, Hierarchy]:
    """{controller: Hierarchy} for the CONTROLLERS this process can see (pure but for the
    v2_controllers reader: the `cgroup.controllers` of a v2 folder, which only the kernel knows).

    A v1 controller is found by its mount (the controller is in the super options) and the
    daemon's path in that hierarchy (/proc/self/cgroup's line naming it), taken relative to the
    mount's root (a container sees its own cgroup mounted as the root). A controller mounted on
    v1 is not on v2 (the kernel binds each to one hierarchy)."""
    v1_paths: dict[str, str] = {}
    v2_path: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        if not names:
            v2_path = path
        for name in names.split(","):
            v1_paths[name] = path
    found: dict[str, Hierarchy] = {}
    v2_mount: tuple[str, str] | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        fstype, options = tail[0], tail[2].split(",")
        if fstype == "cgroup2":
            v2_mount = (root, mountpoint)
        elif fstype == "cgroup":
            for name in CONTROLLERS:
                if name in options and name in v1_paths and name not in found:
                    found[name] = Hierarchy(1, _inside(mountpoint, root, v1_paths[name]))
    if v2_mount is not None and v2_path is not None:
        base = _inside(v2_mount[1], v2_mount[0], v2_path)
        available = set(v2_controllers(base))
        for name in CONTROLLERS:
            if name not in found and name in available:
                found[name] = Hierarchy(2, base)
    return found


def _inside(mountpoint: str, root: str, path: str) -> str:
    """The folder of cgroup `path` under a mount of the hierarchy's `root`."""
    relative = path
    if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
        relative = path[len(root):]
    return os.path.normpath(os.path.join(mountpoint, relative.lstrip("/")))


@dataclass(frozen=True)
class Limits:
    """What one replica may use: bytes of memory (None: no limit asked) and processes+threads."""

    memory: int | None
    pids: int


@dataclass
class ReplicaCgroup:
    """The cgroup folders of one replica (one per hierarchy) and how to join and read them."""

    folders: tuple[str, ...]
    memory_folder: str | None
    memory_version: int = 1
    _fds: list[int] = field(default_factory=list)

    def open_attach(self) -> list[int]:
        """Descriptors of each folder's cgroup.procs (close-on-exec), for the child to write its
        pid into between fork and exec; close_attach() after the spawn."""
        self.close_attach()
        for folder in self.folders:
            self._fds.append(os.open(os.path.join(folder, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        return list(self._fds)

    def close_attach(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def oom_kills(self) -> int:
        """How many processes of the replica the kernel killed for memory (0 when unknown)."""
        if self.memory_folder is None:
            return 0
        name = "memory.oom_control" if self.memory_version == 1 else "memory.events"
        try:
            text = Path(self.memory_folder, name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def remove(self, wait: float = 2.0) -> None:
        """(blocking) Kill what is left in the cgroups (a process the predictor daemonized) and
        remove the folders."""
        self.close_attach()
        deadline = time.monotonic() + wait
        for folder in self.folders:
            while True:
                for pid in _members(folder):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("could not remove the cgroup %s: %s", folder, e)
                        break
                    time.sleep(0.02)


def _members(folder: str) -> list[int]:
    try:
        return [int(x) for x in Path(folder, "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


class Cgroups:
    """The cgroups of one daemon's process replicas: `<daemon's cgroup>/cortexd-<instance>`.

    detect() finds what this process may use; create() makes a replica's cgroup with its limits;
    enforcement() says per limit what holds, for `cortexd get API`."""

    def __init__(self, instance: str, found: Mapping[str, Hierarchy], problems: Mapping[str, str]):
        self.instance = instance
        self._found = dict(found)  # controller -> hierarchy, those usable
        self._problems = dict(problems)  # controller -> why it is not usable

    @classmethod
    def detect(cls, instance: str, proc: str = "/proc") -> Cgroups:
        """(blocking) The usable controllers; made once per daemon, before any replica starts."""
        if os.geteuid() != 0:
            why = "only a root daemon can give its replicas cgroups of their own"
            return cls(instance, {}, dict.fromkeys(CONTROLLERS, why))
        try:
            mountinfo = Path(proc, "self", "mountinfo").read_text()
            own = Path(proc, "self", "cgroup").read_text()
        except OSError as e:
            return cls(instance, {}, dict.fromkeys(CONTROLLERS, f"cannot read {e.filename}: {e.strerror}"))

        def v2_controllers(base: str) -> list[str]:
            try:
                return Path(base, "cgroup.controllers").read_text().split()
            except OSError:
                return []

        found = hierarchies(mountinfo, own, v2_controllers)
        problems = {name: "this host mounts no cgroup hierarchy with it" for name in CONTROLLERS
                    if name not in found}
        usable: dict[str, Hierarchy] = {}
        for name, where in found.items():
            problem = cls._prepare(instance, name, where)
            if problem is None:
                usable[name] = where
            else:
                problems[name] = problem
        return cls(instance, usable, problems)

    @staticmethod
    def _prepare(instance: str, name: str, where: Hierarchy) -> str | None:
        """Make `cortexd-<instance>` in the hierarchy (v2: with the controller enabled below it);
        the reason when that cannot be done."""
        top = os.path.join(where.base, f"cortexd-{instance}")
        try:
            os.makedirs(top, exist_ok=True)
        except OSError as e:
            return f"cannot make {top} ({e.strerror})"
        if where.version == 1:
            return None
        return _enable_v2(where.base, top, name)

    def enforcement(self, limits: Limits) -> dict[str, str]:
        """What holds for each limit, in words: `{"memory": "1.0G (cgroup v1)", ...}`."""
        out: dict[str, str] = {}
        if limits.memory is None:
            out["memory"] = "not limited (compute.mem is not set)"
        elif "memory" in self._found:
            out["memory"] = f"{limits.memory} bytes ({self._found['memory'].label})"
        else:
            out["memory"] = f"not enforced: {self._problems.get('memory', 'no memory controller')}"
        if "pids" in self._found:
            out["pids"] = f"{limits.pids} processes and threads ({self._found['pids'].label})"
        else:
            out["pids"] = f"not enforced: {self._problems.get('pids', 'no pids controller')}"
        return out

    def create(self, replica_id: str, limits: Limits) -> ReplicaCgroup | None:
        """(blocking) The replica's cgroups with its limits written; None when no controller is
        usable. A write the kernel refuses is logged and that limit left out (enforcement() is
        then optimistic only until the next start: the error is in the daemon log)."""
        folders: dict[str, str] = {}
        for name, where in self._found.items():
            folder = os.path.join(where.base, f"cortexd-{self.instance}", replica_id)
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                log.warning("cannot make the cgroup %s: %s", folder, e)
                continue
            folders[name] = folder
        if not folders:
            return None
        memory = self._found.get("memory")
        if "memory" in folders and limits.memory is not None and memory is not None:
            _write(folders["memory"], "memory.limit_in_bytes" if memory.version == 1 else "memory.max",
                   str(limits.memory))
        if "pids" in folders:
            _write(folders["pids"], "pids.max", str(limits.pids))
        return ReplicaCgroup(tuple(dict.fromkeys(folders.values())), folders.get("memory"),
                             memory.version if memory is not None else 1)

    def reap(self) -> None:
        """(blocking) Remove the replica cgroups a previous daemon of this instance left."""
        for where in {w.base: w for w in self._found.values()}.values():
            top = Path(where.base, f"cortexd-{self.instance}")
            with contextlib.suppress(OSError):
                for child in top.iterdir():
                    if child.is_dir() and child.name != "daemon":
                        ReplicaCgroup((str(child),), None).remove()


def _write(folder: str, name: str, value: str) -> None:
    try:
        Path(folder, name).write_text(value)
    except OSError as e:
        log.warning("cannot set %s in %s to %s: %s", name, folder, value, e)


def _enable_v2(base: str, top: str, name: str) -> str | None:
    """Enable controller `name` for the children of `top` (v2): in base's subtree_control, then in
    top's. base holds the daemon; the kernel refuses while it holds processes (EBUSY), unless it
    is the root. A daemon alone in base moves itself into the leaf top/daemon first."""
    def enabled(folder: str) -> bool:
        try:
            return name in Path(folder, "cgroup.subtree_control").read_text().split()
        except OSError:
            return False

    def enable(folder: str) -> OSError | None:
        try:
            Path(folder, "cgroup.subtree_control").write_text(f"+{name}")
            return None
        except OSError as e:
            return e

    if not enabled(base):
        failed = enable(base)
        if failed is not None and failed.errno == errno.EBUSY and _members(base) == [os.getpid()]:
            leaf = os.path.join(top, "daemon")
            try:
                os.makedirs(leaf, exist_ok=True)
                Path(leaf, "cgroup.procs").write_text(str(os.getpid()))
            except OSError as e:
                return f"cgroup v2: cannot move the daemon into {leaf} ({e.strerror})"
            failed = enable(base)
        if failed is not None:
            return (f"cgroup v2: {base} holds other processes, so the kernel will not enable {name} "
                    "below it; run cortexd in a cgroup of its own with the controllers delegated "
                    "(`systemd-run --scope -p Delegate=yes cortexd up ...`)"
                    if failed.errno == errno.EBUSY else
                    f"cgroup v2: cannot enable {name} in {base} ({failed.strerror})")
    if not enabled(top):
        failed = enable(top)
        if failed is not None and not (failed.errno == errno.EBUSY and enabled(top)):
            return f"cgroup v2: cannot enable {name} in {top} ({failed.strerror})"
    return None
