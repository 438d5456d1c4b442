"""What /proc says about processes (Linux, read-only): whether one is alive, who owns it, the
members and CPU time of a session. The process backend (sessions, CPU, leftovers), the uid
registry (which uids own processes) and the CLI (`down` waiting for the daemon) read it here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie (a child not yet reaped) counts as gone."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stats(proc: str = "/proc") -> Iterator[tuple[int, list[bytes]]]:
    """(pid, fields after "comm)") of every process in /proc; one pass, vanished ones skipped.
    Fields: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12)."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        yield int(entry), fields


def stat_fields(pid: int, proc: str = "/proc") -> list[bytes] | None:
    """One process's /proc stat fields after "comm)" (as proc_stats), None when it is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds_by_session(sids: set[int], proc: str = "/proc") -> dict[int, float]:
    """{session id: utime+stime seconds of its live processes} (a replica is one session:
    its supervisor and the workers it forked)."""
    out: dict[int, float] = {}
    if not sids:
        return out
    for _, fields in proc_stats(proc):
        sid = int(fields[3])
        if sid in sids:
            out[sid] = out.get(sid, 0.0) + (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


def session_members(sids: set[int], proc: str = "/proc") -> dict[int, list[int]]:
    """{session id: pids of its live (not zombie) processes}, for the sessions that have any."""
    out: dict[int, list[int]] = {}
    if not sids:
        return out
    for pid, fields in proc_stats(proc):
        sid = int(fields[3])
        if sid in sids and fields[0] not in (b"Z", b"X"):
            out.setdefault(sid, []).append(pid)
    return out




def real_uid(status_path: str) -> int | None:
    """The real uid in /proc/<pid>/status (the folder's owner is root for a non-dumpable
    process, which every replica makes itself); None for a zombie (it can do nothing more) or
    a process that is gone."""
    try:
        with open(status_path, "rb") as f:
            for line in f:
                if line.startswith(b"State:") and line.split()[1] in (b"Z", b"X"):
                    return None
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def uids_with_processes(proc: str = "/proc") -> set[int]:
    """The real uids of every live process (one pass over /proc)."""
    uids: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(proc):
            if entry.name.isdigit():
                uid = real_uid(os.path.join(entry.path, "status"))
                if uid is not None:
                    uids.add(uid)
    return uids


def processes_of(uid: int, proc: str = "/proc") -> list[int]:
    """The live pids whose real uid is `uid` (to kill what a build left running)."""
    pids = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(proc):
            if entry.name.isdigit() and real_uid(os.path.join(entry.path, "status")) == uid:
                pids.append(int(entry.name))
    return pids
