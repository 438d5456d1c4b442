"""The `cortexd` command line: the only place that prints for humans or exits.

Exit codes (one table, EXIT_CODES): 0 ok, 1 user error (bad config, unknown API,
failed request), 2 usage, 3 daemon unavailable. The CLI talks to a running
daemon over its control socket (JSON over HTTP on a unix socket); `up` in the
foreground runs the daemon in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cortexd import __version__
from cortexd.errors import (
    BackendUnavailable,
    ConfigError,
    ConfigRejected,
    CortexdError,
    DaemonAlreadyRunning,
    DaemonUnavailable,
    RequestError,
    SocketPathTooLong,
    UnknownAPI,
    UsageError,
)
from cortexd.procfs import pid_alive
from cortexd.settings import DaemonSettings
from cortexd.status import APIStatus, Status

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_DAEMON = 0, 1, 2, 3
EXIT_CODES: dict[type[CortexdError], int] = {
    ConfigError: EXIT_USER,
    UnknownAPI: EXIT_USER,
    RequestError: EXIT_USER,
    DaemonAlreadyRunning: EXIT_USER,
    BackendUnavailable: EXIT_USER,
    DaemonUnavailable: EXIT_DAEMON,
    SocketPathTooLong: EXIT_USER,
    ConfigRejected: EXIT_USER,
    UsageError: EXIT_USAGE,
}


def exit_code_for(error: CortexdError) -> int:
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_USER


# -- control socket client ----------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("cortexd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class ControlClient:
    def __init__(self, settings: DaemonSettings, timeout: float = 30.0):
        self.path = str(settings.socket_path)
        self.timeout = timeout

    def _open(self, method: str, url: str, body: Any = None, timeout: float | None = None):
        conn = _UnixConnection(self.path, timeout if timeout is not None else self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, url, body=payload, headers=headers)
            return conn, conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            conn.close()
            raise DaemonUnavailable(
                f"no cortexd daemon is running (control socket {self.path}: {e.strerror}); "
                "start one with `cortexd up -d`"
            ) from e
        except OSError as e:
            conn.close()
            raise DaemonUnavailable(f"the cortexd daemon did not answer on {self.path}: {e}") from e

    def call(self, method: str, url: str, body: Any = None) -> Any:
        conn, resp = self._open(method, url, body)
        try:
            data = resp.read()
        finally:
            conn.close()
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {"error": data.decode("utf-8", "replace")}
        if resp.status == 404:
            raise UnknownAPI(doc.get("error", "not found"))
        if resp.status == 422:
            raise ConfigRejected(doc.get("error", "the configuration was rejected"))
        if resp.status >= 400:
            raise RequestError(doc.get("error", f"daemon answered HTTP {resp.status}"))
        return doc

    def stream(self, url: str):
        conn, resp = self._open("GET", url, timeout=None)
        try:
            if resp.status == 404:
                raise UnknownAPI(json.loads(resp.read() or b"{}").get("error", "not found"))
            if resp.status >= 400:
                raise RequestError(resp.read().decode("utf-8", "replace"))
            while True:
                line = resp.readline()
                if not line:
                    return
                yield line.decode("utf-8", "replace").rstrip("\n")
        finally:
            conn.close()


# -- commands ------------------------------------------------------------------------------


def _settings(args) -> DaemonSettings:
    s = DaemonSettings()
    if getattr(args, "host", None):
        s = s.with_(host=args.host)
    if getattr(args, "backend", None):
        s = s.with_(backend=args.backend)
    if getattr(args, "base_image", None):
        s = s.with_(base_image=args.base_image)
    if getattr(args, "metrics_port", None) is not None:
        s = s.with_(metrics_port=args.metrics_port)
    if getattr(args, "replica_user", None) is not None:
        s = s.with_(replica_user=args.replica_user)
    if getattr(args, "run_dependencies_sh", False):
        s = s.with_(run_dependencies_sh=True)
    if getattr(args, "port", None) is not None:
        if not 1 <= args.port <= 65535:
            raise UsageError(f"--port {args.port}: expected a port number between 1 and 65535")
        s = s.with_(default_local_port=args.port)
    s = _with_log_rotation(s, args, os.environ)
    s.check_socket_path()  # every command binds or connects it: say so before a raw OSError
    return s


def _with_log_rotation(s: DaemonSettings, args, env) -> DaemonSettings:
    """--log-max-size / --log-files, else CORTEXD_LOG_MAX_SIZE / CORTEXD_LOG_FILES, else the defaults."""
    size = getattr(args, "log_max_size", None)
    size = env.get("CORTEXD_LOG_MAX_SIZE") if size is None else size
    files = getattr(args, "log_files", None)
    files = env.get("CORTEXD_LOG_FILES") if files is None else files
    if size is not None:
        s = s.with_(log_max_bytes=_parse_size(str(size)))
    if files is not None:
        try:
            count = int(files)
        except ValueError:
            count = 0
        if count < 1:
            raise UsageError(f"log files {files!r}: expected a whole number of files, at least 1")
        s = s.with_(log_files=count)
    return s


def _parse_size(text: str) -> int:
    """A log size: bytes, or with a unit (500K, 10M, 10MiB, 1G; powers of 1024)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    value = float(m.group(1)) * 1024 ** " kmg".index(m.group(2).lower() or " ") if m else 0
    if value < 1 or value > 2**50:
        raise UsageError(f"log size {text!r}: expected a size such as 10M, 500K or 1048576 (bytes)")
    return int(value)


def _paths(args) -> list[str]:
    return [str(Path(p).resolve()) for p in (args.paths or ["."])]


def cmd_validate(args) -> int:
    from cortexd.spec import load_config

    loaded = load_config(_paths(args))
    for notice in loaded.notices:
        print(f"notice: {notice}")
    for api in loaded.apis:
        print(f"ok: api {api.name!r} ({api.predictor.type}) at "
              f"http://127.0.0.1:{api.networking.local_port}{api.networking.endpoint}  "
              f"[{api.source_file}:{api.source_line}]")
    print(f"{len(loaded.apis)} api(s) valid")
    return EXIT_OK


def cmd_up(args) -> int:
    from cortexd.daemon.running import daemon_answers
    from cortexd.spec import load_config

    settings = _settings(args)
    paths = _paths(args)
    if asyncio.run(daemon_answers(settings.socket_path)):
        named = " ".join(args.paths) if args.paths else "."
        raise DaemonAlreadyRunning(
            f"a cortexd daemon is already running (control socket {settings.socket_path}); "
            f"to add or update these APIs on it, run `cortexd deploy {named}` (the APIs of other "
            "projects keep serving), or stop it first with `cortexd down`"
        )
    load_config(paths, default_port=settings.default_local_port)  # config errors here, before anything starts
    if args.detach:
        return _up_detached(args, settings, paths)
    return _up_foreground(settings, paths)


def _daemon_argv(settings: DaemonSettings, paths: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "cortexd", "_daemon", "--backend", settings.backend,
            "--host", settings.host, "--metrics-port", str(settings.metrics_port)]
    if settings.base_image:
        argv += ["--base-image", settings.base_image]
    argv += ["--log-max-size", str(settings.log_max_bytes), "--log-files", str(settings.log_files)]
    argv += ["--replica-user", settings.replica_user]
    if settings.run_dependencies_sh:
        argv += ["--run-dependencies-sh"]
    if settings.default_local_port is not None:
        argv += ["--port", str(settings.default_local_port)]
    return argv + paths


def _up_detached(args, settings: DaemonSettings, paths: list[str]) -> int:
    from cortexd.home import open_nofollow, prepare_home
    from cortexd.logfiles import end_position, read_since

    prepare_home(settings.home)  # the daemon's own (cortexd/home.py), before anything is written there
    start = end_position(settings.daemon_log)  # a failed start shows only what it wrote itself
    log_fd = open_nofollow(settings.daemon_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(log_fd, "ab") as log:  # the daemon keeps its own copy of the descriptor
        proc = subprocess.Popen(
            _daemon_argv(settings, paths), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, cwd="/",
            # absolute: a relative CORTEXD_HOME would mean another folder from the daemon's cwd
            env={**os.environ, "CORTEXD_HOME": str(settings.home)},
        )
    client = ControlClient(settings, timeout=5)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            tail = "\n".join(read_since(settings.daemon_log, start)[0][-20:])
            print(f"error: the daemon exited during start-up (code {proc.returncode}):\n{tail}",
                  file=sys.stderr)
            return EXIT_USER
        try:
            snap = Status.from_json(client.call("GET", "/status"))
            break
        except DaemonUnavailable:
            if time.monotonic() > deadline:
                print(f"error: the daemon did not answer within 60s; see {settings.daemon_log}",
                      file=sys.stderr)
                return EXIT_DAEMON
            time.sleep(0.1)
    print(f"cortexd is running (pid {snap.daemon.pid}, backend {snap.daemon.backend}); "
          f"logs: {settings.daemon_log}")
    why = snap.daemon.backend_reason
    if why:
        print(f"backend {snap.daemon.backend}: {why}")
    if args.wait:
        snap = _wait_settled(client, args.wait)
    _print_table(snap)
    for api in snap.apis:  # once: a root daemon that could not isolate an API says why and the fix
        notice = (api.isolation or {}).get("notice")
        if notice:
            print(f"note: {notice}")
    if args.wait:
        failed = [a.name for a in snap.apis if a.status == "error"]
        waiting = [a.name for a in snap.apis if a.status not in ("live", "error")]
        if failed:
            print(f"error: not serving: {', '.join(failed)} (the daemon keeps running; "
                  "`cortexd get API` and `cortexd logs API` say why)", file=sys.stderr)
            return EXIT_USER
        if waiting:
            print(f"error: not live within {args.wait:g}s: {', '.join(waiting)} (the daemon keeps "
                  "running; `cortexd get` shows progress)", file=sys.stderr)
            return EXIT_USER
    return EXIT_OK


def _wait_settled(client: ControlClient, seconds: float) -> Status:
    deadline = time.monotonic() + seconds
    while True:
        snap = Status.from_json(client.call("GET", "/status"))
        if all(a.status in ("live", "error") for a in snap.apis) or time.monotonic() > deadline:
            return snap
        time.sleep(0.2)


def _up_foreground(settings: DaemonSettings, paths: list[str]) -> int:
    from cortexd.daemon.running import run_daemon

    live = sys.stdout.isatty()  # the live view takes the terminal; logs go to daemon.log
    if live:
        from cortexd.home import prepare_home

        prepare_home(settings.home)
    _configure_logging(verbose=live, path=settings.daemon_log if live else None, settings=settings)

    views: list[asyncio.Task] = []

    def on_started(daemon) -> None:
        print(f"cortexd {__version__} serving (backend {daemon.backend.name}); Ctrl-C to stop",
              flush=True)
        if live:
            from rich.console import Console

            from cortexd.ui.live import live_task

            # cancelled with the other tasks when run_daemon returns; held so it is not collected
            views.append(asyncio.ensure_future(live_task(daemon.status, Console())))

    _run(run_daemon(settings, paths, on_started=on_started))
    if live:
        print("cortexd stopped", flush=True)
    return EXIT_OK


def _run(coro) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def cmd_daemon(args) -> int:
    """Hidden: the detached daemon's entry point (its output goes to daemon.log)."""
    from cortexd.daemon.running import run_daemon

    settings = _settings(args)
    # its stdout and stderr (daemon.log, from `up -d`) follow daemon.log's rotation
    _configure_logging(verbose=True, path=settings.daemon_log, settings=settings, capture_std=True)
    _run(run_daemon(settings, _paths(args)))
    return EXIT_OK


def _configure_logging(verbose: bool, path: Path | None = None, settings: DaemonSettings | None = None,
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


def cmd_down(args) -> int:
    settings = _settings(args)
    client = ControlClient(settings)
    pid = Status.from_json(client.call("GET", "/status")).daemon.pid
    client.call("POST", "/shutdown")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            print("cortexd stopped")
            return EXIT_OK
        time.sleep(0.1)
    print(f"error: the daemon (pid {pid}) is still stopping after {args.timeout}s", file=sys.stderr)
    return EXIT_DAEMON


def cmd_deploy(args) -> int:
    client = ControlClient(_settings(args))
    result = client.call("POST", "/deploy", {"paths": _paths(args)})
    for notice in result.get("notices", []):
        print(f"notice: {notice}")
    for key, what in (("created", "created"), ("updated", "updated (rolling update)"),
                      ("removed", "removed (no longer in its cortex.yaml)"),
                      ("unchanged", "unchanged"), ("left_alone", "left alone (other projects)")):
        for name in result.get(key, []):
            print(f"{what}: api {name!r}")
    if not any(result.get(k) for k in ("created", "updated", "removed", "unchanged", "left_alone")):
        print("deployed: no apis")
    return EXIT_OK


def _quoted(name: str) -> str:
    """An API name as one URL path segment ('a?x=1' must not become api 'a' with a query)."""
    return urllib.parse.quote(name, safe="")


def cmd_delete(args) -> int:
    client = ControlClient(_settings(args))
    client.call("DELETE", f"/apis/{_quoted(args.api)}")
    print(f"api {args.api!r} deleted")
    return EXIT_OK


def cmd_get(args) -> int:
    client = ControlClient(_settings(args))
    if args.api:
        api = client.call("GET", f"/apis/{_quoted(args.api)}")
        if args.output == "json":
            print(json.dumps(api, indent=2))
        else:
            _print_api(api)
        return EXIT_OK
    snap = client.call("GET", "/status")
    if args.output == "json":
        print(json.dumps(snap, indent=2))  # as the daemon serialised it (Status.to_json)
    else:
        _print_table(Status.from_json(snap))
    return EXIT_OK


def _print_table(snap: Status) -> None:
    from cortexd.ui.text import api_table

    print(api_table(snap))


def _print_api(api: dict) -> None:
    """The control API's /apis/{name}: the API's status and what its replicas serve."""
    from cortexd.ui.text import api_detail

    print(api_detail(APIStatus.from_json(api), api.get("models")))


def cmd_logs(args) -> int:
    if args.previous and args.follow:
        raise UsageError("--previous shows the logs of the daemon's previous run, which no longer "
                         "grow: drop -f (or drop --previous to follow this run's)")
    client = ControlClient(_settings(args))
    query = f"?tail={args.tail}" if args.tail is not None else "?"
    if args.follow:
        query += "&follow=1"
    if args.previous:
        query += "&previous=1"
    if args.since:
        query += f"&since={_parse_since(args.since, time.time())}"
    console = None
    if sys.stdout.isatty():
        from cortexd.ui.live import CLIConsole
        from cortexd.ui.logs import log_line
        console = CLIConsole(highlight=False, soft_wrap=True)
    try:
        for line in client.stream(f"/apis/{_quoted(args.api)}/logs{query}"):
            if console is not None:
                console.print(log_line(line))
            else:
                print(line, flush=True)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _parse_since(text: str, now: float) -> float:
    """`--since`: a duration back from now (90s, 10m, 2h, 1d) or a local time (ISO 8601, HH:MM)."""
    import datetime as dt

    from cortexd.spec.units import parse_age

    try:
        return now - parse_age(text)
    except ValueError:
        pass  # not a duration: a time
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            clock = dt.time.fromisoformat(text)
        except ValueError:
            raise UsageError(f"--since {text!r}: expected a duration (90s, 10m, 2h, 1d) or a time "
                             "(2026-11-23T08:30, 08:30)") from None
        when = dt.datetime.combine(dt.date.fromtimestamp(now), clock)
    return when.timestamp()


def cmd_status(args) -> int:
    from cortexd.ui.live import CLIConsole, print_once, run_live

    client = ControlClient(_settings(args), timeout=10)
    console = CLIConsole()
    if args.once or not console.is_terminal:
        print_once(Status.from_json(client.call("GET", "/status")), console)
        return EXIT_OK
    try:
        run_live(lambda: Status.from_json(client.call("GET", "/status")), console, interval=args.interval)
    except KeyboardInterrupt:
        pass  # the daemon keeps running
    return EXIT_OK


def cmd_predict(args) -> int:
    client = ControlClient(_settings(args))
    snap = Status.from_json(client.call("GET", "/status"))
    api = snap.api(args.api)
    if api is None:
        names = ", ".join(a.name for a in snap.apis) or "none"
        raise UnknownAPI(f"no api named {args.api!r} (apis: {names})")
    waiting = _not_serving(api)
    if waiting:
        raise RequestError(waiting)
    body = args.payload
    if body.startswith("@"):
        try:
            body = Path(body[1:]).read_text()
        except OSError as e:
            raise RequestError(f"cannot read {body[1:]}: {e.strerror}") from e
    try:
        json.loads(body)
    except ValueError as e:
        raise RequestError(f"the payload is not valid JSON: {e}") from e
    req = urllib.request.Request(
        api.url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            print(resp.read().decode("utf-8", "replace"))
            return EXIT_OK
    except urllib.error.HTTPError as e:
        print(f"error: HTTP {e.code}: {e.read().decode('utf-8', 'replace')}", file=sys.stderr)
        return EXIT_USER
    except (urllib.error.URLError, OSError) as e:
        raise RequestError(f"could not reach {api.url}: {e}") from e


def _not_serving(api: APIStatus) -> str | None:
    """Why a request to `api` cannot be served now, when nothing is on its way to serve it
    (no replica ready or starting: pending for a GPU, in crash backoff, installing requirements)."""
    replicas = api.replicas
    reason = replicas.pending_reason
    if replicas.ready or replicas.starting or api.status == "error" or not reason:
        return None
    name = api.name
    if reason.startswith("pending: "):
        return (f"api {name!r} is pending, no replica can start: {reason.removeprefix('pending: ')} "
                f"(`cortexd get {name}` shows it)")
    return f"api {name!r} is not serving yet: {reason}"


def cmd_make_base_image(args) -> int:
    from cortexd.backends.images import OFFLINE_BASE_IMAGE, make_offline_base

    name = args.name or OFFLINE_BASE_IMAGE
    code = make_offline_base(name)
    if code == 0:
        print(f"made {name}; serve on it with `cortexd up --base-image {name}` "
              f"(or CORTEXD_BASE_IMAGE={name})")
    return EXIT_OK if code == 0 else EXIT_USER


def cmd_build(args) -> int:
    from cortexd.kube.build import build_images
    from cortexd.spec import load_config

    loaded = load_config(_paths(args))
    built = build_images(list(loaded.apis), args.registry, args.push, print, base_image=args.base_image)
    for b in built:
        print(f"api {b.api!r}: {b.image}{' (pushed)' if b.pushed else ''}")
    if not args.push:
        print("push with --push; then `cortexd export kubernetes --registry ...` writes the manifests")
    return EXIT_OK


def cmd_export_kubernetes(args) -> int:
    from cortexd.kube.export import export_kubernetes
    from cortexd.kube.manifests import ExportOptions
    from cortexd.spec import load_config

    loaded = load_config(_paths(args))
    options = ExportOptions(flavor=args.flavor, namespace=args.namespace, ingress_class=args.ingress_class)
    for line in export_kubernetes(list(loaded.apis), args.registry, options, Path(args.output)):
        print(line)
    return EXIT_OK


def cmd_version(args) -> int:
    print(f"cortexd {__version__}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cortexd", description="Serve Cortex projects on this machine.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    up = add("up", cmd_up, "start the daemon and serve the APIs in PATH... (default: .)")
    up.add_argument("paths", nargs="*", metavar="PATH", help="folder with a cortex.yaml, or a yaml file")
    up.add_argument("-d", "--detach", action="store_true", help="run the daemon in the background")
    up.add_argument("--backend", choices=["auto", "process", "docker"], default="auto")
    up.add_argument("--host", default="127.0.0.1", help="gateway bind address (default 127.0.0.1)")
    up.add_argument("--base-image", help="base image for Docker replica images")
    up.add_argument("--metrics-port", type=int, metavar="PORT",
                    help="Prometheus metrics at http://127.0.0.1:PORT/metrics (default 8889; 0: off, "
                         "they stay at /metrics on the control socket)")
    up.add_argument("--log-max-size", metavar="SIZE",
                    help="rotate daemon.log and each replica's log at SIZE (default 10M; env "
                         "CORTEXD_LOG_MAX_SIZE)")
    up.add_argument("--log-files", type=int, metavar="N",
                    help="files kept per log, the current one included (default 5; env CORTEXD_LOG_FILES)")
    up.add_argument("--replica-user", metavar="USER",
                    help="process backend, daemon run as root: one user every replica runs as (default: "
                         "each API a uid of its own, from CORTEXD_REPLICA_UIDS, 70000-99999; `root` "
                         "opts out; env CORTEXD_REPLICA_USER)")
    up.add_argument("--run-dependencies-sh", action="store_true",
                    help="process backend: run each project's dependencies.sh on this host before "
                         "its requirements (off: it is skipped with a notice; env CORTEXD_RUN_DEPENDENCIES_SH=1)")
    up.add_argument("--port", type=int, metavar="PORT",
                    help="the local_port of every API that sets none (default 8888; legacy kind: api "
                         "APIs have no local_port field); `deploy` uses it too")
    up.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                    help="with -d: wait until every API is live; exit 1 if one is in error or not live by then")

    d = sub.add_parser("_daemon")
    d.set_defaults(func=cmd_daemon)
    d.add_argument("paths", nargs="*")
    d.add_argument("--backend", default="auto")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--base-image")
    d.add_argument("--metrics-port", type=int)
    d.add_argument("--port", type=int)
    d.add_argument("--log-max-size")
    d.add_argument("--log-files", type=int)
    d.add_argument("--replica-user")
    d.add_argument("--run-dependencies-sh", action="store_true")

    down = add("down", cmd_down, "stop the daemon and every replica it started")
    down.add_argument("--timeout", type=float, default=60)

    dep = add("deploy", cmd_deploy, "add or update the APIs of PATH... on the running daemon (other "
              "projects' APIs keep serving; an API removed from PATH's cortex.yaml is removed)")
    dep.add_argument("paths", nargs="*", metavar="PATH")

    dl = add("delete", cmd_delete, "remove an API from the running daemon")
    dl.add_argument("api")

    get = add("get", cmd_get, "show APIs, or one API in detail")
    get.add_argument("api", nargs="?")
    get.add_argument("-o", "--output", choices=["table", "json"], default="table")

    lg = add("logs", cmd_logs, "show an API's replica output")
    lg.add_argument("api")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--tail", type=int, default=None, metavar="N", help="last N lines per replica")
    lg.add_argument("--since", metavar="WHEN",
                    help="only output written after WHEN: a duration back (90s, 10m, 2h) or a time")
    lg.add_argument("-p", "--previous", action="store_true",
                    help="the replicas' output of the daemon's previous run (as kubectl logs --previous)")

    st = add("status", cmd_status, "live view of the running daemon (Ctrl-C leaves it running)")
    st.add_argument("--once", action="store_true", help="print one view and exit (the default "
                    "when stdout is not a terminal)")
    st.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")

    pr = add("predict", cmd_predict, "send a JSON request to an API")
    pr.add_argument("api")
    pr.add_argument("payload", metavar="JSON|@FILE")
    pr.add_argument("--timeout", type=float, default=60)

    val = add("validate", cmd_validate, "check cortex.yaml files without starting anything")
    val.add_argument("paths", nargs="*", metavar="PATH")

    mb = add("make-base-image", cmd_make_base_image,
             "make a Docker base image from Debian packages (debootstrap), for hosts without a registry")
    mb.add_argument("name", nargs="?", default=None, metavar="NAME",
                    help="image name (default cortexd/base:bookworm); then `cortexd up --base-image NAME`")

    bd = add("build", cmd_build, "build one self-contained image per API (REG/<api>:<hash>), for a cluster")
    bd.add_argument("paths", nargs="*", metavar="PATH")
    bd.add_argument("--registry", metavar="REG", help="registry (and path) the images are named for")
    bd.add_argument("--push", action="store_true", help="push the images (credentials from the Docker config)")
    bd.add_argument("--base-image", help="base image of the predictor images (as for `up`)")

    ex = sub.add_parser("export", help="write what runs the project elsewhere (kubernetes)",
                        description="write what runs the project elsewhere")
    ex_sub = ex.add_subparsers(dest="target", metavar="TARGET", required=True)
    k8s = ex_sub.add_parser("kubernetes", help="one manifest file per API, for `kubectl apply -f DIR`",
                            description="one manifest file per API, for `kubectl apply -f DIR`, and a report")
    k8s.set_defaults(func=cmd_export_kubernetes)
    k8s.add_argument("paths", nargs="*", metavar="PATH")
    k8s.add_argument("--registry", metavar="REG", help="where `cortexd build --push` put the images")
    k8s.add_argument("--flavor", default="deployment", metavar="deployment|knative",
                     help="Deployment + Service + Ingress + HPA (default), or a Knative Service")
    k8s.add_argument("-o", "--output", default="k8s", metavar="DIR", help="folder to write (default ./k8s)")
    k8s.add_argument("--namespace", metavar="NS", help="metadata.namespace of every object")
    k8s.add_argument("--ingress-class", metavar="CLASS",
                     help="ingressClassName of the Ingress (default: the cluster's default class)")

    add("version", cmd_version, "print the version")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed stdout shows here, not at exit as "Exception ignored"
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except CortexdError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code_for(e)
    except KeyboardInterrupt:
        return 130


def _stdout_closed() -> int:
    """Its reader closed stdout (`cortexd get | head`): end quietly, with the status of a command
    that SIGPIPE ended (128 + 13), as `cat` and `grep` do."""
    try:  # the interpreter's last flush at exit would fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
