"""Starting the daemon from the CLI: detached (`up -d`), its hidden entry point, and its logging.

`start_detached` runs `python -m cortexd _daemon` in a session of its own, with daemon.log as
its stdout and stderr, and writes the settings the CLI resolved (flags, environment,
defaults: cortexd/settings.py) and the project paths on its stdin, as JSON: the daemon
reads them whole (`run_detached`), never back from flags. It returns the daemon's first
status once the control socket answers, or raises what the CLI says (cli.py prints, this
module does not). The foreground `up` runs the daemon in the CLI's own process with the
same `configure_logging` and `run`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import IO, Any

from cortexd.control_client import ControlClient
from cortexd.errors import DaemonStartFailed, DaemonUnavailable
from cortexd.settings import DaemonSettings
from cortexd.status import Status

START_TIMEOUT = 60.0  # seconds `up -d` waits for the control socket to answer


def start_detached(settings: DaemonSettings, paths: list[str]) -> Status:
    """Start the daemon in the background; its status once it answers. Raises DaemonStartFailed
    (it exited: the lines it wrote to daemon.log) or DaemonUnavailable (no answer in time)."""
    from cortexd.home import open_nofollow, prepare_home
    from cortexd.logfiles import end_position, read_since

    prepare_home(settings.home)  # the daemon's own (cortexd/home.py), before anything is written there
    start = end_position(settings.daemon_log)  # a failed start shows only what it wrote itself
    log_fd = open_nofollow(settings.daemon_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(log_fd, "ab") as log:  # the daemon keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "cortexd", "_daemon"], stdin=subprocess.PIPE, stdout=log,
            stderr=log, start_new_session=True, cwd="/",
            # absolute: a relative CORTEXD_HOME would mean another folder from the daemon's cwd
            env={**os.environ, "CORTEXD_HOME": str(settings.home)},
        )
    _hand_over(proc.stdin, settings, paths)
    client = ControlClient(settings, timeout=5)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            tail = "\n".join(read_since(settings.daemon_log, start)[0][-20:])
            raise DaemonStartFailed(f"the daemon exited during start-up (code {proc.returncode}):\n{tail}")
        try:
            return client.status()
        except DaemonUnavailable:
            if time.monotonic() > deadline:
                raise DaemonUnavailable(f"the daemon did not answer within {START_TIMEOUT:g}s; "
                                        f"see {settings.daemon_log}") from None
            time.sleep(0.1)


def _hand_over(pipe: IO[bytes] | None, settings: DaemonSettings, paths: list[str]) -> None:
    """The settings whole, as this command resolved them, and the paths: on the daemon's stdin."""
    if pipe is None:  # stdin=PIPE gives one
        raise RuntimeError("the daemon has no stdin to read its settings from")
    try:
        with pipe:
            pipe.write(json.dumps({"settings": settings.to_json(), "paths": paths}).encode())
    except BrokenPipeError:
        pass  # it exited at once: start_detached says so, with what it wrote to daemon.log


def run_detached() -> None:
    """The detached daemon (`cortexd _daemon`): its settings and paths from stdin, then it runs
    until shut down; its output goes to daemon.log, as `up -d` opened it."""
    from cortexd.daemon.running import run_daemon

    start = json.load(sys.stdin)
    null = os.open(os.devnull, os.O_RDONLY)  # nothing it starts inherits the pipe
    os.dup2(null, sys.stdin.fileno())
    os.close(null)
    settings = DaemonSettings.from_json(start["settings"])
    # its stdout and stderr (daemon.log, from `up -d`) follow daemon.log's rotation
    configure_logging(verbose=True, path=settings.daemon_log, settings=settings, capture_std=True)
    run(run_daemon(settings, start["paths"]))


def configure_logging(verbose: bool, path: Path | None = None, settings: DaemonSettings | None = None,
                      capture_std: bool = False) -> None:
    """Log to stderr, or to `path` (daemon.log) rotated by size as settings say."""
    if path is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        from cortexd.logfiles import DaemonLogHandler

        s = settings or DaemonSettings()
        handler = DaemonLogHandler(path, s.log_max_bytes, s.log_files, capture_std=capture_std)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s" if verbose
                                           else "%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def run(coro: Coroutine[Any, Any, Any]) -> None:
    """Run the daemon's main coroutine on uvloop (asyncio's loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
