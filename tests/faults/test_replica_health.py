"""Replica faults under load: killed replicas, hung predictors, docker-proxy's accept-then-reset.

What a user sees: a replica that dies costs at most the requests it was running; requests
that never reached a predictor are retried elsewhere (never one that did); a replica that
keeps failing leaves the rotation and is reported; a hung predictor is replaced.

The first tests run a Gateway in this process against loopback stand-ins for replicas
(docker-proxy for a container that is gone, a predictor that reads the request and dies,
one that never answers); the others kill and hang real replicas of a real daemon, on the
process backend and, where an engine answers, on Docker. Every loop is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from cortexd.gateway.proxy import Gateway
from cortexd.gateway.routes import RouteConfig
from tests.builders import write_project
from tests.integration.test_gateway import Upstream
from tests.load import KeepAliveClients
from tests.real_daemon import free_port

pytestmark = pytest.mark.timeout(120)


# -- stand-ins for replicas --------------------------------------------------------------


class AcceptThenClose:
    """docker-proxy for a container that is gone: it accepts, fails to reach the container,
    and closes without reading a byte (a thread with a plain socket: an asyncio server
    would read the request into its buffer first)."""

    def __init__(self):
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            time.sleep(0.002)  # the dial to the container fails
            conn.close()

    async def start(self) -> AcceptThenClose:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    @property
    def replica(self):
        return ("gone", "127.0.0.1", self.port)


class ReadsThenDies:
    """A predictor killed while it runs the request: it read all of it, then the connection
    closes with no answer. The request reached it: it must not run a second time."""

    def __init__(self):
        self.requests = 0

    async def _client(self, reader, writer) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            self.requests += 1
            writer.close()  # dies: a FIN, every byte of the request read
            return

    async def start(self) -> ReadsThenDies:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def replica(self):
        return ("dies", "127.0.0.1", self.port)


class NeverAnswers:
    """A predictor stuck forever: it takes requests and never answers (its /healthz may
    well stay 200: the runtime's event loop answers that)."""

    async def _client(self, reader, writer) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            writer.close()

    async def start(self) -> NeverAnswers:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def replica(self):
        return ("hung", "127.0.0.1", self.port)


async def gateway_for(replicas, **kwargs):
    gw = Gateway("127.0.0.1", **kwargs)
    reports: list[tuple] = []
    gw.on_replica_health = lambda api, rid, reason, replace, until: reports.append((rid, reason, replace))
    port = free_port()
    await gw.configure([RouteConfig("api", "/api", port, 100)])
    gw.set_replicas("api", replicas)
    gw.set_state("api", starting=False)
    return gw, f"http://127.0.0.1:{port}/api", reports


async def load(url: str, clients: int, per_client: int, path: str = "") -> list[int]:
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:
        async def one_client(c: int) -> None:
            for i in range(per_client):
                async with session.post(url + path, json={"client": c, "i": i}) as r:
                    await r.read()
                    statuses.append(r.status)

        await asyncio.wait_for(asyncio.gather(*(one_client(c) for c in range(clients))), 30)
    return statuses


async def test_accepted_then_reset_connections_are_retried_and_the_replica_ejected():
    good, gone = await Upstream("good").start(), await AcceptThenClose().start()
    gw, url, reports = await gateway_for([gone.replica, good.replica])
    try:
        statuses = await load(url, clients=8, per_client=10)
        assert statuses.count(200) == 80, sorted(set(statuses))  # not one failed
        assert good.requests == 80
        # out of rotation after 3 failures in a row, and said so
        assert [(rid, replace) for rid, _, replace in reports] == [("gone", False)]
        assert "3 connection failures in a row" in reports[0][1]
        assert gone.connections <= 3 + 8  # the streak, plus what was on its way meanwhile
    finally:
        await gw.close(drain_timeout=1)
        await good.stop()
        gone.stop()


async def test_a_request_that_reached_a_predictor_is_never_retried():
    good, dies = await Upstream("good").start(), await ReadsThenDies().start()
    gw, url, reports = await gateway_for([dies.replica, good.replica])
    try:
        statuses = await load(url, clients=1, per_client=12)
        # each request the dying replica read failed (502) and went nowhere else
        assert statuses.count(502) == dies.requests >= 1
        assert good.requests == statuses.count(200) == 12 - dies.requests
        assert dies.requests <= 3  # then it is out of rotation
        assert [rid for rid, _, _ in reports] == ["dies"]
    finally:
        await gw.close(drain_timeout=1)
        await good.stop()
        dies.server.close()


async def test_a_hung_replica_leaves_the_rotation_and_is_reported_for_replacing():
    hung, good = await NeverAnswers().start(), await Upstream("good").start()
    gw, url, reports = await gateway_for([hung.replica, good.replica], upstream_timeout=0.3)
    try:
        statuses = await load(url, clients=1, per_client=10)
        assert statuses.count(504) == 3  # the third timeout in a row takes it out
        assert statuses[-4:] == [200] * 4
        assert good.requests == 7
        assert reports == [("hung", "3 requests in a row timed out", True)]
    finally:
        await gw.close(drain_timeout=1)
        await good.stop()
        hung.server.close()


async def test_the_only_replica_hung_makes_requests_wait_for_its_replacement():
    hung = await NeverAnswers().start()
    gw, url, reports = await gateway_for([hung.replica], upstream_timeout=0.2, no_replica_wait=5)
    good = await Upstream("replacement").start()
    try:
        statuses = await load(url, clients=1, per_client=3)
        assert statuses == [504, 504, 504] and reports[0][2] is True
        # what the reconciler does next: the replacement becomes the routable replica
        waiting = asyncio.ensure_future(load(url, clients=2, per_client=1))
        deadline = time.monotonic() + 10
        while gw.api_in_flight("api") < 2:  # both are inside the gateway (counted while they wait)
            assert time.monotonic() < deadline, "the requests did not reach the gateway"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # past the 0.2 s upstream timeout: sent to the hung one, they'd be 504s
        assert not waiting.done()  # waiting for a replica, not sent to the hung one
        gw.set_replicas("api", [good.replica])
        assert await waiting == [200, 200]
    finally:
        await gw.close(drain_timeout=1)
        await good.stop()
        hung.server.close()


CONTAINER_SERVER = textwrap.dedent('''\
    import http.server, socketserver, time
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(0.02)
            self.send_response(200)
            self.send_header("Content-Length", "9")
            self.send_header("X-Replica", "container")
            self.end_headers()
            self.wfile.write(b"container")
        def log_message(self, *args):
            pass
    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
    Server(("0.0.0.0", 8080), Handler).serve_forever()
    ''')


async def test_through_docker_proxy_a_killed_container_costs_only_its_in_flight_requests():
    """The gateway in front of a real docker-proxy (a container's published loopback port) and a
    local replica: `docker kill` under 8 clients fails only what the container was running."""
    from tests.docker_engine import engine_or_skip

    engine_or_skip()  # skips without an engine, unless CORTEXD_REQUIRE_DOCKER=1
    import docker
    import docker.errors

    from cortexd.backends.images import DEFAULT_BASE_IMAGE, OFFLINE_BASE_IMAGE

    client = docker.from_env()
    image = next((i for i in (OFFLINE_BASE_IMAGE, DEFAULT_BASE_IMAGE)
                  if client.images.list(name=i)), None)
    if image is None:
        client.close()
        pytest.skip("no python base image here (cortexd make-base-image builds one)")
    host_port = free_port()
    container = client.containers.run(image, ["python3", "-c", CONTAINER_SERVER], detach=True,
                                      ports={"8080/tcp": ("127.0.0.1", host_port)})
    local = await Upstream("local").start()
    gw = None
    try:
        async with aiohttp.ClientSession() as session:
            up_by = time.monotonic() + 60  # a loaded engine can take more than a few seconds
            while True:
                try:
                    async with session.post(f"http://127.0.0.1:{host_port}/", data=b"x") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < up_by, "the container's server never answered"
                await asyncio.sleep(0.1)
        gw, url, reports = await gateway_for(
            [("container", "127.0.0.1", host_port), local.replica])
        records: list[tuple[float, float, int, str | None]] = []
        stop_at = [time.monotonic() + 60.0]  # 2 s after the kill returned (set below), however long it took
        async with aiohttp.ClientSession() as session:
            async def one_client() -> None:
                while time.monotonic() < stop_at[0]:
                    started = time.monotonic()
                    # ?sleep: the local replica is as slow as the container, so both get work
                    async with session.post(url + "?sleep=0.02", data=b"x") as r:
                        await r.read()
                        records.append((started, time.monotonic(), r.status, r.headers.get("X-Replica")))

            clients = [asyncio.ensure_future(one_client()) for _ in range(8)]
            await asyncio.sleep(1.0)
            began = time.monotonic()
            await asyncio.to_thread(container.kill)
            returned = time.monotonic()
            stop_at[0] = returned + 2.0
            await asyncio.wait_for(asyncio.gather(*clients), 20)
        assert any(r[3] == "container" for r in records if r[1] < began)
        failed = [r for r in records if r[2] != 200]
        on_container = [r for r in records if r[0] < returned and r[1] > began and r[3] != "local"]
        assert len(failed) <= min(len(on_container), 8), failed  # 8 clients: 8 in flight at most
        after = [r for r in records if r[0] > returned]
        assert after and all(r[2] == 200 for r in after), [r for r in after if r[2] != 200]
        if failed:  # all were underway when the container died (before the first was seen)
            first_seen = min(r[1] for r in failed)
            assert all(r[0] < first_seen for r in failed), [(r[0] - first_seen, r) for r in failed]
        assert [rid for rid, _, _ in reports] == ["container"]
    finally:
        if gw is not None:
            await gw.close(drain_timeout=1)
        await local.stop()
        try:
            container.remove(force=True)
        except docker.errors.DockerException:
            pass
        client.close()


# -- real replicas of a real daemon ------------------------------------------------------------

PREDICTOR = textwrap.dedent('''\
    import os
    import socket
    import time


    class PythonPredictor:
        def __init__(self, config):
            self.who = f"{socket.gethostname()}/{os.getpid()}"  # containers: pids alike

        def predict(self, payload):
            if payload.get("hang"):
                time.sleep(3600)  # stuck forever, as a deadlocked predictor is
            time.sleep(0.02)
            return {"who": self.who}
    ''')


def project_yaml(port: int, replicas: int, threads: int) -> str:
    return textwrap.dedent(f"""\
        - name: pids
          kind: RealtimeAPI
          predictor:
            type: python
            path: predictor.py
            threads_per_process: {threads}
          networking:
            local_port: {port}
          autoscaling:
            min_replicas: {replicas}
            max_replicas: {replicas}
            init_replicas: {replicas}
        """)


def ready_replicas(api: dict) -> list[dict]:
    return [r for r in api["replica_list"] if r["state"] == "ready"]


def wait_for_api(cli, name: str, predicate, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    api = None
    while time.monotonic() < deadline:
        api = cli.api(name)
        if predicate(api):
            return api
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {json.dumps(api, indent=1)}\n{cli.daemon_log()}")


def kill_one_of_two_under_load(cli, port: int, kill) -> tuple[list, tuple[float, float]]:
    """8 keep-alive clients on 2 replicas; `kill(replica)` one of them; (records, (kill began,
    returned)), each record (sent, answered, status (0: cut), which predictor answered)."""
    api = wait_for_api(cli, "pids", lambda a: len(ready_replicas(a)) == 2, 60, "2 ready replicas")

    def who(load: KeepAliveClients) -> set:
        return {r.body.get("who") for r in load.snapshot() if r.body}

    with KeepAliveClients(port, "/pids", 8, b'{"x": 1}', limit=20, timeout=10) as load:
        time.sleep(1.0)
        # and until both replicas answered (an outcome, not a time: a loaded machine may take longer)
        deadline = time.monotonic() + 10
        while len(who(load)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(who(load)) == 2, f"the load reaches both replicas: {who(load)}"
        began = time.monotonic()
        kill(ready_replicas(api)[0])  # the replica dies somewhere in [began, returned]
        returned = time.monotonic()
        time.sleep(2.0)
    records = [(r.sent, r.answered, 0 if r.outcome == "cut" else int(r.outcome.split("-")[0]),
                (r.body or {}).get("who")) for r in load.snapshot()]
    return records, (began, returned)


def assert_only_the_victims_requests_failed(records, kill: tuple[float, float]) -> None:
    began, returned = kill
    failed = [r for r in records if r[2] != 200]
    in_flight = [r for r in records if r[0] < returned and r[1] > began]
    # the survivor: of the two predictors that answered before the kill, the one answering after
    before = {r[3] for r in records if r[1] < began and r[2] == 200}
    survivors = before & {r[3] for r in records if r[0] > returned + 0.5 and r[2] == 200}
    assert len(before) == 2 and len(survivors) == 1, (before, survivors)
    served_elsewhere = [r for r in in_flight if r[2] == 200 and r[3] in survivors]
    after = [r for r in records if r[0] > returned]
    assert len(after) > 50 and all(r[2] == 200 for r in after), \
        f"requests sent after the kill failed: {[r[2] for r in after if r[2] != 200]}"
    assert len(failed) <= len(in_flight) - len(served_elsewhere), (
        f"{len(failed)} failed, but only {len(in_flight) - len(served_elsewhere)} were in flight "
        f"on the killed replica: {sorted({r[2] for r in failed})}")
    # every failed request was underway when the replica died (before the first failure
    # was seen): none was sent to it after it was gone
    if failed:
        first_seen = min(r[1] for r in failed)
        assert all(r[0] < first_seen for r in failed), [(r[0] - first_seen, r[2]) for r in failed]


def test_sigkill_of_one_of_two_replicas_fails_at_most_its_in_flight_requests(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "pids", project_yaml(port, 2, threads=4),
                            {"predictor.py": PREDICTOR})
    cli("up", "-d", "--backend", "process", "--wait", "90", str(project), check=True)

    killed = []

    def kill(replica) -> None:
        os.kill(int(replica["backend"]["pid"]), signal.SIGKILL)
        killed.append(replica["id"])

    records, kill_window = kill_one_of_two_under_load(cli, port, kill)
    assert_only_the_victims_requests_failed(records, kill_window)
    # and it is replaced
    api = wait_for_api(cli, "pids", lambda a: len(ready_replicas(a)) == 2
                       and killed[0] not in {r["id"] for r in a["replica_list"]},
                       30, "the killed replica's replacement")
    assert api["replicas"]["restarts"] >= 1


def test_a_hung_predictor_is_replaced(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "pids", project_yaml(port, 1, threads=1),
                            {"predictor.py": PREDICTOR})
    cli.env["CORTEXD_UPSTREAM_TIMEOUT"] = "1"
    cli("up", "-d", "--backend", "process", "--wait", "90", str(project), check=True)
    url = f"http://127.0.0.1:{port}/pids"
    (hung,) = ready_replicas(cli.api("pids"))

    def post(payload) -> int:
        req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    # the one thread hangs; the next requests wait behind it: three timeouts in a row
    assert [post({"hang": True}), post({}), post({})] == [504, 504, 504]
    wait_for_api(cli, "pids", lambda a: any(
        r["id"] == hung["id"] and (r["health"] or "").startswith("unhealthy") for r in a["replica_list"])
        or hung["id"] not in {r["id"] for r in a["replica_list"]}, 10, "the hung replica reported")
    events = cli("get", "pids").out + cli.daemon_log()
    assert f"replica {hung['id']} unhealthy: 3 requests in a row timed out" in events, events
    # a new replica serves
    wait_for_api(cli, "pids", lambda a: any(r["id"] != hung["id"] for r in ready_replicas(a)),
                 30, "the replacement ready")
    assert post({}) == 200


def test_docker_kill_of_one_of_two_replicas_fails_at_most_its_in_flight_requests(cli):
    from tests.docker_engine import engine_or_skip

    engine_or_skip()  # skips without an engine, unless CORTEXD_REQUIRE_DOCKER=1
    import docker
    import docker.errors

    from cortexd.backends.images import DEFAULT_BASE_IMAGE, OFFLINE_BASE_IMAGE

    client = docker.from_env()
    try:
        client.images.get(OFFLINE_BASE_IMAGE)
        base = OFFLINE_BASE_IMAGE
    except docker.errors.ImageNotFound:
        base = DEFAULT_BASE_IMAGE
    port = free_port()
    # not pytest's tmp_path: its parents are 0700, which the container's user cannot cross
    shared = Path(tempfile.mkdtemp(prefix="cxd-faults-"))
    project = write_project(shared / "pids", project_yaml(port, 2, threads=4),
                            {"predictor.py": PREDICTOR})
    for p in [shared, *shared.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    try:
        cli("up", "-d", "--backend", "docker", "--base-image", base, "--wait", "240", str(project),
            check=True, timeout=300)
        killed = []

        def kill(replica) -> None:
            client.containers.get(replica["backend"]["container"]).kill()
            killed.append(replica["id"])

        records, kill_window = kill_one_of_two_under_load(cli, port, kill)
        assert_only_the_victims_requests_failed(records, kill_window)
        wait_for_api(cli, "pids", lambda a: len(ready_replicas(a)) == 2
                     and killed[0] not in {r["id"] for r in a["replica_list"]},
                     60, "the killed container's replacement")
    finally:
        client.close()
        cli("down", timeout=120)
        shutil.rmtree(shared, ignore_errors=True)
