"""A replica's mount namespace with the project at /mnt/project: the plan and its system calls.

cortexd decides the plan (cortexd/backends/project_mount.py) and has it carried out in one of
two places:
- a daemon with CAP_SYS_ADMIN (root) runs namespace_setup(plan) in the replica's child between
  fork and exec, before the child drops to the replica's user (isolation.child_setup): the
  mounts need the privilege the replica never gets;
- a daemon without it (not root) puts plan.dumps() in NAMESPACE_ENV, and the runtime enters a
  user and mount namespace of its own first thing (enter_from_environ), mapping its uid and gid
  onto themselves. Not between fork and exec: the daemon is not dumpable, so a child it forked
  cannot write its own uid_map (/proc/self is root's then), and making the child dumpable would
  show the daemon's memory and environment to every process of its uid for that moment; a
  freshly started runtime holds nothing of the daemon's.

namespace_setup(): unshare, make every mount a slave (no mount made here reaches the host; the
host's later mounts still reach the replica), cover /mnt with a small tmpfs holding the host's
/mnt entries bound back when the host has no /mnt/project folder (nothing is created on the
host), bind the project at /mnt/project and remount it read-only (a replica never gets write
access through it). Everything is prepared beforehand; the returned function only makes system
calls. A step that fails writes one line (SAID ...) to stderr, the replica's log, undoes what it
mounted, and the replica runs without /mnt/project: a predictor that never opens it serves.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from predictor_runtime.mnt_project import MOUNT_POINT, NAMESPACE_ENV

MNT = os.path.dirname(MOUNT_POINT)
SAID = b"[cortexd] /mnt/project is not available to this replica: "

# mount(2), umount2(2) and unshare(2) flags
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 0x20, 0x400, 0x800, 0x1000
MS_REC, MS_SLAVE, MS_RELATIME, MS_STRICTATIME = 0x4000, 0x80000, 0x200000, 0x1000000
MNT_DETACH = 2
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
TMPFS_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
TMPFS_BYTES = 2**20  # the cover holds mount points and links, nothing else


@dataclass(frozen=True)
class MntEntry:
    """One entry of the host's /mnt, bound back when a namespace covers /mnt: kind "dir",
    "file" (anything bindable that is not a folder) or "link" (recreated, pointing at `target`)."""

    name: str
    kind: str
    target: str = ""


@dataclass(frozen=True)
class HostMnt:
    """What the host has at /mnt: whether it is a folder, whether it holds a `project` folder
    (then a namespace binds over it and nothing else), its entries, mode and owner."""

    exists: bool
    has_project: bool = False
    entries: tuple[MntEntry, ...] = ()
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class MountPlan:
    """How one replica's mount namespace is made.

    source: the project folder; cover: the host's /mnt to re-create on a tmpfs (None: bind over
    the host's own /mnt/project); user_ids: (uid, gid) mapped onto themselves in a user
    namespace of the replica's own (None: a mount namespace alone, made with the daemon's
    CAP_SYS_ADMIN); remount: the flags that make the bind read-only."""

    source: str
    cover: HostMnt | None
    user_ids: tuple[int, int] | None
    remount: int

    def dumps(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> MountPlan:
        raw = json.loads(text)
        cover = raw["cover"]
        if cover is not None:
            cover = HostMnt(**{**cover, "entries": tuple(MntEntry(**e) for e in cover["entries"])})
        ids = raw["user_ids"]
        return cls(str(raw["source"]), cover, (int(ids[0]), int(ids[1])) if ids else None, int(raw["remount"]))


@functools.cache
def _libc() -> tuple[Callable[..., int], Callable[..., int], Callable[..., int]]:
    """libc's mount, unshare and umount2 (OSError off Linux or without them)."""
    if not sys.platform.startswith("linux"):
        raise OSError("mount namespaces exist on Linux only")
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        mount, unshare, umount2 = libc.mount, libc.unshare, libc.umount2
    except AttributeError as e:
        raise OSError(f"this C library lacks {e}") from None
    mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    unshare.argtypes = [ctypes.c_int]
    umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return mount, unshare, umount2


def id_maps(user_ids: tuple[int, int] | None) -> tuple[tuple[bytes, bytes], ...]:
    """What a new user namespace is given: no setgroups, then the uid and the gid onto themselves."""
    if user_ids is None:
        return ()
    uid, gid = user_ids
    return ((b"/proc/self/setgroups", b"deny"), (b"/proc/self/uid_map", b"%d %d 1\n" % (uid, uid)),
            (b"/proc/self/gid_map", b"%d %d 1\n" % (gid, gid)))


def tmpfs_options(cover: HostMnt, user_ids: tuple[int, int] | None) -> bytes:
    """The cover's mode and owner as the host's /mnt has them (in a user namespace, the owner
    only when it is the replica's own, the one id mapped there)."""
    options = b"mode=%o,size=%d,nr_inodes=%d" % (cover.mode, TMPFS_BYTES, len(cover.entries) + 16)
    if user_ids is None or (cover.uid, cover.gid) == user_ids:
        options += b",uid=%d,gid=%d" % (cover.uid, cover.gid)
    return options


class _Setup:
    """namespace_setup()'s function: every value prepared here, in the daemon (or the runtime);
    calling it makes only system calls."""

    def __init__(self, plan: MountPlan):
        self.mount, self.unshare, self.umount2 = _libc()
        self.get_errno, self.strerror, self.write = ctypes.get_errno, os.strerror, os.write
        self.flags = CLONE_NEWNS | (CLONE_NEWUSER if plan.user_ids else 0)
        self.unshare_step = b"unshare(CLONE_NEWUSER|CLONE_NEWNS)" if plan.user_ids else b"unshare(CLONE_NEWNS)"
        self.maps = id_maps(plan.user_ids)
        self.source, self.target, self.mnt = os.fsencode(plan.source), os.fsencode(MOUNT_POINT), os.fsencode(MNT)
        self.bind_step = b"mount --rbind " + self.source + b" " + self.target
        self.cover = cover = plan.cover
        self.entries = tuple((os.fsencode(e.name), self.mnt + b"/" + os.fsencode(e.name), e.kind,
                              os.fsencode(e.target)) for e in (cover.entries if cover is not None else ()))
        self.options = tmpfs_options(cover, plan.user_ids) if cover is not None else b""
        self.remounts = ((self.target, plan.remount, b"remounting /mnt/project read-only"),
                         (self.mnt, MS_REMOUNT | MS_RDONLY | TMPFS_FLAGS if cover is not None else 0,
                          b"remounting /mnt read-only"))

    def say(self, step: bytes, err: int) -> None:
        self.write(2, SAID + step + b" failed: " + self.strerror(err).encode() + b"\n")

    def make_cover(self) -> bool:
        """tmpfs on /mnt with the host's entries bound back (by relative names, from a working
        directory on the host's /mnt under the tmpfs) and an empty project folder."""
        mount, mnt, covered = self.mount, self.mnt, False
        try:
            here = os.open(b".", os.O_PATH | os.O_DIRECTORY)
        except OSError as e:
            self.say(b"opening the working directory", e.errno or 0)
            return False
        try:
            os.chdir(mnt)
            if mount(b"tmpfs", mnt, b"tmpfs", TMPFS_FLAGS, self.options) != 0:
                self.say(b"mount -t tmpfs tmpfs " + mnt, self.get_errno())
                return False
            covered = True
            for name, dest, kind, link in self.entries:
                if kind == "link":
                    os.symlink(link, dest)
                    continue
                if kind == "dir":
                    os.mkdir(dest, 0o700)
                else:
                    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                if mount(name, dest, None, MS_BIND | MS_REC, None) != 0:
                    self.say(b"mount --rbind " + dest + b" (the host's, under the tmpfs)", self.get_errno())
                    self.umount2(mnt, MNT_DETACH)
                    return False
            os.mkdir(self.target, 0o755)
            return True
        except OSError as e:
            self.say(b"covering " + mnt + b" (" + os.fsencode(e.filename or "") + b")", e.errno or 0)
            if covered:
                self.umount2(mnt, MNT_DETACH)
            return False
        finally:
            os.fchdir(here)
            os.close(here)

    def __call__(self) -> None:
        mount, say, cover = self.mount, self.say, self.cover
        if self.unshare(self.flags) != 0:
            say(self.unshare_step, self.get_errno())
            return
        for path, data in self.maps:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    self.write(fd, data)
                finally:
                    os.close(fd)
            except OSError as e:
                say(b"writing " + path, e.errno or 0)
                os._exit(1)  # in a user namespace without its ids, it cannot run as itself
        if mount(None, b"/", None, MS_REC | MS_SLAVE, None) != 0:
            say(b"mount --make-rslave /", self.get_errno())
            return
        if cover is not None and not self.make_cover():
            return
        if mount(self.source, self.target, None, MS_BIND | MS_REC, None) != 0:
            say(self.bind_step, self.get_errno())
            if cover is not None:
                self.umount2(self.mnt, MNT_DETACH)
            return
        for where, how, step in self.remounts:
            if how and mount(None, where, None, how, None) != 0:
                err = self.get_errno()
                self.umount2(self.mnt if cover is not None else self.target, MNT_DETACH)
                say(step, err)
                return


def namespace_setup(plan: MountPlan) -> Callable[[], None]:
    """What makes `plan`'s namespace in the calling process (module docstring); OSError when this
    system has no mount namespaces."""
    return _Setup(plan)


def enter_from_environ(environ: MutableMapping[str, str]) -> None:
    """The runtime's first step: the user and mount namespace NAMESPACE_ENV describes, if set
    (removed from `environ`, so worker processes inherit the namespace, not the request).
    unshare(CLONE_NEWUSER) needs a process of one thread: call it before any thread starts."""
    raw = environ.pop(NAMESPACE_ENV, None)
    if not raw:
        return
    try:
        setup = namespace_setup(MountPlan.loads(raw))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        os.write(2, SAID + f"reading its plan failed: {e}\n".encode())
        return
    setup()
