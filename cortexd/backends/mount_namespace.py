"""The process backend's /mnt/project: observing the host, probing once what it allows (I/O).

project_mount.py decides from what this module observes (the host's /mnt, the daemon's
capabilities, the settings that allow user namespaces); predictor_runtime/mnt_namespace.py
makes the namespace. ReplicaMounts probes each kind of namespace once per daemon, in a
throwaway process doing exactly what a replica's start does (between fork and exec for a
mount namespace, at the runtime's start for a user namespace) for a scratch folder, so that an
API says why /mnt/project is missing before any predictor fails on it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import predictor_runtime
from cortexd.backends.project_mount import (
    ProjectMount,
    bind_remount_flags,
    has_cap_sys_admin,
    namespace_kind,
    probe_blocker,
    process_mount,
)
from predictor_runtime.mnt_namespace import (
    MNT,
    NAMESPACE_ENV,
    SAID,
    HostMnt,
    MntEntry,
    MountPlan,
    namespace_setup,
)
from predictor_runtime.mnt_project import MOUNT_POINT

RUNTIME_ROOT = str(Path(predictor_runtime.__file__).resolve().parents[1])
SYSCTLS = {
    "user.max_user_namespaces": "sys/user/max_user_namespaces",
    "kernel.unprivileged_userns_clone": "sys/kernel/unprivileged_userns_clone",
    "kernel.apparmor_restrict_unprivileged_userns": "sys/kernel/apparmor_restrict_unprivileged_userns",
}


# -- observing the host -------------------------------------------------------------------------

def observe_mnt(mnt: str = MNT) -> HostMnt:
    """The host's /mnt as HostMnt (exists False when it is not a folder)."""
    try:
        st = os.stat(mnt)
        names = sorted(os.listdir(mnt)) if stat.S_ISDIR(st.st_mode) else None
    except OSError:
        return HostMnt(exists=False)
    if names is None:
        return HostMnt(exists=False)
    entries = []
    for name in names:
        path = os.path.join(mnt, name)
        try:
            mode = os.lstat(path).st_mode
            if name == "project" and stat.S_ISDIR(mode):
                return HostMnt(True, has_project=True, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)
            if name == "project":
                continue  # a file or link named project: the cover puts the project there instead
            if stat.S_ISLNK(mode):
                entries.append(MntEntry(name, "link", os.readlink(path)))
            else:
                entries.append(MntEntry(name, "dir" if stat.S_ISDIR(mode) else "file"))
        except OSError:
            continue  # gone meanwhile
    return HostMnt(True, False, tuple(entries), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def source_flags(path: str) -> int:
    """statvfs's f_flag of `path` (0 when it cannot be read: the bind then fails, and says so)."""
    try:
        return os.statvfs(path).f_flag
    except OSError:
        return 0


def host_facts(proc: str = "/proc") -> dict[str, str]:
    """The settings that decide whether a user namespace is allowed, for probe_blocker()."""
    facts = {}
    for name, rel in SYSCTLS.items():
        try:
            facts[name] = Path(proc, rel).read_text().strip()
        except OSError:
            pass
    for line in _read(f"{proc}/self/status").splitlines():
        if line.startswith("Seccomp:"):
            facts["seccomp"] = line.split()[1]
    facts["euid"] = str(os.geteuid())
    return facts


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# -- the process backend's view -----------------------------------------------------------------

# what a replica's start does (a user namespace: at the runtime's start), then: is it there?
PROBE = ("import os, sys; from predictor_runtime.mnt_namespace import enter_from_environ; "
         "enter_from_environ(os.environ); sys.exit(0 if os.path.samefile(sys.argv[1], sys.argv[2]) else 3)")


def probe(kind: str, interpreter: str, user_ids: tuple[int, int], mnt: str = MNT) -> str | None:
    """(blocking) None when a replica of namespace `kind` ("mount", "user") gets /mnt/project on
    this host, else what failed: the namespace made for a scratch folder in a throwaway
    `interpreter`, which checks that /mnt/project is that folder."""
    host = observe_mnt(mnt)
    if not host.exists:
        return None  # nothing to probe: process_mount() says why
    with tempfile.TemporaryDirectory(prefix="cortexd-mnt-probe-") as scratch:
        plan = MountPlan(scratch, None if host.has_project else host,
                         user_ids if kind == "user" else None, bind_remount_flags(source_flags(scratch)))
        env = {"PYTHONPATH": RUNTIME_ROOT}
        if kind == "user":
            env[NAMESPACE_ENV] = plan.dumps()
        try:
            done = subprocess.run([interpreter, "-S", "-c", PROBE, MOUNT_POINT, scratch],
                                  preexec_fn=namespace_setup(plan) if kind == "mount" else None,
                                  cwd="/", env=env, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            return f"its probe could not run ({e})"
    if done.returncode == 0:
        return None
    lines = done.stderr.splitlines()
    for line in lines:
        if line.startswith(SAID):
            return line[len(SAID):].decode("utf-8", "replace")
    last = lines[-1].decode("utf-8", "replace") if lines else ""
    return f"its probe exited with code {done.returncode}" + (f" ({last})" if last else "")


class ReplicaMounts:
    """The process backend's /mnt/project: for_api() decides per API (project_mount.process_mount)
    from the host's /mnt and the project, probing each kind of namespace once per daemon."""

    def __init__(self, interpreter: str, proc: str = "/proc"):
        self._interpreter = interpreter
        self._proc = proc
        self._blockers: dict[str, str | None] = {}

    def blocker(self, kind: str) -> str | None:
        """(blocking) Why a namespace of `kind` cannot be made here (probe_blocker), or None."""
        if kind not in self._blockers:
            failure = probe(kind, self._interpreter, (os.getuid(), os.getgid()))
            self._blockers[kind] = (None if failure is None
                                    else probe_blocker(kind, failure, host_facts(self._proc)))
        return self._blockers[kind]

    def for_api(self, project_dir: str, paths: Sequence[str], drops: bool) -> ProjectMount:
        """(blocking) /mnt/project for replicas of a project whose folders are `paths`
        (isolation.replica_paths) and that `drops` to another user."""
        kind = namespace_kind(has_cap_sys_admin(_read(f"{self._proc}/self/status")), drops)
        host = observe_mnt()
        blocker = self.blocker(kind) if kind is not None and host.exists else None
        return process_mount(project_dir, paths, host, kind=kind, blocker=blocker,
                             user_ids=(os.getuid(), os.getgid()), source_flags=source_flags(project_dir))
