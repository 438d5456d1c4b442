"""Driving a real cortexd from tests: its CLI against a private home, HTTP on loopback, free ports,
whether a process is alive, which processes a replica's session holds.

The `cli` fixture (tests/conftest.py) gives each test a `CLI` with its own home and stops
its daemon afterwards. Projects to serve are built with tests/builders.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.builders import REPO

__all__ = [
    "CLI",
    "REPO",
    "Result",
    "children_running",
    "free_port",
    "http",
    "pid_alive",
    "post_json",
    "readable_by_all",
    "replica_pids",
    "server_has_read",
    "session_members",
    "shared_daemon",
    "wait_until",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Result:
    code: int
    out: str
    err: str


class CLI:
    """Runs `python -m cortexd ...` (or an installed `cortexd`) against a private daemon home
    (CORTEXD_HOME)."""

    def __init__(self, home: Path, program: list[str] | None = None):
        self.home = home
        # the defaults a user gets (issue 15): no replica user, backend or port range is set here;
        # a test that needs another setting sets it itself
        self.env = {**os.environ, "CORTEXD_HOME": str(home), "PYTHONPATH": str(REPO)}
        # how `cortexd` is run: this checkout on this Python, or an installed one (its `cortexd`)
        self.program = program or [sys.executable, "-m", "cortexd"]
        if program is not None:
            self.env.pop("PYTHONPATH")

    def __call__(self, *args: str, timeout: float = 120, check: bool = False) -> Result:
        p = subprocess.run([*self.program, *args], env=self.env, cwd=str(REPO),
                           capture_output=True, text=True, timeout=timeout, check=False)
        result = Result(p.returncode, p.stdout, p.stderr)
        if check and p.returncode != 0:
            raise AssertionError(f"cortexd {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return result

    def status(self) -> dict:
        return json.loads(self("get", "-o", "json", check=True).out)

    def api(self, name: str) -> dict:
        return json.loads(self("get", name, "-o", "json", check=True).out)

    def wait_for(self, predicate, timeout: float = 60, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        snap = None
        while time.monotonic() < deadline:
            snap = self.status()
            if predicate(snap):
                return snap
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last status:\n{json.dumps(snap, indent=1)}"
                             f"\ndaemon log:\n{self.daemon_log()}")

    def daemon_log(self) -> str:
        try:
            return (self.home / "daemon.log").read_text()[-5000:]
        except OSError:
            return ""


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """The first truthy value of `predicate()`, polled every `interval` for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(url: str, value, timeout: float = 30) -> tuple[int, dict, bytes]:
    return http("POST", url, json.dumps(value).encode(), {"Content-Type": "application/json"}, timeout)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def server_has_read(pid: int, port: int, client_ports: set[int]) -> bool:
    """Whether process `pid` accepted each connection from `client_ports` to `port` and read all it was sent.

    Linux's /proc: a connection still in the listen backlog is no file of the process, and
    a socket's receive queue holds what its process has not read yet. Tests wait on this
    instead of sleeping to let a server take slow clients in.
    """
    owned = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            owned.add(target[len("socket:["):-1])
    read = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()  # sl local remote st tx:rx tr:when retrnsmt uid timeout inode
            local, remote = int(fields[1].rpartition(":")[2], 16), int(fields[2].rpartition(":")[2], 16)
            unread = int(fields[4].partition(":")[2], 16)
            if local == port and remote in client_ports and fields[9] in owned and unread == 0:
                read.add(remote)
    return read == client_ports


def _process_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command: state, ppid, pgrp, session, ...)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), fields


def session_members(sid: int) -> list[int]:
    """Pids whose session id is `sid` (a replica and the workers it spawned)."""
    return [pid for pid, fields in _process_stats() if fields[0] != "Z" and int(fields[3]) == sid]


def children_running(parent: int, word: bytes) -> list[int]:
    """The live children of `parent` whose command line holds `word` (a module's name)."""
    found = []
    for pid, fields in _process_stats():
        if fields[0] != "Z" and int(fields[1]) == parent:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                if word in f.read():
                    found.append(pid)
    return found


def replica_pids(snap: dict) -> list[int]:
    return [int(r["backend"]["pid"]) for a in snap["apis"] for r in a["replica_list"]]


def readable_by_all(project: Path) -> Path:
    """`project` and its files readable by every user (a root daemon's replica uids)."""
    for p in [project, *project.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return project


@contextlib.contextmanager
def shared_daemon(program: Path, prefix: str) -> Iterator[tuple[Path, CLI]]:
    """(a folder every user can enter, a CLI running `program` on a home in it): what a root
    daemon needs to run replicas as other uids (tmp_path's parents are 0700; pyenv's Python is
    under /root). Its daemon is stopped and the folder removed afterwards."""
    shared = Path(tempfile.mkdtemp(prefix=prefix))
    cli = CLI(shared / "home", program=[str(program)])
    try:
        shared.chmod(0o755)
        yield shared, cli
    finally:
        if (cli.home / "cortexd.sock").exists():
            cli("down", timeout=90)
        shutil.rmtree(shared, ignore_errors=True)
