"""DaemonSettings: where the daemon keeps its files and how fast its loops turn.

One value built once (by the CLI, from flags and environment) and passed down;
nothing else reads the environment for these. Tests build their own with a
temporary home and short intervals.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from cortexd.errors import CortexdError, SocketPathTooLong

SHARED_ENV_CACHE = Path("/var/cache/cortexd/envs")  # a root daemon's project environments

# sun_path holds 108 bytes on Linux, 104 on macOS and the BSDs, with the terminating NUL
UNIX_SOCKET_PATH_MAX = 107 if sys.platform.startswith("linux") else 103


def default_home() -> Path:
    """CORTEXD_HOME, made absolute (the detached daemon runs in /), else ~/.cortexd."""
    env = os.environ.get("CORTEXD_HOME")
    if env:
        # abspath, not resolve(): an absolute home keeps its spelling (symlinks too),
        # so the Docker backend's instance label (a hash of it) stays what it was
        return Path(os.path.abspath(Path(env).expanduser()))
    return Path.home() / ".cortexd"


def check_socket_path(path: Path | str) -> None:
    """Raise SocketPathTooLong when `path` cannot be bound or connected as a unix socket."""
    size = len(os.fsencode(str(path)))
    if size > UNIX_SOCKET_PATH_MAX:
        raise SocketPathTooLong(
            f"the control socket path {path} is {size} bytes, longer than the {UNIX_SOCKET_PATH_MAX} "
            "a unix socket allows; set CORTEXD_HOME to a shorter folder (e.g. CORTEXD_HOME=~/.cortexd)"
        )


def _env_seconds(name: str, default: float) -> float:
    """A positive, finite number of seconds from the environment variable `name`, else `default`."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise CortexdError(f"{name}={text!r}: expected a positive number of seconds, e.g. {name}=60")
    return value


def _env_bytes(name: str) -> int | None:
    """A positive memory quantity (compute.mem's syntax: 1Gi, 500Mi, bytes) from the environment
    variable `name`, else None."""
    text = os.environ.get(name)
    if not text:
        return None
    from cortexd.spec.units import parse_memory

    try:
        value = parse_memory(text)
    except ValueError as e:  # it says what was wrong (a unit such as GB: use Gi or G)
        raise CortexdError(f"{name}={text!r}: {e}; e.g. {name}=2Gi") from None
    if value < 2**20:
        raise CortexdError(f"{name}={text!r}: expected a size of at least 1Mi, e.g. {name}=2Gi")
    return value


@dataclass(frozen=True)
class DaemonSettings:
    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"  # gateway bind address; --host opts in to others
    backend: str = "auto"  # auto | process | docker
    # readiness probing and reconciling
    reconcile_interval: float = 1.0
    probe_timeout: float = 2.0
    start_timeout: float = 300.0  # a replica not ready by then counts as failed
    # crash restarts: exponential backoff 1 s .. 5 min; `crash_error_after` crashes in a row -> error
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    crash_error_after: int = 3
    # gateway
    max_body_size: int = 32 * 2**20
    no_replica_wait: float = 30.0
    # seconds a replica may take to answer (504 after); env CORTEXD_UPSTREAM_TIMEOUT
    upstream_timeout: float = field(default_factory=lambda: _env_seconds("CORTEXD_UPSTREAM_TIMEOUT", 60.0))
    # slow clients (nginx's client_header_timeout / client_body_timeout): a request head must
    # arrive within the first, a body may pause no longer than the second; 408 after.
    # env CORTEXD_CLIENT_HEADER_TIMEOUT / CORTEXD_CLIENT_BODY_TIMEOUT
    client_header_timeout: float = field(
        default_factory=lambda: _env_seconds("CORTEXD_CLIENT_HEADER_TIMEOUT", 60.0))
    client_body_timeout: float = field(
        default_factory=lambda: _env_seconds("CORTEXD_CLIENT_BODY_TIMEOUT", 60.0))
    # passive health (cortexd.core.health): `eject_after_failures` connection failures in a
    # row take a replica out of rotation for `ejection_time` (longer each time); a replica
    # whose `unhealthy_after_timeouts` requests in a row timed out is hung, and replaced
    eject_after_failures: int = 3
    ejection_time: float = 10.0
    unhealthy_after_timeouts: int = 3
    # liveness: a ready replica's /healthz is checked every `liveness_interval` seconds;
    # `liveness_failures` failed checks in a row (not 200, or no answer) and it is replaced
    liveness_interval: float = 5.0
    liveness_failures: int = 3
    # shutdown
    drain_timeout: float = 10.0
    stop_timeout: float = 10.0
    # autoscaler
    sample_interval: float = 1.0
    autoscale_tick: float = 10.0
    # watcher: reload `debounce` s after the last save of a burst, at most `debounce_max_wait` s
    # after its first (saves that never pause still get their code served)
    debounce: float = 0.5
    debounce_max_wait: float = 2.0
    # Prometheus metrics: GET /metrics on 127.0.0.1:metrics_port (0 = only on the control socket)
    metrics_port: int = 8889
    # docker backend
    base_image: str | None = None
    # bytes each of a replica container's tmpfs mounts (/tmp, HOME) may hold (None: half of
    # compute.mem, else 1 GiB; container_args.tmpfs_size); env CORTEXD_TMPFS_SIZE (1Gi, 500Mi...)
    tmpfs_bytes: int | None = field(default_factory=lambda: _env_bytes("CORTEXD_TMPFS_SIZE"))
    # the local_port of every API that sets none (`cortexd up --port`; None: the schema's 8888)
    default_local_port: int | None = None
    # logs: daemon.log and each replica's log rotate at log_max_bytes, keeping log_files files
    # (so at most log_max_bytes x log_files each); env CORTEXD_LOG_MAX_SIZE / CORTEXD_LOG_FILES
    log_max_bytes: int = 10 * 2**20
    log_files: int = 5
    # process backend: the user every replica runs as ("" = the default: a root daemon gives each
    # API a uid of its own from replica_uids, where that uid can run it, else runs it as root and
    # says why; "root" opts out); env CORTEXD_REPLICA_USER, flag --replica-user
    replica_user: str = field(default_factory=lambda: os.environ.get("CORTEXD_REPLICA_USER", ""))
    # the range of those uids (START-END, no passwd entries needed); env CORTEXD_REPLICA_UIDS
    replica_uids: str = field(default_factory=lambda: os.environ.get("CORTEXD_REPLICA_UIDS", "70000-99999"))
    # process backend: project environments (backends/environments.py) live in env_cache
    # (None: home/envs; env CORTEXD_ENV_CACHE shares one cache between homes); a project's
    # dependencies.sh runs on this host only when opted in (--run-dependencies-sh,
    # CORTEXD_RUN_DEPENDENCIES_SH=1)
    env_cache: Path | None = field(
        default_factory=lambda: Path(os.path.abspath(os.environ["CORTEXD_ENV_CACHE"]))
        if os.environ.get("CORTEXD_ENV_CACHE") else None)
    run_dependencies_sh: bool = field(
        default_factory=lambda: os.environ.get("CORTEXD_RUN_DEPENDENCIES_SH", "").lower() in ("1", "true", "yes"))

    @property
    def socket_path(self) -> Path:
        return self.home / "cortexd.sock"

    def check_socket_path(self) -> None:
        check_socket_path(self.socket_path)

    @property
    def pid_path(self) -> Path:
        return self.home / "cortexd.pid"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def previous_log_dir(self) -> Path:
        """The replica logs of the daemon's previous run (`cortexd logs API --previous`)."""
        return self.home / "logs.previous"

    @property
    def daemon_log(self) -> Path:
        return self.home / "daemon.log"


    def replica_limits(self) -> dict[str, str]:
        """What each replica's runtime enforces as the gateway does (predictor_runtime reads these):
        the decoded-body limit and the request timeout behind its stuck-thread health rule."""
        return {"CORTEXD_MAX_BODY_SIZE": str(self.max_body_size),
                "CORTEXD_REQUEST_TIMEOUT": f"{self.upstream_timeout:g}"}
    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def environments_dir(self) -> Path:
        """env_cache, else home/envs; but a root daemon whose replicas run unprivileged keeps
        them in /var/cache/cortexd/envs: its home (0700) is closed to the replicas' user."""
        if self.env_cache is not None:
            return self.env_cache
        if hasattr(os, "geteuid") and os.geteuid() == 0 and self.replica_user.strip() not in ("root", "0"):
            return SHARED_ENV_CACHE
        return self.home / "envs"

    def with_(self, **changes) -> DaemonSettings:
        return replace(self, **changes)
