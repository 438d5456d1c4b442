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
  zombies. Its own children have waiters already (the event loop for its subprocesses:
  uvloop's libuv on SIGCHLD, asyncio's pidfd or thread watchers; subprocess.run and
  multiprocessing on their own pids): a waitpid(-1) here would steal their exit statuses.
  So the reaper reaps only a zombie child that stayed a zombie from one scan to the next,
  checked again on the event loop's thread just before: the loop ran in between (the
  scan's thread answered through it, and it slept a whole interval), and it waits for
  its children within the loop iteration after their exit, so a zombie still waitable
  then has no waiter in the loop. The check is os.waitid(WNOWAIT), which reads a child's
  exit without taking it; multiprocessing's children are skipped by its public
  active_children(). No private asyncio state is read. At shutdown, end_adopted() kills
  the live children nobody waits for any more (a predictor's process that daemonized
  itself), so none outlives the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time

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
    """The children multiprocessing waits on (the config loader's pool), from its public API."""
    return {p.pid for p in multiprocessing.active_children() if p.pid}


def unwaited_exit(pid: int) -> bool:
    """Whether `pid` is a child of this process that exited and that nobody waited for yet.
    os.waitid with WNOWAIT reads it and leaves it waitable: the exit status stays its waiter's."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # not a child (any more): someone else took it
        return False


def orphans_to_reap(zombies: set[int], seen_before: set[int], waited: set[int]) -> set[int]:
    """The zombies to reap now: seen already at the previous scan (nobody waited for them
    meanwhile) and not multiprocessing's. Pure."""
    return (zombies & seen_before) - waited


class OrphanReaper:
    """Waits, every `interval` seconds, on the zombies the daemon adopted as a subreaper."""

    def __init__(self, interval: float = REAP_INTERVAL, proc: str = "/proc"):
        self.interval = interval
        self._proc = proc
        self._seen: set[int] = set()
        self.reaped = 0

    def scan(self) -> set[int]:
        """(blocking: /proc reads; off the loop) This process's zombie children now."""
        return zombie_children(os.getpid(), self._proc)

    def reap(self, zombies: set[int], waited: set[int]) -> set[int]:
        """(on the event loop's thread) Reap the zombies of this scan that the previous scan saw
        too, are not in `waited` (waited_by_others()) and nobody waited for since; the pids reaped."""
        reaped = set()
        for pid in orphans_to_reap(zombies, self._seen, waited):
            if unwaited_exit(pid):
                with contextlib.suppress(ChildProcessError, OSError):
                    if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG) is not None:
                        reaped.add(pid)
        self._seen = zombies - reaped
        self.reaped += len(reaped)
        return reaped

    def end_adopted(self, waited: set[int], wait: float = 5.0) -> list[int]:
        """(at shutdown, blocking) SIGKILL and reap the children nobody waits for any more: the
        orphans the daemon adopted (a predictor's process that daemonized itself), so none
        outlives the daemon. `waited`: the children to leave alone, those some part of the
        process still waits for (waited_by_others(), plus what the caller knows). The pids killed."""
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
                zombies = await asyncio.to_thread(self.scan)
                self.reap(zombies, waited_by_others())  # on the loop's thread: see the module docstring
            except Exception:
                log.exception("reaping adopted orphan processes failed")
