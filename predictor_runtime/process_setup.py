"""What every process of a replica sets up, the supervisor and each worker alike.

server.py (a worker's request path) and supervisor.py (processes_per_replica > 1)
both need: runtime log lines on stderr with a per-process prefix, the port bound
without listening (the readiness rule of server.py's docstring), SIGTERM/SIGINT
ignored once stopping, and the process made non-dumpable (guard_process). Keeping
them here lets the two modules depend on this one instead of on each other (the
drain deadline both honour is contract.ReplicaLimits.drain_seconds).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable

log = logging.getLogger("predictor_runtime")


def libc_prctl() -> Callable[..., int] | None:
    """libc's prctl(option, arg2, arg3, arg4, arg5) through ctypes, or None off Linux (the daemon's
    process guard and backend use it too: cortexd depends on predictor_runtime, not the reverse)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def guard_process() -> bool:
    """PR_SET_DUMPABLE 0: another process of this uid (another API's predictor, when the replicas of
    a daemon share a user) can no longer read this one's /proc/<pid>/environ (its API's `env` and
    `.env`: tokens, keys), its memory, nor ptrace it; root still can (py-spy as root). A process it
    execs is dumpable again, as the kernel resets the flag on exec. False off Linux or if refused."""
    prctl = libc_prctl()
    return prctl is not None and prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE, SUID_DUMP_DISABLE


def setup_logging(prefix: str) -> None:
    """Line-buffered stdout (user prints) and runtime log lines on stderr, prefixed per worker."""
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[{prefix}] %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound socket that does NOT listen yet (connections are refused until serve())."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def ignore_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Once stopping, ignore further SIGTERM/SIGINT for good.

    Under the process backend SIGTERM reaches the whole process group, and the
    supervisor forwards its own: the loop's handler would be reset to the
    default (die) when the loop closes, and a late duplicate would then kill a
    process that is exiting cleanly.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
