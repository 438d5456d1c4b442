"""A uid of its own for each API's process replicas and for each environment build (root daemon).

systemd's DynamicUser is the model: uids from a range no passwd entry names, handed out
without creating users. With one uid per API, one API's predictor cannot signal another's
replicas, write its HOME or TMPDIR, or read its runtime spec; with a fresh uid per environment
build, code a build runs (a setup.py, dependencies.sh) shares a uid with no replica and no other
build, and what it wrote is sealed root-owned before any replica loads it (environments.py).

The registry is one JSON file, /var/lib/cortexd/replica-uids.json (root, 0600), changed under
an flock, so the root daemons of one host (one per CORTEXD_HOME) never hand out the same uid:
`{"<uid>": {"owner": "<daemon home>", "key": "api:<name>" | "build:<token>", "pid": ...},
"next": <uid>}`: uids are handed out in turn from "next", so one given back is not
handed out again until the range has gone round.
An API keeps its uid for as long as its daemon's home exists (its persistent HOME belongs to
that uid); a build's uid is released when the build ends. Entries whose daemon home is gone, and
build entries whose daemon died, are dropped when a uid is next handed out, and the caller is
told which (their HOMEs are removed). A uid that still owns a process (a leftover of a killed
daemon) is never handed out.

choose_uid() and stale_uids() are pure; UidRegistry does the file and /proc I/O.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cortexd.errors import BackendError
from cortexd.procfs import pid_alive, uids_with_processes

REGISTRY = Path("/var/lib/cortexd/replica-uids.json")
# above 65535 (systemd's dynamic users end at 65519, nobody is 65534) and below 100000, where
# /etc/subuid ranges for rootless containers start: uids no convention hands to anyone else
DEFAULT_RANGE = (70000, 99999)


def parse_range(text: str) -> tuple[int, int]:
    """`START-END` (inclusive) -> (start, end); a BackendError saying the form otherwise."""
    start, sep, end = text.strip().partition("-")
    try:
        if not sep:
            raise ValueError
        low, high = int(start), int(end)
    except ValueError:
        raise BackendError(f"CORTEXD_REPLICA_UIDS={text!r}: expected START-END, e.g. 70000-99999") from None
    if not 1000 <= low <= high < 2**31:
        raise BackendError(f"CORTEXD_REPLICA_UIDS={text!r}: expected 1000 <= START <= END < 2^31")
    return low, high


def mapped(uid_map: str, low: int, high: int) -> bool:
    """Whether this user namespace maps every uid of low..high (/proc/self/uid_map's text): a
    container with 65536 uids cannot setuid(70000)."""
    for line in uid_map.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
            first, count = int(parts[0]), int(parts[2])
            if first <= low and high < first + count:
                return True
    return False


def choose_uid(low: int, high: int, taken: Iterable[int], busy: Callable[[int], bool],
               start: int | None = None) -> int | None:
    """The first uid from `start` on (wrapping around low..high) that is neither taken nor busy
    (named in passwd, owning a process); None when the range is full. Starting after the last
    one handed out, a dropped uid is handed out again only once the range has gone round."""
    taken = set(taken)
    first = start if start is not None and low <= start <= high else low
    for uid in [*range(first, high + 1), *range(low, first)]:
        if uid not in taken and not busy(uid):
            return uid
    return None


def stale_uids(entries: Mapping[str, Mapping], home_exists: Callable[[str], bool],
               pid_alive: Callable[[int], bool]) -> list[int]:
    """The uids to drop: those of a daemon home that is gone, and builds whose daemon died."""
    out = []
    for uid, entry in entries.items():
        owner, key = str(entry.get("owner", "")), str(entry.get("key", ""))
        gone = not home_exists(owner)
        if gone or (key.startswith("build:") and not pid_alive(int(entry.get("pid", 0) or 0))):
            out.append(int(uid))
    return sorted(out)


@dataclass
class UidRegistry:
    """The host's registry of replica and build uids, for the daemon whose home is `owner`."""

    owner: str
    uid_range: tuple[int, int] = DEFAULT_RANGE
    path: Path | None = None  # None: REGISTRY
    proc: str = "/proc"
    # called with the uids dropped as stale (their HOMEs go); set by the process backend
    on_dropped: Callable[[list[int]], None] | None = None

    def problem(self) -> str | None:
        """Why this daemon cannot hand out uids (not root, the range not mapped), or None."""
        if os.geteuid() != 0:
            return "only a root daemon can run replicas as other users"
        try:
            uid_map = Path(self.proc, "self", "uid_map").read_text()
        except OSError:
            uid_map = f"0 0 {2**32 - 1}"  # no user namespaces: every uid exists
        low, high = self.uid_range
        if not mapped(uid_map, low, high):
            return (f"this host's user namespace does not map the uids {low}-{high} "
                    "(set CORTEXD_REPLICA_UIDS=START-END to a mapped range)")
        return None

    def assign(self, key: str) -> int:
        """(blocking) The uid of `key` for this daemon ("api:<name>"), handing out a new one
        the first time. BackendError when the registry cannot be written or the range is full."""
        return self._change(key, keep=True)

    def lease(self) -> int:
        """(blocking) A uid for one environment build; release() it when the build ends."""
        return self._change(f"build:{secrets.token_hex(6)}", keep=False)

    def release(self, uid: int) -> None:
        """(blocking) Give a build's uid back (an API's uid is kept)."""
        with self._locked() as entries:
            entry = entries.get(str(uid))
            if entry is not None and entry.get("owner") == self.owner and \
                    str(entry.get("key", "")).startswith("build:"):
                del entries[str(uid)]

    def owned(self) -> set[int]:
        """(blocking) Every uid this daemon holds (its APIs' and its builds' in progress)."""
        try:
            entries = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return set()
        return {int(uid) for uid, e in entries.items()
                if uid.isdigit() and isinstance(e, dict) and e.get("owner") == self.owner}

    @property
    def file(self) -> Path:
        return self.path if self.path is not None else REGISTRY

    def _change(self, key: str, keep: bool) -> int:
        with self._locked() as entries:
            for uid, entry in entries.items():
                if uid.isdigit() and entry.get("owner") == self.owner and entry.get("key") == key:
                    return int(uid)
            dropped = stale_uids({u: e for u, e in entries.items() if u.isdigit()}, os.path.isdir, pid_alive)
            for uid in dropped:
                entries.pop(str(uid), None)
            if dropped and self.on_dropped is not None:
                self.on_dropped(dropped)
            owners = uids_with_processes(self.proc)
            uid = choose_uid(*self.uid_range, (int(u) for u in entries if u.isdigit()),
                             lambda u: u in owners or _in_passwd(u), start=int(entries.get("next", 0)))
            if uid is None:
                low, high = self.uid_range
                raise BackendError(f"every uid of {low}-{high} is in use by cortexd replicas "
                                   f"({self.file}); widen CORTEXD_REPLICA_UIDS")
            entries[str(uid)] = {"owner": self.owner, "key": key, "pid": os.getpid()}
            entries["next"] = uid + 1
            return uid

    @contextlib.contextmanager
    def _locked(self):
        """The registry's entries, written back when the block ends without an error."""
        path = self.file
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise BackendError(f"cannot open the replica uid registry {path}: {e.strerror}") from None
        with os.fdopen(fd, "r+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            if os.fstat(f.fileno()).st_uid != os.geteuid():
                raise BackendError(f"the replica uid registry {path} is not owned by this user; "
                                   "remove it")
            try:
                entries = json.loads(f.read() or "{}")
                if not isinstance(entries, dict):
                    raise ValueError
            except ValueError:
                entries = {}  # unreadable: start again (uids in use are still skipped: busy)
            entries = {k: v for k, v in entries.items()
                       if (k.isdigit() and isinstance(v, dict)) or (k == "next" and isinstance(v, int))}
            yield entries
            f.seek(0)
            f.truncate()
            f.write(json.dumps(entries, indent=0, sort_keys=True))
            f.flush()


def _in_passwd(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False
