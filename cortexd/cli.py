"""The `cortexd` command line: the only place that prints for humans or exits.

Exit codes (one table, EXIT_CODES): 0 ok, 1 user error (bad config, unknown API,
failed request), 2 usage, 3 daemon unavailable, 141 stdout closed. The CLI talks
to a running daemon over its control socket (cortexd/control_client.py); `up` in
the foreground runs the daemon in this process, `up -d` starts one in the
background (cortexd/launch.py). The daemon's flags are made from its settings'
one table (cortexd/settings.py OPTIONS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cortexd import __version__
from cortexd.control_client import ControlClient
from cortexd.errors import (
    BackendUnavailable,
    ConfigError,
    ConfigRejected,
    CortexdError,
    DaemonAlreadyRunning,
    DaemonStartFailed,
    DaemonUnavailable,
    RequestError,
    SocketPathTooLong,
    UnknownAPI,
    UsageError,
)
from cortexd.predict_request import not_serving, post_json, read_payload
from cortexd.procfs import pid_alive
from cortexd.settings import OPTIONS, DaemonSettings, configured
from cortexd.status import APIStatus, SplitterStatus, Status

if TYPE_CHECKING:  # the daemon is imported only by the commands that run it
    from cortexd.daemon.running import Daemon
    from cortexd.spec.model import APISpec

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_DAEMON = 0, 1, 2, 3
EXIT_CODES: dict[type[CortexdError], int] = {
    ConfigError: EXIT_USER,
    UnknownAPI: EXIT_USER,
    RequestError: EXIT_USER,
    DaemonAlreadyRunning: EXIT_USER,
    BackendUnavailable: EXIT_USER,
    DaemonUnavailable: EXIT_DAEMON,
    DaemonStartFailed: EXIT_USER,
    SocketPathTooLong: EXIT_USER,
    ConfigRejected: EXIT_USER,
    UsageError: EXIT_USAGE,
}


def exit_code_for(error: CortexdError) -> int:
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_USER


# -- commands ------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> DaemonSettings:
    """The daemon's settings from this command's flags, the environment and the defaults."""
    s = configured(vars(args))
    s.check_socket_path()  # every command binds or connects it: say so before a raw OSError
    return s


def _paths(args: argparse.Namespace) -> list[str]:
    return [str(Path(p).resolve()) for p in (args.paths or ["."])]


def cmd_validate(args: argparse.Namespace) -> int:
    from cortexd.spec import load_config

    loaded = load_config(_paths(args))
    for notice in loaded.notices:
        print(f"notice: {notice}")
    for api in (*loaded.apis, *loaded.batch_apis):
        what = "batch api" if api.kind == "BatchAPI" else "api"
        print(f"ok: {what} {api.name!r} ({api.predictor.type}) at "
              f"http://127.0.0.1:{api.networking.local_port}{api.networking.endpoint}  "
              f"[{api.source_file}:{api.source_line}]")
    for s in loaded.splitters:
        weights = " ".join(f"{t.name}:{t.weight}{'(shadow)' if t.shadow else ''}" for t in s.targets)
        print(f"ok: traffic splitter {s.name!r} ({weights}) at "
              f"http://127.0.0.1:{s.networking.local_port}{s.networking.endpoint}  [{s.source_file}:{s.source_line}]")
    for s, name in loaded.outside_targets():
        print(f"note: traffic splitter {s.name!r}: api {name!r} is not in this configuration; it must be "
              "deployed on the daemon when the splitter is (`cortexd deploy` checks)")
    print(f"{len(loaded.apis)} api(s) valid"
          + (f", {len(loaded.batch_apis)} batch api(s) valid" if loaded.batch_apis else "")
          + (f", {len(loaded.splitters)} traffic splitter(s) valid" if loaded.splitters else ""))
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
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
    loaded = load_config(paths, default_port=settings.default_local_port)  # config errors here, before anything starts
    for notice in _gpu_notices(loaded.apis, settings):
        print(f"note: {notice}")
    if args.detach:
        return _up_detached(args, settings, paths)
    return _up_foreground(settings, paths)


def _gpu_notices(apis: Sequence[APISpec], settings: DaemonSettings) -> list[str]:
    """What becomes of the APIs that request compute.gpu (served on the CPU, or not at all on a host
    without a GPU), said before the daemon starts."""
    from cortexd.core.placement import gpu_notices
    from cortexd.nvml import read_inventory

    if not any(api.compute.gpu for api in apis):
        return []
    inventory = read_inventory()
    return gpu_notices(apis, len(inventory.devices), inventory.reason, OPTIONS["cpu_only"].flag or "",
                       cpu_only=settings.cpu_only)


def _up_detached(args: argparse.Namespace, settings: DaemonSettings, paths: list[str]) -> int:
    from cortexd.launch import start_detached

    snap = start_detached(settings, paths)
    client = ControlClient(settings, timeout=5)
    print(f"cortexd is running (pid {snap.daemon.pid}, backend {snap.daemon.backend}); "
          f"logs: {settings.daemon_log}")
    if snap.daemon.metrics_url:  # the admin port serves the web console beside /metrics
        print(f"web console: {snap.daemon.metrics_url.removesuffix('metrics')}")
    why = snap.daemon.backend_reason
    if why:
        print(f"backend {snap.daemon.backend}: {why}")
    if args.wait:
        snap = _wait_settled(client, args.wait)
    _print_table(snap)
    for api in snap.apis:  # once: a root daemon that could not isolate an API says why and the fix
        isolation = api.isolation or {}
        if isolation.get("notice"):
            print(f"note: {isolation['notice']}")
        if isolation.get("project_mount_available") is False:  # and where /mnt/project is missing
            print(f"note: api {api.name!r}: /mnt/project (where Cortex mounted the project) is "
                  f"{isolation.get('project_mount')}")
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
        snap = client.status()
        if all(a.status in ("live", "error") for a in snap.apis) or time.monotonic() > deadline:
            return snap
        time.sleep(0.2)


def _up_foreground(settings: DaemonSettings, paths: list[str]) -> int:
    from cortexd.daemon.running import run_daemon
    from cortexd.launch import configure_logging, run

    live = sys.stdout.isatty()  # the live view takes the terminal; logs go to daemon.log
    if live:
        from cortexd.home import prepare_home

        prepare_home(settings.home)
    configure_logging(verbose=live, path=settings.daemon_log if live else None, settings=settings)

    views: list[asyncio.Task[None]] = []

    def on_started(daemon: Daemon) -> None:
        print(f"cortexd {__version__} serving (backend {daemon.backend.name}); Ctrl-C to stop",
              flush=True)
        if live:
            from rich.console import Console

            from cortexd.ui.live import live_task

            # cancelled with the other tasks when run_daemon returns; held so it is not collected
            views.append(asyncio.ensure_future(live_task(daemon.status, Console())))

    run(run_daemon(settings, paths, on_started=on_started))
    if live:
        print("cortexd stopped", flush=True)
    return EXIT_OK


def cmd_daemon(args: argparse.Namespace) -> int:
    """Hidden: the detached daemon's entry point; `up -d` writes its settings on its stdin."""
    from cortexd.launch import run_detached

    run_detached()
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    settings = _settings(args)
    client = ControlClient(settings)
    pid = client.status().daemon.pid
    client.call("POST", "/shutdown")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            print("cortexd stopped")
            return EXIT_OK
        time.sleep(0.1)
    print(f"error: the daemon (pid {pid}) is still stopping after {args.timeout}s", file=sys.stderr)
    return EXIT_DAEMON


def cmd_deploy(args: argparse.Namespace) -> int:
    settings = _settings(args)
    client = ControlClient(settings)
    # the settings `deploy` takes too (OPTIONS, deploy=True; flag or environment), for the projects it deploys
    given = {name: True for name, option in OPTIONS.items() if option.deploy and getattr(settings, name)}
    result = client.call("POST", "/deploy", {"paths": _paths(args), **given})
    for notice in result.get("notices", []):
        print(f"notice: {notice}")
    from cortexd.ui.text import deploy_lines

    print("\n".join(deploy_lines(result)))
    return EXIT_OK


def _quoted(name: str) -> str:
    """An API name as one URL path segment ('a?x=1' must not become api 'a' with a query)."""
    return urllib.parse.quote(name, safe="")


def cmd_delete(args: argparse.Namespace) -> int:
    client = ControlClient(_settings(args))
    if args.job:  # a BatchAPI's job: stopped
        print(client.call("DELETE", f"/apis/{_quoted(args.api)}/jobs/{_quoted(args.job)}")["message"])
        return EXIT_OK
    client.call("DELETE", f"/apis/{_quoted(args.api)}")
    print(f"api {args.api!r} deleted")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    client = ControlClient(_settings(args))
    if args.api:
        job = f"/jobs/{_quoted(args.job)}" if args.job else ""
        api = client.call("GET", f"/apis/{_quoted(args.api)}{job}")
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


def _print_api(api: dict[str, Any]) -> None:
    """The control API's /apis/{name}: the API's status and what its replicas serve, or a
    traffic splitter's apis and counters."""
    from cortexd.ui.text import api_detail, batch_detail, job_detail, splitter_detail

    if "job_status" in api or api.get("kind") == "BatchAPI":
        print(job_detail(api, time.time()) if "job_status" in api else batch_detail(api))
    elif api.get("kind") == "TrafficSplitter":
        print(splitter_detail(SplitterStatus.from_json(api)))
    else:
        print(api_detail(APIStatus.from_json(api), api.get("models")))


def cmd_logs(args: argparse.Namespace) -> int:
    if args.previous and args.follow:
        raise UsageError("--previous shows the logs of the daemon's previous run, which no longer "
                         "grow: drop -f (or drop --previous to follow this run's)")
    client = ControlClient(_settings(args))
    query = f"?tail={args.tail}" if args.tail is not None else "?"
    if args.follow:
        query += "&follow=1"
    if args.previous:
        query += "&previous=1"
    if args.job:
        query += f"&job={_quoted(args.job)}"
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


def cmd_status(args: argparse.Namespace) -> int:
    from cortexd.ui.live import CLIConsole, print_once, run_live

    client = ControlClient(_settings(args), timeout=10)
    console = CLIConsole()
    if args.once or not console.is_terminal:
        print_once(client.status(), console)
        return EXIT_OK
    try:
        run_live(client.status, console, interval=args.interval)
    except KeyboardInterrupt:
        pass  # the daemon keeps running
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    client = ControlClient(_settings(args))
    snap = client.status()
    api, splitter = snap.api(args.api), snap.splitter(args.api)
    if api is not None:
        waiting = not_serving(api)
        if waiting:
            raise RequestError(waiting)
        url = api.url
    elif splitter is not None:  # a traffic splitter: its apis say for themselves (503s)
        url = splitter.url
    else:
        names = ", ".join(a.name for a in snap.apis) or "none"
        raise UnknownAPI(f"no api named {args.api!r} (apis: {names})")
    failed, answer = post_json(url, read_payload(args.payload), args.timeout)
    if failed is None:
        print(answer)
        return EXIT_OK
    print(f"error: HTTP {failed}: {answer}", file=sys.stderr)
    return EXIT_USER


def cmd_make_base_image(args: argparse.Namespace) -> int:
    from cortexd.backends.images import OFFLINE_BASE_IMAGE, make_offline_base

    name = args.name or OFFLINE_BASE_IMAGE
    code = make_offline_base(name)
    if code == 0:
        print(f"made {name}; serve on it with `cortexd up --base-image {name}` "
              f"(or CORTEXD_BASE_IMAGE={name})")
    return EXIT_OK if code == 0 else EXIT_USER


def cmd_build(args: argparse.Namespace) -> int:
    from cortexd.kube.build import build_images
    from cortexd.spec import load_config

    loaded = load_config(_paths(args))
    built = build_images([*loaded.apis, *loaded.batch_apis], args.registry, args.push, print,
                         base_image=args.base_image)
    for b in built:
        print(f"api {b.api!r}: {b.image}{' (pushed)' if b.pushed else ''}")
    if not args.push:
        print("push with --push; then `cortexd export kubernetes --registry ...` writes the manifests")
    return EXIT_OK


def cmd_export_kubernetes(args: argparse.Namespace) -> int:
    from cortexd.kube.batch_job import job_files
    from cortexd.kube.export import export_kubernetes
    from cortexd.kube.manifests import ExportOptions
    from cortexd.spec import load_config

    loaded = load_config(_paths(args))
    options = ExportOptions(flavor=args.flavor, namespace=args.namespace, ingress_class=args.ingress_class,
                            gateway=args.gateway)
    jobs = job_files(args.job or [], [a.name for a in loaded.batch_apis])
    for line in export_kubernetes([*loaded.apis, *loaded.batch_apis], args.registry, options, Path(args.output),
                                  splitters=list(loaded.splitters), jobs=jobs):
        print(line)
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"cortexd {__version__}")
    return EXIT_OK


Command = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, Command, str], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cortexd", description="Serve Cortex projects on this machine.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    _add_daemon_commands(add, sub)
    _add_api_commands(add)
    _add_image_commands(add, sub)
    add("version", cmd_version, "print the version")
    return p


def _add_setting_flags(parser: argparse.ArgumentParser, deploy: bool = False) -> None:
    """The daemon's settings that have a flag, as cortexd/settings.py declares them (OPTIONS);
    a flag not given is None, and `configured` takes the environment or the default.
    deploy: only those `cortexd deploy` takes too (Option.deploy)."""
    for name, option in OPTIONS.items():
        if option.flag is None or (deploy and not option.deploy):
            continue
        if option.switch:
            parser.add_argument(option.flag, dest=name, action="store_true", help=option.help)
        else:
            parser.add_argument(option.flag, dest=name, type=option.type or str, choices=option.choices,
                                metavar=option.metavar, help=option.help)


def _add_daemon_commands(add: AddCommand, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = add("up", cmd_up, "start the daemon and serve the APIs in PATH... (default: .)")
    up.add_argument("paths", nargs="*", metavar="PATH", help="folder with a cortex.yaml, or a yaml file")
    up.add_argument("-d", "--detach", action="store_true", help="run the daemon in the background")
    _add_setting_flags(up)
    up.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                    help="with -d: wait until every API is live; exit 1 if one is in error or not live by then")

    sub.add_parser("_daemon").set_defaults(func=cmd_daemon)  # hidden: settings come on its stdin

    down = add("down", cmd_down, "stop the daemon and every replica it started")
    down.add_argument("--timeout", type=float, default=60)


def _add_api_commands(add: AddCommand) -> None:
    dep = add("deploy", cmd_deploy, "add or update the APIs of PATH... on the running daemon (other "
              "projects' APIs keep serving; an API removed from PATH's cortex.yaml is removed)")
    dep.add_argument("paths", nargs="*", metavar="PATH")
    _add_setting_flags(dep, deploy=True)

    dl = add("delete", cmd_delete, "remove an API from the running daemon, or stop a BatchAPI's job")
    dl.add_argument("api")
    dl.add_argument("job", nargs="?", help="a BatchAPI's job id: stop that job")

    get = add("get", cmd_get, "show APIs, or one API (a BatchAPI: its jobs; with JOB: one job) in detail")
    get.add_argument("api", nargs="?")
    get.add_argument("job", nargs="?", help="a BatchAPI's job id")
    get.add_argument("-o", "--output", choices=["table", "json"], default="table")

    lg = add("logs", cmd_logs, "show an API's replica output")
    lg.add_argument("api")
    lg.add_argument("job", nargs="?", help="a BatchAPI's job id: its workers' logs (default: its newest job)")
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


def _add_image_commands(add: AddCommand, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
                            description="one manifest file per API (a Gateway API HTTPRoute per traffic "
                                        "splitter, an Indexed Job per --job), for `kubectl apply -f DIR`, "
                                        "and a report")
    k8s.set_defaults(func=cmd_export_kubernetes)
    k8s.add_argument("paths", nargs="*", metavar="PATH")
    k8s.add_argument("--registry", metavar="REG", help="where `cortexd build --push` put the images")
    k8s.add_argument("--flavor", default="deployment", metavar="deployment|knative",
                     help="Deployment + Service + Ingress + HPA (default), or a Knative Service")
    k8s.add_argument("-o", "--output", default="k8s", metavar="DIR", help="folder to write (default ./k8s)")
    k8s.add_argument("--namespace", metavar="NS", help="metadata.namespace of every object")
    k8s.add_argument("--ingress-class", metavar="CLASS",
                     help="ingressClassName of the Ingress (default: the cluster's default class)")
    k8s.add_argument("--gateway", metavar="NAME",
                     help="the Gateway (Gateway API) traffic splitters' HTTPRoutes attach to (default: cortexd)")
    k8s.add_argument("--job", action="append", metavar="API=FILE",
                     help="a BatchAPI's job to run in the cluster: FILE holds Cortex's job request body "
                          "(workers, item_list / file_path_lister / delimited_files); written as an Indexed Job")


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
