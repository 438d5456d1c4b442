"""/mnt/project, where Cortex put the project: where each backend can put it too, and why not (pure).

Cortex mounted the project at /mnt/project and ran predictors there, and Cortex-era code
opens files by that absolute path (`open("/mnt/project/coco_labels.txt")`). cortexd keeps
the project at its own path (the working directory, sys.path and tracebacks name the user's
real files) and adds /mnt/project, read-only, where it can:

- Docker: a second read-only bind mount of the project (container_args.container_create_args);
- `cortexd build` images: a link /mnt/project -> /opt/cortexd/project (kube/layout.py);
- process backend: each replica gets a mount namespace of its own in which the project is
  bound read-only at /mnt/project (predictor_runtime/mnt_namespace.py makes it). A daemon with
  CAP_SYS_ADMIN (root) makes it between fork and exec, before the replica drops to its user;
  without (a non-root daemon), the replica makes it at its start inside a user namespace of
  its own that maps its uid and gid onto themselves, where the kernel allows unprivileged user
  namespaces. The host is never changed: when its /mnt has no `project` folder, the namespace
  covers /mnt with a small read-only tmpfs holding the host's /mnt entries (bound back) and
  the project.

Where no way works the API says why, once (`cortexd get API`, the live view, the events), and a
predictor whose open of a /mnt/project path fails is told why and what to do in its log
(predictor_runtime/mnt_project.py, from the reason this module words).

Decisions here take observations as values (HostMnt, the probe's answer, capabilities);
mount_namespace.py observes and probes, predictor_runtime/mnt_namespace.py acts.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from predictor_runtime.mnt_namespace import (
    MNT,
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_RELATIME,
    MS_REMOUNT,
    MS_STRICTATIME,
    HostMnt,
    MountPlan,
)
from predictor_runtime.mnt_project import MOUNT_POINT, REMEDY

CAP_SYS_ADMIN = 21


@dataclass(frozen=True)
class ProjectMount:
    """What one API's replicas get at /mnt/project: the plan (None: nothing to mount), the line
    `cortexd get API` shows, and why it is not available (None when it is)."""

    plan: MountPlan | None
    shown: str
    unavailable: str | None = None

    def describe(self) -> dict[str, object]:
        """The keys a backend's isolation() adds for `cortexd get API` and the live view."""
        return {"project_mount": self.shown, "project_mount_available": self.unavailable is None}


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def in_the_way(paths: Iterable[str], project_dir: str) -> str | None:
    """Why a mount at /mnt/project would break a replica's paths (the project, python_path, local
    models: isolation.replica_paths), or None: a path under /mnt/project would be hidden by it, and
    a path holding /mnt (or / itself) would be covered."""
    if posixpath.normpath(project_dir) == MOUNT_POINT:
        return None
    for path in paths:
        path = posixpath.normpath(path)
        if _inside(path, MOUNT_POINT):
            return f"{path} lies under /mnt/project, and a mount there would hide it"
        if _inside(MNT, path):
            return f"{path} holds /mnt, which a mount of the project at /mnt/project would change"
    return None


def docker_mount(paths: Iterable[str], project_dir: str) -> ProjectMount:
    """Whether a container gets the project bound at /mnt/project too (plan None either way:
    container_args mounts it when `unavailable` is None and the project is not already there)."""
    if posixpath.normpath(project_dir) == MOUNT_POINT:
        return ProjectMount(None, "the project (it is at /mnt/project on the host)")
    blocked = in_the_way(paths, project_dir)
    if blocked is not None:
        return ProjectMount(None, f"not available: {blocked}; open the project's files by relative "
                                  "paths (the working directory is the project folder)", blocked)
    return ProjectMount(None, "the project, read-only (a second bind mount)")


def bind_remount_flags(source_flags: int) -> int:
    """The flags of the remount that makes the bind of the project read-only, from statvfs's
    f_flag of the project: read-only, nosuid and nodev, and the source's noexec and atime flags
    kept (a user namespace may not change the flags its parent's mount locked)."""
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
    if source_flags & os.ST_NOEXEC:
        flags |= MS_NOEXEC
    if source_flags & os.ST_NODIRATIME:
        flags |= MS_NODIRATIME
    if source_flags & os.ST_NOATIME:
        flags |= MS_NOATIME
    elif source_flags & os.ST_RELATIME:
        flags |= MS_RELATIME
    else:
        flags |= MS_STRICTATIME
    return flags


def has_cap_sys_admin(proc_status: str) -> bool:
    """Whether /proc/self/status's CapEff holds CAP_SYS_ADMIN (mounts without a user namespace)."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


def namespace_kind(privileged: bool, drops: bool) -> str | None:
    """"mount" (a mount namespace: the daemon has CAP_SYS_ADMIN), "user" (a user namespace
    around it, mapping the daemon's ids: only when the replica keeps them), or None."""
    if privileged:
        return "mount"
    return None if drops else "user"


def probe_blocker(kind: str, failure: str, facts: Mapping[str, str]) -> str:
    """Why the process backend cannot give replicas a namespace, from what the probe saw
    (`failure`: the step that failed and its error) and the host's settings (`facts`:
    sysctl name -> value, "seccomp" -> /proc/self/status's Seccomp field, "euid" -> the daemon's)."""
    if kind == "mount":
        tried = "the daemon gives each replica a mount namespace of its own"
    else:
        tried = "a daemon without CAP_SYS_ADMIN gives each replica a user and mount namespace of its own"
    why = ""
    if kind == "user":
        if failure.startswith("writing /proc/self/uid_map") and facts.get("euid") == "0":
            why = ("mapping root (uid 0) into a user namespace takes CAP_SETFCAP, and this root daemon "
                   "runs without capabilities; run it with CAP_SYS_ADMIN (it then makes a mount "
                   "namespace alone) or as a non-root user")
        elif facts.get("user.max_user_namespaces") == "0":
            why = "user namespaces are disabled on this host (sysctl user.max_user_namespaces = 0)"
        elif facts.get("kernel.unprivileged_userns_clone") == "0":
            why = ("unprivileged user namespaces are disabled on this host "
                   "(sysctl kernel.unprivileged_userns_clone = 0)")
        elif facts.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
            why = ("AppArmor restricts unprivileged user namespaces on this host "
                   "(sysctl kernel.apparmor_restrict_unprivileged_userns = 1)")
    if not why and facts.get("seccomp", "0") != "0":
        why = "a seccomp filter on the daemon refuses it (cortexd runs in a container?)"
    return f"{tried}, and {failure}" + (f", because {why}" if why else "")


def process_mount(project_dir: str, paths: Iterable[str], host: HostMnt, *, kind: str | None,
                  blocker: str | None, user_ids: tuple[int, int], source_flags: int) -> ProjectMount:
    """What the process backend does about /mnt/project for one API's replicas.

    kind: namespace_kind() (None: the replicas run as another user and the daemon lacks
    CAP_SYS_ADMIN); blocker: probe_blocker()'s reason when the probe of that kind failed;
    user_ids: the daemon's (uid, gid); source_flags: statvfs(project_dir).f_flag."""
    if posixpath.normpath(project_dir) == MOUNT_POINT:
        return ProjectMount(None, "the project (it is at /mnt/project on the host)")
    why = in_the_way(paths, project_dir)
    if why is None and kind is None:
        why = ("the daemon lacks CAP_SYS_ADMIN and the replicas run as another user, which a user "
               "namespace of the daemon's could not hold")
    if why is None and not host.exists:
        why = "this host has no /mnt folder, and cortexd does not create folders on the host"
    if why is None and blocker is not None:
        why = blocker
    if why is not None:
        return ProjectMount(None, f"not available: {why}; {REMEDY}", why)
    assert kind is not None
    plan = MountPlan(project_dir, None if host.has_project else host,
                     user_ids if kind == "user" else None, bind_remount_flags(source_flags))
    where = "a mount namespace" if kind == "mount" else "a user and mount namespace"
    return ProjectMount(plan, f"the project, read-only ({where} of each replica's own)")


def unavailable_notice(api: str, reason: str) -> str:
    """Said once per API (events, `up`): /mnt/project is missing for its replicas, why, what to do."""
    return (f"api {api!r}: /mnt/project (where Cortex mounted the project) is not available to its "
            f"replicas on the process backend: {reason}. Code that opens /mnt/project/... fails "
            f"there; {REMEDY}.")
