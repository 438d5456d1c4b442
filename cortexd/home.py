"""The daemon's home folder (CORTEXD_HOME): checked before the daemon writes into it (I/O).

Everything the daemon writes lies in its home: the pid file, daemon.log, the replica
logs, the control socket, the process backend's run folder (removed and made again at
each start). A home another user can write into, or whose path another user controls
through a symbolic link, hands that user the daemon's writes: a root daemon whose home
was pre-seeded with `cortexd.pid -> /etc/shadow` truncates the target. So a home must
be the daemon's own, as OpenSSH's StrictModes wants of ~/.ssh:

- the folder itself is owned by the daemon's uid and writable by no one else;
- every folder on the way to it is owned by root or the daemon's uid, and not writable
  by others unless it is sticky (/tmp: no one can rename another user's entries);
- every symbolic link on the way (followed one by one) is root's or the daemon's uid's.

And files the daemon writes there are opened with O_NOFOLLOW (open_nofollow): a link
planted after the check is refused, never written through.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cortexd.errors import UnsafeHome

MAX_LINKS = 40  # as the kernel's own limit on links followed in one path


def _resolve(path: str, uid: int, lstat: Callable[[str], os.stat_result]) -> tuple[str, list[str]]:
    """(the real path of `path`, the real folders on the way to it), following each symbolic link
    by hand so that every link is seen; UnsafeHome for a link that another user owns."""
    parts = [p for p in path.split("/") if p]
    done = "/"
    folders = ["/"]
    links = 0
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            done = os.path.dirname(done.rstrip("/")) or "/"
            continue
        here = os.path.join(done, name)
        try:
            st = lstat(here)
        except FileNotFoundError:
            return os.path.join(here, *parts), folders  # the rest is made by mkdir (parents=True)
        except OSError as e:
            raise UnsafeHome(f"the daemon's home {path}: cannot look at {here}: {e.strerror or e}; "
                             "set CORTEXD_HOME to a folder of your own (e.g. CORTEXD_HOME=~/.cortexd)") from None
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, uid):
                raise UnsafeHome(
                    f"the daemon's home {path} leads through {here}, a symbolic link owned by uid "
                    f"{st.st_uid}: that user decides where the daemon writes. Set CORTEXD_HOME to a "
                    "folder of your own (e.g. CORTEXD_HOME=~/.cortexd)")
            links += 1
            if links > MAX_LINKS:
                raise UnsafeHome(f"the daemon's home {path}: too many symbolic links on the way to it")
            target = os.readlink(here)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                done = "/"
            continue
        done = here
        folders.append(here)
    return done, folders


def home_problem(home: Path | str, uid: int | None = None,
                 lstat: Callable[[str], os.stat_result] = os.lstat) -> str | None:
    """Why `home` is not safe for a daemon running as `uid` (default: this process's), or None.

    UnsafeHome is raised (not returned) for a link another user owns, whose target is not even
    looked at. The message names the path and the fix.
    """
    uid = os.geteuid() if uid is None else uid
    spelled = os.path.abspath(str(home))
    real, folders = _resolve(spelled, uid, lstat)
    fix = ("Set CORTEXD_HOME to a folder of your own (e.g. CORTEXD_HOME=~/.cortexd), or "
           "`chown {uid} {path} && chmod go-w {path}` if it is yours")
    for folder in folders[:-1] if folders and folders[-1] == real else folders:
        st = lstat(folder)
        if st.st_uid not in (0, uid):
            return (f"the daemon's home {spelled} lies inside {folder}, which uid {st.st_uid} owns: "
                    "that user can replace the home with one of its own. "
                    + fix.format(uid=uid, path=folder))
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            return (f"the daemon's home {spelled} lies inside {folder}, which every user can write "
                    "into (mode {:04o}, not sticky): any of them can replace the home. ".format(
                        stat.S_IMODE(st.st_mode)) + fix.format(uid=uid, path=folder))
    try:
        st = lstat(real)
    except FileNotFoundError:
        return None  # made by the caller, as this uid, 0700
    where = spelled if real == spelled else f"{spelled} (that is {real})"
    if not stat.S_ISDIR(st.st_mode):
        return f"the daemon's home {where} is not a folder; set CORTEXD_HOME to a folder"
    if st.st_uid != uid:
        return (f"the daemon's home {where} is owned by uid {st.st_uid}, not by the daemon's uid {uid}: "
                "that user could have left links in it that the daemon would write through. "
                + fix.format(uid=uid, path=real))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"the daemon's home {where} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"they could leave links in it that the daemon would write through. Run "
                f"`chmod go-w {real}` (or set CORTEXD_HOME to a folder of your own)")
    return None


def prepare_home(home: Path | str) -> None:
    """Make the home (0700, as this uid) if it is missing, then check it; UnsafeHome if unsafe."""
    problem = home_problem(home)  # before mkdir: never make folders inside someone else's
    if problem is None:
        try:
            Path(home).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise UnsafeHome(f"cannot make the daemon's home {home}: {e.strerror or e}; set "
                             "CORTEXD_HOME to a folder you can write (e.g. CORTEXD_HOME=~/.cortexd)") from None
        problem = home_problem(home)
    if problem is not None:
        raise UnsafeHome(problem)


def open_nofollow(path: Path | str, flags: int, mode: int = 0o666) -> int:
    """os.open with O_NOFOLLOW (and O_CLOEXEC): a file in the home that is a symbolic link is
    refused with UnsafeHome naming it, never followed."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeHome(f"{path} is a symbolic link; cortexd does not write through links in its "
                             f"home: remove it (`rm {path}`) and start again") from None
        raise


def write_text_nofollow(path: Path | str, text: str, mode: int = 0o644) -> None:
    """Replace the content of the file at `path` (made with `mode` if missing), never through a link."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
