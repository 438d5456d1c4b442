"""The daemon process guarding itself from what it runs (issue 9.7): Linux prctl and /proc (I/O).

Everything the daemon starts (replicas, pip / uv / conda / dependencies.sh, the config
loader) may run project code, and on the process backend that code runs as the daemon's
own uid unless the daemon is root. So, in the real daemon process (run_daemon):

- PR_SET_CHILD_SUBREAPER: an orphan of anything the daemon started (a predictor's
  grandchild that double-forked and called setsid()) is re-parented to the daemon instead
  of init, so its ancestry still reaches the daemon's pid, and descends_from() refuses it
  at the control API. A CLI is never the daemon's descendant.
- PR_SET_DUMPABLE 0: a process of the same uid can no longer read /proc/<daemon>/environ,
  mem or fd (the daemon itself still can: the kernel always lets a process at its own).
- OrphanReaper: as a subreaper the daemon must wait on the orphans it adopts, or they stay
  zombies. asyncio's ThreadedChildWatcher (3.11's default) blocks a thread in
  waitpid(pid, 0) per child, subprocess.run and multiprocessing wait on their own pids:
  a waitpid(-1) here would steal their exit statuses. So the reaper reaps only a zombie
  child that nobody waited for across two of its ticks, and never one asyncio's child
  watcher or multiprocessing knows. At shutdown, end_adopted() kills the live ones (a
  predictor's process that daemonized itself), so none outlives the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
import warnings

from predictor_runtime.process_setup import libc_prctl

log = logging.getLogger("cortexd.guard")

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
REAP_INTERVAL = 2.0


def _prctl(option: int, value: int) -> bool:
    prctl = libc_prctl()
    return prctl is not None and prctl(option, value, 0, 0, 0) == 0


def guard_daemon_process() -> bool:
    """Make this process a child subreaper and not dumpable; True when it is a subreaper
    (then descends_from(peer, os.getpid()) tells a descendant from a CLI)."""
    if not _prctl(_PR_SET_DUMPABLE, 0):
        log.warning("could not make the daemon undumpable: processes of its user can read its "
                    "environment in /proc")
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def parent_of(pid: int, proc: str = "/proc") -> int | None:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descends_from(pid: int, ancestor: int, proc: str = "/proc") -> bool:
    """Whether `ancestor` is among pid's parents (a bounded walk up /proc; a process that
    vanished meanwhile counts as no descendant)."""
    for _ in range(4096):
        parent = parent_of(pid, proc)
        if parent is None or parent <= 0:
            return False
        if parent == ancestor:
            return True
        if parent == 1 or parent == pid:
            return False
        pid = parent
    return False


def child_pids(pid: int, proc: str = "/proc") -> set[int]:
    """The children of `pid`, from /proc/<pid>/task/*/children (else a full /proc scan)."""
    children: set[int] = set()
    try:
        for task in os.listdir(f"{proc}/{pid}/task"):
            with open(f"{proc}/{pid}/task/{task}/children") as f:
                children.update(int(c) for c in f.read().split())
    except (OSError, ValueError):
        children = {int(e) for e in _listdir(proc) if e.isdigit() and parent_of(int(e), proc) == pid}
    return children


def zombie_children(pid: int, proc: str = "/proc") -> set[int]:
    """The zombie children of `pid`."""
    out = set()
    for child in child_pids(pid, proc):
        try:
            with open(f"{proc}/{child}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    out.add(child)
        except (OSError, IndexError):
            continue
    return out


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def waited_by_others() -> set[int]:
    """Children some other part of this process waits on: asyncio's child watcher
    (ThreadedChildWatcher._threads, PidfdChildWatcher._callbacks) and multiprocessing."""
    pids: set[int] = set()
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12 deprecates child watchers
        watcher = asyncio.get_child_watcher()
        for name in ("_threads", "_callbacks"):
            pids.update(getattr(watcher, name, {}) or {})
    with contextlib.suppress(Exception):
        pids.update(p.pid for p in multiprocessing.active_children() if p.pid)
    return pids


def orphans_to_reap(zombies: set[int], seen_before: set[int], waited: set[int]) -> set[int]:
    """The zombies to reap now: seen already at the previous tick (nobody waited for them
    meanwhile) and not waited on by asyncio or multiprocessing. Pure."""
    return (zombies & seen_before) - waited


class OrphanReaper:
    """Waits, every `interval` seconds, on the zombies the daemon adopted as a subreaper."""

    def __init__(self, interval: float = REAP_INTERVAL, proc: str = "/proc"):
        self.interval = interval
        self._proc = proc
        self._seen: set[int] = set()
        self.reaped = 0

    def tick(self, waited: set[int]) -> set[int]:
        """Reap the lingering zombie children not in `waited` (waited_by_others(), read on
        the loop's thread); the pids reaped."""
        zombies = zombie_children(os.getpid(), self._proc)
        reaped = set()
        for pid in orphans_to_reap(zombies, self._seen, waited):
            with contextlib.suppress(ChildProcessError, OSError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.add(pid)
        self._seen = zombies - reaped
        self.reaped += len(reaped)
        return reaped

    def end_adopted(self, waited: set[int], wait: float = 5.0) -> list[int]:
        """(at shutdown, blocking) SIGKILL and reap the live orphans the daemon adopted (a
        predictor's process that daemonized itself), so none outlives the daemon; `waited`:
        waited_by_others(). The pids killed."""
        me = os.getpid()
        adopted = sorted(child_pids(me, self._proc) - waited)
        for pid in adopted:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + wait
        pending = set(adopted)
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                with contextlib.suppress(ChildProcessError, OSError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                pending.discard(pid)
            if pending:
                time.sleep(0.02)
        return adopted

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.tick, waited_by_others())
            except Exception:
                log.exception("reaping adopted orphan processes failed")
