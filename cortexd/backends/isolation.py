"""What a replica can see and who it runs as: the rules both backends share.

A replica runs the user's predictor code, which must not be able to drive the
daemon or read what the daemon holds. So, on either backend:

- its environment is built from nothing but the API's `env`, the project's
  `.env` (read with python-dotenv; `.env` wins, as in Cortex, which sourced it
  after `env`) and what the runtime needs; never the daemon's own variables;
- it never runs as root: a root daemon's replicas run as an unprivileged user
  (process backend: `replica_user`, default `cortexd` when that user exists,
  else `nobody`; Docker: the image's uid 10001), which must be able to read the
  project: unreadable_by() finds the first path it cannot reach, so the error
  names the path and the fix instead of a PermissionError deep in the runtime.

The functions are pure but for read_dotenv() and the stat calls of unreadable_by().
"""

from __future__ import annotations

import io
import os
import pwd
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cortexd.errors import BackendError

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


def layered_environment(
    spec_env: Mapping[str, str], dotenv: Mapping[str, str], runtime: Mapping[str, str]
) -> dict[str, str]:
    """The API's `env` < the project's `.env` < what the runtime sets (PYTHONPATH is merged by
    the caller, which knows the runtime's paths)."""
    return {**spec_env, **dotenv, **runtime}


# -- the replica's user -------------------------------------------------------------------------

AUTO_USERS = ("cortexd", "nobody")


@dataclass(frozen=True)
class ReplicaUser:
    """Who a process-backend replica runs as; `drops` when that is not the daemon's own uid."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def drops(self, daemon_uid: int) -> bool:
        return self.uid != daemon_uid


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return None


def resolve_replica_user(setting: str | None, daemon_uid: int | None = None) -> ReplicaUser:
    """The user process-backend replicas run as, for the `replica_user` setting.

    Empty (the default): a non-root daemon's replicas run as the daemon's user (it cannot
    switch users); a root daemon's as `cortexd` when that user exists, else `nobody`.
    A name or uid: that user (a non-root daemon can only name itself). A user that does not
    exist is a BackendError saying what to set.
    """
    daemon_uid = os.getuid() if daemon_uid is None else daemon_uid
    wanted = (setting or "").strip()
    if not wanted:
        if daemon_uid != 0:
            entry = _lookup(str(daemon_uid))
            return ReplicaUser(entry.pw_name if entry else str(daemon_uid), daemon_uid, os.getgid())
        entry = next((e for e in map(_lookup, AUTO_USERS) if e is not None), None)
        if entry is None:
            raise BackendError(
                "cortexd runs as root and neither a `cortexd` nor a `nobody` user exists to run "
                "replicas as; create one (`useradd --system cortexd`) or set --replica-user "
                "(CORTEXD_REPLICA_USER) to an unprivileged user")
    else:
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
