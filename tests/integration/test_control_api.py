"""The control API and its client over a real unix socket: what the daemon raises reaches the CLI
as the class the one table (cortexd/errors.py CONTROL_API_ANSWERS) names, with its message.

The daemon is a fake ControlledDaemon (each handler is one call on it); the client is the CLI's
own (cortexd/control_client.py), run in a thread as the CLI runs it: blocking."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from cortexd.control_client import ControlClient
from cortexd.daemon.control import serve
from cortexd.daemon.events import EventLog
from cortexd.errors import (
    BackendError,
    ConfigError,
    ConfigProblem,
    ConfigRejected,
    RequestError,
    UnknownAPI,
)
from cortexd.settings import DaemonSettings
from cortexd.status import Status
from tests.unit.snapshots import api, snapshot

SNAPSHOT = Status.from_json(snapshot([api("iris")]))
PROBLEM = ConfigProblem("/p/cortex.yaml", 3, 5, "iris", "predictor.type", "expected python")


class FakeDaemon:
    guarded_pid = None

    def __init__(self):
        self.events = EventLog(lambda: 0.0)
        self.deploy_error: Exception | None = None
        self.deployed: tuple | None = None  # (paths, cpu_only, nearest_pins) of the last deploy

    def replica_of_peer(self, pid, uid):
        return None

    def status(self):
        return SNAPSHOT

    async def counted(self):
        pass

    async def replica_models(self, name):
        return {}

    def log_sources(self, name, previous=False, job=None):
        if name != "iris":
            raise UnknownAPI(f"no api named {name!r} (apis: iris)")
        return [("iris-r0", None)]

    async def stream_logs(self, name, sources, tail, follow, since=None):
        for line in ("one", "two")[-tail if tail else 0:]:
            yield line
        if follow:  # quiet for longer than the client's timeout, as a replica that prints nothing
            await asyncio.sleep(1.5)
            yield "three"

    async def deploy(self, paths, *, cpu_only=False, nearest_pins=False):
        if self.deploy_error is not None:
            raise self.deploy_error
        self.deployed = (paths, cpu_only, nearest_pins)
        return {"created": ["iris"], "notices": []}

    async def delete_api(self, name):
        raise UnknownAPI(f"no api named {name!r} (apis: iris)")

    async def batch_api(self, name, job_id=None, *, stop=False):
        return None  # no BatchAPI here

    def request_shutdown(self):
        pass


@pytest.fixture
async def control():
    home = Path(tempfile.mkdtemp(prefix="cxd-", dir="/tmp"))  # short: a unix socket path
    daemon = FakeDaemon()
    settings = DaemonSettings(home=home)
    runner = await serve(daemon, str(settings.socket_path))
    try:
        yield daemon, ControlClient(settings, timeout=5)
    finally:
        await runner.cleanup()
        settings.socket_path.unlink(missing_ok=True)
        home.rmdir()


async def call(fn, *args):
    return await asyncio.to_thread(fn, *args)


async def test_answers_and_refusals_reach_the_cli_as_their_classes(control):
    daemon, client = control
    assert await call(client.status) == SNAPSHOT
    assert (await call(client.call, "POST", "/deploy", {"paths": ["/p"]}))["created"] == ["iris"]
    assert daemon.deployed == (["/p"], False, False)
    await call(client.call, "POST", "/deploy", {"paths": ["/p"], "nearest_pins": True})
    assert daemon.deployed == (["/p"], False, True)
    await call(client.call, "POST", "/deploy", {"paths": ["/p"], "cpu_only": True})
    assert daemon.deployed == (["/p"], True, False)
    with pytest.raises(RequestError, match=r'^"nearest_pins" must be true or false, got \'yes\'$'):
        await call(client.call, "POST", "/deploy", {"paths": ["/p"], "nearest_pins": "yes"})
    assert await call(lambda: list(client.stream("/apis/iris/logs?tail=1"))) == ["two"]

    with pytest.raises(UnknownAPI, match=r"^no api named 'nope' \(apis: iris\)$"):
        await call(client.call, "GET", "/apis/nope")
    with pytest.raises(UnknownAPI, match=r"^no api named 'nope' \(apis: iris\)$"):
        await call(client.call, "DELETE", "/apis/nope")
    with pytest.raises(UnknownAPI, match=r"^no api named 'nope' \(apis: iris\)$"):
        await call(lambda: list(client.stream("/apis/nope/logs")))
    with pytest.raises(RequestError, match="tail must be an integer"):
        await call(lambda: list(client.stream("/apis/iris/logs?tail=x")))
    with pytest.raises(RequestError, match=r"expected a JSON body \{\"paths\": \[...\]\}"):
        await call(client.call, "POST", "/deploy", {"paths": []})
    with pytest.raises(RequestError, match=r"\"cpu_only\" must be true or false, got 'yes'"):
        await call(client.call, "POST", "/deploy", {"paths": ["/p"], "cpu_only": "yes"})

    daemon.deploy_error = ConfigError([PROBLEM])
    with pytest.raises(ConfigRejected) as rejected:
        await call(client.call, "POST", "/deploy", {"paths": ["/p"]})
    assert str(rejected.value) == str(ConfigError([PROBLEM]))
    daemon.deploy_error = BackendError("the engine is gone")
    with pytest.raises(RequestError, match=r"^the engine is gone$"):
        await call(client.call, "POST", "/deploy", {"paths": ["/p"]})


async def test_logs_follow_outlasts_the_clients_timeout(control):
    # `cortexd logs -f` of a quiet replica: the timeout bounds the answer's head, not the lines
    _, client = control
    client.timeout = 0.5
    got = await call(lambda: list(client.stream("/apis/iris/logs?follow=1")))
    assert got == ["one", "two", "three"]
