"""DaemonSettings: where the daemon keeps its files, how fast its loops turn, what a user set.

One value built once and passed down; nothing else reads the environment for these, but
for CORTEXD_BASE_IMAGE: `--base-image` is declared here without a variable, and the image
builder (backends/images.py) reads CORTEXD_BASE_IMAGE itself when no base is given, for
`cortexd build` too.
Each setting a user can change is declared once, on its field (`setting(...)`: the
`cortexd up` flag, the environment variable, the default, how text becomes the value,
the help), as uvicorn's single Config does: the CLI makes its flags from these fields
(`OPTIONS`) and `configured()` reads flags, then the environment, then the defaults.
`cortexd up -d` hands its detached daemon the settings whole (`to_json` / `from_json`,
on the daemon's stdin), never back through flags. Tests build their own with a
temporary home and short intervals; `DaemonSettings()` reads the environment as
`configured({})` does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cortexd.dataclass_json import from_json as _from_json
from cortexd.dataclass_json import to_json as _to_json
from cortexd.errors import CortexdError, SocketPathTooLong, UsageError

SHARED_ENV_CACHE = Path("/var/cache/cortexd/envs")  # a root daemon's project environments

# sun_path holds 108 bytes on Linux, 104 on macOS and the BSDs, with the terminating NUL
UNIX_SOCKET_PATH_MAX = 107 if sys.platform.startswith("linux") else 103

__all__ = ["OPTIONS", "SHARED_ENV_CACHE", "UNIX_SOCKET_PATH_MAX", "DaemonSettings", "Option",
           "SocketPathTooLong", "check_socket_path", "configured", "default_home"]


def check_socket_path(path: Path | str) -> None:
    """Raise SocketPathTooLong when `path` cannot be bound or connected as a unix socket."""
    size = len(os.fsencode(str(path)))
    if size > UNIX_SOCKET_PATH_MAX:
        raise SocketPathTooLong(
            f"the control socket path {path} is {size} bytes, longer than the {UNIX_SOCKET_PATH_MAX} "
            "a unix socket allows; set CORTEXD_HOME to a shorter folder (e.g. CORTEXD_HOME=~/.cortexd)"
        )


# -- how text becomes a setting: (value, where it came from) -> the field's value -------------
# `value` is the environment's text, or the flag's value as argparse converted it (Option.type);
# the error names the setting as the user wrote it.


def _as_given(value: Any, source: str) -> Any:
    return value


def _absolute_path(value: Any, source: str) -> Path:
    # abspath, not resolve(): an absolute home keeps its spelling (symlinks too), so the
    # Docker backend's instance label (a hash of it) stays what it was; made absolute
    # because the detached daemon runs in /
    return Path(os.path.abspath(Path(value).expanduser()))


def _seconds(value: Any, source: str) -> float:
    """A positive, finite number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise CortexdError(f"{source}={value!r}: expected a positive number of seconds, e.g. {source}=60")
    return seconds


def _tmpfs_size(value: Any, source: str) -> int:
    """A memory quantity of at least 1Mi (compute.mem's syntax: 1Gi, 500Mi, bytes)."""
    from cortexd.spec.units import parse_memory

    try:
        size = parse_memory(value)
    except ValueError as e:  # it says what was wrong (a unit such as GB: use Gi or G)
        raise CortexdError(f"{source}={value!r}: {e}; e.g. {source}=2Gi") from None
    if size < 2**20:
        raise CortexdError(f"{source}={value!r}: expected a size of at least 1Mi, e.g. {source}=2Gi")
    return size


def _log_size(value: Any, source: str) -> int:
    """A log size: a memory quantity as compute.mem's (10Mi = 10 x 2^20 bytes, 10M = 10^7)."""
    from cortexd.spec.units import parse_memory

    try:
        size = parse_memory(str(value))
    except ValueError:
        size = 0
    if not 1 <= size <= 2**50:
        raise UsageError(f"log size {value!r}: expected a size such as 10Mi, 500Ki or 1048576 (bytes; "
                         "Ki, Mi, Gi are powers of 1024, k, M, G of 1000, as in compute.mem)")
    return size


def _count(value: Any, subject: str, unit: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise UsageError(f"{subject} {value!r}: expected a whole number of {unit}, at least 1")
    return count


def _attempts(value: Any, source: str) -> int:
    return _count(value, source, "attempts")


def _gateway_workers(value: Any, source: str) -> int:
    count = _count(value, source, "workers")
    if count > 64:
        raise UsageError(f"{source} {value!r}: at most 64 gateway workers")
    return count


def _log_files(value: Any, source: str) -> int:
    return _count(value, "log files", "files")


def _port(value: Any, source: str) -> int:
    if not 1 <= value <= 65535:
        raise UsageError(f"{source} {value}: expected a port number between 1 and 65535")
    return value


def _switch(value: Any, source: str) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes")


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """How a user sets one DaemonSettings field: a `cortexd up` flag, an environment variable,
    or both; the flag wins over the variable, the variable over the default."""

    flag: str | None = None
    env: str | None = None
    parse: Callable[[Any, str], Any] = _as_given
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    help: str | None = None
    metavar: str | None = None
    type: Callable[[str], Any] | None = None  # argparse's conversion of the flag's text
    choices: tuple[str, ...] | None = None
    switch: bool = False  # a flag without a value (on when given)
    # `cortexd deploy` takes the flag too, for the projects it deploys (sent with the request;
    # the daemon's own value, from `up`, holds for every project)
    deploy: bool = False

    def value(self, flag_value: Any = None, env: Mapping[str, str] | None = None) -> Any:
        """The flag's value when given, else the environment's, else the default. An empty one
        is not given: `--host ""` must not bind every interface, an empty variable is unset."""
        if flag_value is not None and flag_value is not False and flag_value != "":
            return self.parse(flag_value, self.flag or "")
        text = env.get(self.env) if env is not None and self.env else None
        if text:
            return self.parse(text, self.env or "")
        return self.default_factory() if self.default_factory is not None else self.default


def setting(default: Any = None, *, default_factory: Callable[[], Any] | None = None, **how: Any) -> Any:
    """A DaemonSettings field that a user sets as `how` (an Option) says."""
    option = Option(default=default, default_factory=default_factory, **how)
    if option.env is None and default_factory is None:
        return field(default=default, metadata={"option": option})
    return field(default_factory=lambda: option.value(env=os.environ), metadata={"option": option})


@dataclass(frozen=True)
class DaemonSettings:
    home: Path = setting(env="CORTEXD_HOME", parse=_absolute_path,  # noqa: RUF009 - a dataclasses.field
                         default_factory=lambda: Path.home() / ".cortexd")
    # `cortexd up`'s flags, in the order its --help lists them
    backend: str = setting("auto", flag="--backend", choices=("auto", "process", "docker"))
    host: str = setting("127.0.0.1", flag="--host",
                        help="gateway bind address (default 127.0.0.1)")
    base_image: str | None = setting(flag="--base-image", help="base image for Docker replica images")
    # the admin port, on --host: Prometheus metrics (GET /metrics) and the web console (GET /);
    # 0 = off (the metrics stay on the control socket)
    metrics_port: int = setting(
        8889, flag="--metrics-port", type=int, metavar="PORT",
        help="Prometheus metrics at http://127.0.0.1:PORT/metrics and the web console at "
             "http://127.0.0.1:PORT/ (on --host's address; default 8889; 0: off, the metrics "
             "stay at /metrics on the control socket)")
    # the gateway's processes: the daemon's own and gateway_workers - 1 more on the same ports
    # (SO_REUSEPORT), sharing in-flight counts (gateway/workers.py); 1: the daemon's alone
    gateway_workers: int = setting(
        1, flag="--gateway-workers", env="CORTEXD_GATEWAY_WORKERS", parse=_gateway_workers, type=int,
        metavar="N",
        help="gateway processes serving the APIs' ports (default 1: the daemon's own; more for a "
             "host with many cores and replicas: each takes a share of the connections; env "
             "CORTEXD_GATEWAY_WORKERS)")
    # logs: daemon.log and each replica's log rotate at log_max_bytes, keeping log_files files
    # (so at most log_max_bytes x log_files each)
    log_max_bytes: int = setting(
        10 * 2**20, flag="--log-max-size", env="CORTEXD_LOG_MAX_SIZE", parse=_log_size, metavar="SIZE",
        help="rotate daemon.log and each replica's log at SIZE bytes (default 10Mi: 10 x 2^20; "
             "Ki, Mi, Gi are powers of 1024, k, M, G of 1000, as in compute.mem; env CORTEXD_LOG_MAX_SIZE)")
    log_files: int = setting(
        5, flag="--log-files", env="CORTEXD_LOG_FILES", parse=_log_files, type=int, metavar="N",
        help="files kept per log, the current one included (default 5; env CORTEXD_LOG_FILES)")
    # process backend: the user every replica runs as ("" = the default: a root daemon gives each
    # API a uid of its own from replica_uids, where that uid can run it, else runs it as root and
    # says why; "root" opts out)
    replica_user: str = setting(
        "", flag="--replica-user", env="CORTEXD_REPLICA_USER", metavar="USER",
        help="process backend, daemon run as root: one user every replica runs as (default: "
             "each API a uid of its own, from CORTEXD_REPLICA_UIDS, 70000-99999; `root` "
             "opts out; env CORTEXD_REPLICA_USER)")
    # a project's dependencies.sh runs on this host only when opted in
    run_dependencies_sh: bool = setting(
        False, flag="--run-dependencies-sh", env="CORTEXD_RUN_DEPENDENCIES_SH", parse=_switch, switch=True,
        help="process backend: run each project's dependencies.sh on this host before "
             "its requirements (off: it is skipped with a notice; env CORTEXD_RUN_DEPENDENCIES_SH=1)")
    # APIs that request compute.gpu served on the CPU, no GPU placed (local work on a host without
    # one, or with its GPUs kept free); shown by `get API` and the live view (core/placement.py)
    cpu_only: bool = setting(
        False, flag="--cpu-only", env="CORTEXD_CPU_ONLY", parse=_switch, switch=True, deploy=True,
        help="serve APIs that request compute.gpu on the CPU, for local work (no GPU is placed; "
             "without it such an API shows error on a host without a GPU); `deploy --cpu-only` "
             "for the projects it deploys; env CORTEXD_CPU_ONLY=1")
    # old pins (issue 17): for each requirement that cannot be installed on this Python, install the
    # nearest release that can and say so (process backend); off: the pins as written, and a
    # failed install names every line that cannot be installed
    nearest_pins: bool = setting(
        False, flag="--nearest-pins", env="CORTEXD_NEAREST_PINS", parse=_switch, switch=True, deploy=True,
        help="process backend: for each pin of requirements.txt that cannot be installed on this "
             "Python, install the nearest release that can, and say each change in `get` (off: the "
             "pins as written; env CORTEXD_NEAREST_PINS=1; `deploy --nearest-pins` for one project)")
    # the local_port of every API that sets none (None: the schema's 8888)
    default_local_port: int | None = setting(
        flag="--port", parse=_port, type=int, metavar="PORT",
        help="the local_port of every API that sets none (default 8888; legacy kind: api "
             "APIs have no local_port field); `deploy` uses it too")
    # environment only
    # seconds a replica may take to answer (504 after)
    upstream_timeout: float = setting(60.0, env="CORTEXD_UPSTREAM_TIMEOUT", parse=_seconds)
    # slow clients (nginx's client_header_timeout / client_body_timeout): a request head must
    # arrive within the first, a body may pause no longer than the second; 408 after
    client_header_timeout: float = setting(60.0, env="CORTEXD_CLIENT_HEADER_TIMEOUT", parse=_seconds)
    client_body_timeout: float = setting(60.0, env="CORTEXD_CLIENT_BODY_TIMEOUT", parse=_seconds)
    # bytes each of a replica container's tmpfs mounts (/tmp, HOME) may hold (None: half of
    # compute.mem, else 1 GiB; container_args.tmpfs_size)
    tmpfs_bytes: int | None = setting(env="CORTEXD_TMPFS_SIZE", parse=_tmpfs_size)
    # the range of the replicas' own uids (START-END, no passwd entries needed)
    replica_uids: str = setting("70000-99999", env="CORTEXD_REPLICA_UIDS")
    # process backend: project environments (backends/environments.py) live in env_cache
    # (None: home/envs; one cache shared between homes)
    env_cache: Path | None = setting(env="CORTEXD_ENV_CACHE", parse=_absolute_path)  # noqa: RUF009 - as home
    # a BatchAPI job's batch is tried at most this many times (its error, or its worker or the
    # daemon lost while it ran), then recorded failed (daemon/jobs.py)
    batch_max_attempts: int = setting(3, env="CORTEXD_BATCH_MAX_ATTEMPTS", parse=_attempts)
    # internal: what tests tune
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

    def with_(self, **changes: Any) -> DaemonSettings:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """Every value, as `cortexd up -d` hands them to its detached daemon."""
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DaemonSettings:
        return _from_json(cls, data)


# The settings a user can set: field name -> Option, in declaration order (the flags' order).
OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in fields(DaemonSettings)
                              if "option" in f.metadata}


def configured(flags: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> DaemonSettings:
    """The settings a command runs with: each option from its flag (`flags`: field name -> the
    parsed flag, None or absent when not given), else from `env`, else its default."""
    return DaemonSettings(**{name: option.value(flags.get(name), env) for name, option in OPTIONS.items()})


def default_home(env: Mapping[str, str] = os.environ) -> Path:
    """CORTEXD_HOME, made absolute (the detached daemon runs in /), else ~/.cortexd."""
    return OPTIONS["home"].value(env=env)

