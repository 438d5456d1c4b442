"""The gateway on two processes (issue 20.4): GatewayWorkers, the daemon's gateway with one worker
process beside it on the same port, against real upstreams on loopback.

Every request here comes on a connection of its own, and the daemon deals connections in turn
(handoff.py), so each process answers half of them. The tests set `workers=2` themselves: the
default is one gateway, the daemon's own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import aiohttp
import pytest

from cortexd.gateway.routes import JobRoute, RouteConfig
from cortexd.gateway.workers import GatewayWorkers
from tests.real_daemon import children_running, free_port, pid_alive
from tests.upstreams import Upstream  # the `upstreams` fixture: tests/integration/conftest.py

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def two_workers():
    made: list[GatewayWorkers] = []

    async def make(**kwargs) -> GatewayWorkers:
        gw = GatewayWorkers("127.0.0.1", workers=2, **kwargs)
        made.append(gw)
        await gw.start()
        return gw

    yield make
    for gw in made:
        await gw.close(drain_timeout=1)


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def served(gw: GatewayWorkers, port: int, api: str, n: int, total: int, what: str) -> None:
    """`n` requests to /`api`, each on a connection of its own and answered 200; then until the
    processes' counts of `api` add up to `total`."""
    for _ in range(n):
        assert (await post(port, f"/{api}"))[0] == 200
    await until(lambda: gw.route(api).counters_snapshot()["total"] == total, what=what)


async def started_again(gw: GatewayWorkers, pid: int, what: str = "the worker started again") -> None:
    """Until the worker that was `pid` runs again under another pid, with the configuration applied."""
    await until(lambda: gw.worker_pids()[0] not in (None, pid) and gw.applied(), timeout=15, what=what)


async def serve_one(gw: GatewayWorkers, port: int, up: Upstream, max_concurrency: int = 100) -> None:
    await gw.configure([RouteConfig("a", "/a", port, max_concurrency)])
    gw.set_replicas("a", [up.replica])
    gw.set_state("a", starting=False)
    await until(gw.applied, what="the worker to apply the routes")


async def serving(upstreams, two_workers, events: list[tuple[str, str]] | None = None,
                  **kwargs) -> tuple[Upstream, int, GatewayWorkers]:
    """A stand-in replica, served as api "a" on a free port by the daemon's process and one worker
    (`events`: what the workers' events say, (level, message) each, appended as they come)."""
    if events is not None:
        kwargs["on_event"] = lambda message, level: events.append((level, message))
    up = await upstreams("r1")
    port = free_port()
    gw = await two_workers(**kwargs)
    await serve_one(gw, port, up)
    return up, port, gw


async def post(port: int, path: str, body: bytes = b"{}") -> tuple[int, bytes]:
    # a connection of its own per request: the daemon deals each to a process
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session, \
            session.post(f"http://127.0.0.1:{port}{path}", data=body) as resp:
        return resp.status, await resp.read()


async def test_both_processes_serve_one_port_and_their_counts_add_up(upstreams, two_workers):
    up, port, gw = await serving(upstreams, two_workers)

    answers = [await post(port, "/a", b'{"n": %d}' % i) for i in range(40)]
    assert answers == [(200, b'{"n": %d}' % i) for i in range(40)]
    assert up.requests == 40
    await gw.counted()  # what the daemon does before GET /status and /metrics read the counts
    assert gw.route("a").counters_snapshot()["total"] == 40

    await until(lambda: gw.route("a").counters_snapshot()["total"] == 40, what="the worker's report")
    assert gw.requests_per_worker() == [20, 20]  # connections dealt in turn
    assert gw.route("a").counters_snapshot()["2xx"] == 40
    assert [r.name for r in gw.routes()] == ["a"] and gw.routes()[0].metrics.codes == {200: 40}

    assert (await post(port, "/nowhere"))[0] == 404
    await until(lambda: gw.unrouted == 1, what="the 404 counted")


async def test_max_replica_concurrency_and_in_flight_counts_hold_across_processes(upstreams, two_workers):
    up = await upstreams("r1")
    port = free_port()
    gw = await two_workers()
    await serve_one(gw, port, up, max_concurrency=2)

    async def staggered(i: int) -> int:
        await asyncio.sleep(0.03 * i)  # one at a time: each process reads what the other wrote
        status, _ = await post(port, "/a?sleep=2")
        return status

    requests = asyncio.gather(*(staggered(i) for i in range(20)))
    await until(lambda: gw.api_in_flight("a") == 2, what="two requests in flight")
    await asyncio.sleep(0.7)  # every request has arrived by now (20 x 0.03 s)
    assert gw.api_in_flight("a") == 2 and gw.replica_in_flight("a", "r1") == 2
    statuses = await requests
    assert sorted(statuses) == [200] * 2 + [503] * 18, statuses
    await until(lambda: gw.route("a").counters_snapshot()["total"] == 20, what="the worker's report")
    assert gw.requests_per_worker() == [10, 10]
    assert gw.api_in_flight("a") == 0 and gw.replica_in_flight("a", "r1") == 0


async def test_a_removed_replica_stays_busy_until_every_worker_stopped_routing_to_it(upstreams, two_workers):
    up, port, gw = await serving(upstreams, two_workers)
    assert gw.replica_in_flight("a", "r1") == 0

    gw.set_replicas("a", [])
    # no request is in flight, but the worker has not applied the removal yet: the daemon must not
    # stop the replica now (its drain waits for 0)
    assert gw.replica_in_flight("a", "r1") == 1
    await until(gw.applied, what="the worker to apply the removal")
    assert gw.replica_in_flight("a", "r1") == 0


async def test_a_batch_apis_job_requests_reaching_the_worker_are_answered_by_the_daemons_side(two_workers):
    port = free_port()
    answered_for_worker = []
    gw = await two_workers()
    own_answer = gw._answer_job

    async def counted(worker, *args):
        answered_for_worker.append(worker.index)
        await own_answer(worker, *args)

    gw._answer_job = counted

    async def handler(method: str, query: str, body: bytes) -> tuple[int, dict]:
        return 202, {"method": method, "query": query, "body": body.decode()}

    await gw.set_jobs([JobRoute("jobs", "/jobs", port, handler)])
    await until(gw.applied, what="the worker to apply the job route")
    for i in range(20):
        status, body = await post(port, f"/jobs?n={i}", b"payload")
        assert status == 202 and body == b'{"method": "POST", "query": "n=%d", "body": "payload"}' % i, body
    assert answered_for_worker and set(answered_for_worker) == {1}  # some came through the worker


async def test_a_worker_that_dies_is_started_again_and_its_counts_stay(upstreams, two_workers):
    events: list[tuple[str, str]] = []
    up, port, gw = await serving(upstreams, two_workers, events)
    await served(gw, port, "a", 20, 20, "the worker's report")
    before = gw.requests_per_worker()
    assert before[1] > 0, before

    [pid] = gw.worker_pids()
    os.kill(pid, signal.SIGKILL)
    await started_again(gw, pid, "the worker started again")
    assert any("gateway worker 1 ended" in message for level, message in events if level == "warning"), events
    assert gw.route("a").counters_snapshot()["total"] == 20  # what the dead worker answered still counts
    await served(gw, port, "a", 20, 40, "the new worker's report")
    assert gw.requests_per_worker()[1] == 10


async def test_a_worker_that_says_nothing_is_killed_and_started_again(upstreams, two_workers):
    # a worker stopped (SIGSTOP) stands for one whose event loop is stuck: alive, but it reports
    # nothing and serves nothing; stuck_after=3 (not the default 15 s) keeps the test short
    events: list[tuple[str, str]] = []
    up, port, gw = await serving(upstreams, two_workers, events, stuck_after=3)
    [pid] = gw.worker_pids()
    await asyncio.sleep(4)  # reports (every 0.5 s) keep a live worker past stuck_after
    assert gw.worker_pids() == [pid] and not events, events
    os.kill(pid, signal.SIGSTOP)
    await started_again(gw, pid, "the stuck worker killed and started again")
    assert not pid_alive(pid)
    assert any("gateway worker 1 said nothing for 3 s and was killed" in message
               for level, message in events if level == "warning"), events
    await served(gw, port, "a", 10, 10, "the new worker's report")  # both processes serve again
    assert gw.requests_per_worker()[1] == 5


async def test_a_silent_worker_is_dealt_no_connection_until_it_speaks_again(upstreams, two_workers):
    # a worker stopped (SIGSTOP) for less than stuck_after (the default 15 s): after QUIET_AFTER
    # (2 s) of silence every new connection goes to the daemon's own process, none is lost on it
    up, port, gw = await serving(upstreams, two_workers)
    [pid] = gw.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(2.5)
        for _ in range(10):
            assert (await asyncio.wait_for(post(port, "/a"), 5))[0] == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    await until(lambda: gw.route("a").counters_snapshot()["total"] == 10, what="the daemon's counts")
    assert gw.requests_per_worker() == [10, 0]
    await asyncio.sleep(1.0)  # it reports again
    await served(gw, port, "a", 10, 20, "both processes' counts")
    # dealt connections again (5 of the 10 when its first report after SIGCONT came before them;
    # a loaded machine may delay it past the first few)
    assert gw.requests_per_worker()[1] >= 1 and gw.worker_pids() == [pid]


async def test_an_api_added_on_a_served_port_is_never_404_at_a_worker_that_has_not_applied_it(
        upstreams, two_workers):
    # the worker is stopped (SIGSTOP) just before the configure that adds /b on its port, so it
    # cannot apply it; every new connection to /b must be served by the daemon until it has (it
    # was dealt its turn, and answered 404 or, stopped, nothing)
    up, port, gw = await serving(upstreams, two_workers)
    [pid] = gw.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        await gw.configure([RouteConfig("a", "/a", port, 100), RouteConfig("b", "/b", port, 100)])
        gw.set_replicas("b", [up.replica])
        gw.set_state("b", starting=False)
        for _ in range(6):  # within QUIET_AFTER of its last report: it is not passed over for silence
            assert (await asyncio.wait_for(post(port, "/b"), 3.0))[0] == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    await until(gw.applied, what="the worker to apply the configure")
    await served(gw, port, "b", 4, 10, "both processes' counts")
    assert gw.requests_per_worker()[1] == 2


async def test_a_workers_log_lines_reach_the_daemons_log(two_workers, caplog):
    # through the pipe, into the daemon's own logging (which rotates daemon.log), not the stderr the
    # worker was started with; a replica that refuses connections makes each process log a warning
    caplog.set_level(logging.WARNING)
    port = free_port()
    gw = await two_workers()
    await gw.configure([RouteConfig("a", "/a", port, 100)])
    gw.set_replicas("a", [("r1", "127.0.0.1", free_port())])  # nothing listens there
    gw.set_state("a", starting=False)
    await until(gw.applied, what="the worker to apply the routes")
    for _ in range(2):  # one connection to each process
        assert (await post(port, "/a"))[0] == 502
    await until(lambda: any(r.name == "cortexd.gateway.workers" and r.getMessage().startswith("gateway worker 1: ")
                            and "unreachable" in r.getMessage() for r in caplog.records),
                what="the worker's warning in the daemon's log")


SLOW = """
import time


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        time.sleep(float(payload.get("sleep", 0)))
        return {"ok": True}
"""


@pytest.mark.timeout(120)
def test_a_daemon_with_two_gateway_workers_serves_counts_and_stops_them(cli, tmp_path):
    from tests.builders import write_project
    from tests.real_daemon import post_json, wait_until

    port, metrics_port = free_port(), free_port()
    yaml = (f"- name: slow\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: slow.py\n"
            f"  autoscaling:\n    max_replica_concurrency: 1\n  networking:\n    local_port: {port}\n")
    project = write_project(tmp_path / "p", yaml, {"slow.py": SLOW})
    # --gateway-workers 2: what this test is about (the default is the daemon's gateway alone);
    # --metrics-port: the default one may be another daemon's on this machine
    cli("up", "-d", "--backend", "process", "--gateway-workers", "2", "--metrics-port", str(metrics_port),
        "--wait", "90", str(project), check=True)
    daemon_pid = int((cli.home / "cortexd.pid").read_text())
    assert "2 gateway processes" in cli.daemon_log()
    [worker] = children_running(daemon_pid, b"cortexd.gateway.worker")

    url = f"http://127.0.0.1:{port}/slow"
    for _ in range(30):  # urllib: a connection per request, dealt in turn to both processes
        assert post_json(url, {})[0] == 200
    # `get` asks the worker for its counts before it answers: every request is in, at once
    assert cli.api("slow")["requests"]["total"] == 30

    # one request in flight, wherever it landed: the next ones get 503 in whichever process they land
    import threading
    slow = threading.Thread(target=post_json, args=(url, {"sleep": 3}))
    slow.start()
    wait_until(lambda: cli.api("slow")["in_flight"] == 1, 10, "the slow request in flight")
    statuses = [post_json(url, {})[0] for _ in range(10)]
    slow.join()
    assert statuses == [503] * 10, statuses

    cli("down", check=True, timeout=90)
    assert not pid_alive(worker)


async def test_no_other_socket_can_bind_the_port_beside_the_gateways(upstreams, two_workers):
    # SO_REUSEPORT would let any process of the daemon's uid (a replica on the process backend)
    # bind the port too and take a share of the clients: the daemon accepts alone and deals
    import errno
    import socket

    up, port, gw = await serving(upstreams, two_workers)
    intruder = socket.socket()
    intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    with pytest.raises(OSError) as refused:
        intruder.bind(("127.0.0.1", port))
    intruder.close()
    assert refused.value.errno == errno.EADDRINUSE
    assert (await post(port, "/a"))[0] == 200


async def test_a_splitters_counts_and_passive_health_come_back_from_the_worker(upstreams, two_workers):
    from cortexd.gateway.routes import SplitConfig

    up, up2 = await upstreams("r1"), await upstreams("r2")
    port = free_port()
    gw = await two_workers()
    ejected = []
    gw.on_replica_health = lambda api, replica_id, reason, *, replace, until=None: ejected.append((api, replica_id))
    await gw.configure([RouteConfig("a", "/a", port, 100), RouteConfig("b", "/b", port, 100)],
                       [SplitConfig("s", "/s", port, (("a", 50, False), ("b", 50, False)))])
    gone = free_port()  # nothing listens there: every connection to it is refused
    gw.set_replicas("a", [up.replica])
    gw.set_replicas("b", [("dead", "127.0.0.1", gone), up2.replica])
    for api in ("a", "b"):
        gw.set_state(api, starting=False)
    await until(gw.applied, what="the worker to apply the routes")

    # a failed connection is retried on the other replica: every request is answered
    assert [(await post(port, "/s"))[0] for _ in range(40)] == [200] * 40

    def split_total() -> int:
        [split] = gw.splits()
        return sum(sum(t.metrics.codes.values()) for t in split.targets)

    await until(lambda: split_total() == 40, what="the worker's splitter counts")
    [split] = gw.splits()
    snapshot = split.snapshot()
    assert set(snapshot["targets"]) == {"a", "b"}
    assert sum(sum(t["requests"]["codes"].values()) for t in snapshot["targets"].values()) == 40
    # each process takes the dead replica out of rotation on its own failures, and both say so
    for _ in range(20):
        assert (await post(port, "/b"))[0] == 200
    await until(lambda: ejected.count(("b", "dead")) >= 2, what="both processes' ejections")
    assert ejected == [("b", "dead")] * 2, ejected


async def test_connections_right_after_a_worker_restarts_are_served(upstreams, two_workers):
    # a worker started again serves only once it applied the configuration: connections dealt to
    # it before that (its gateway not made yet, or its port not configured) were closed unanswered
    up, port, gw = await serving(upstreams, two_workers)
    [pid] = gw.worker_pids()
    os.kill(pid, signal.SIGKILL)
    await until(lambda: gw.worker_pids()[0] not in (None, pid), timeout=15, what="the worker started again")
    answers = await asyncio.gather(*(post(port, "/a") for _ in range(20)), return_exceptions=True)
    assert answers == [(200, b"{}")] * 20, answers


async def test_a_removed_apis_replicas_stay_busy_until_every_worker_applied_it_and_free_their_slots(
        upstreams, two_workers):
    # the reconciler drains a removed API's replicas by replica_in_flight, as it drains a replica
    # set_replicas left out; and each removal left its replicas' slots taken for good, until the
    # count table was full and configure and set_replicas raised
    up, port, gw = await serving(upstreams, two_workers)
    taken = len(gw.slots.of)

    await gw.configure([])
    assert gw.replica_in_flight("a", "r1") == 1  # the worker may still send it a request
    await until(gw.applied, what="the worker to apply the removal")
    assert gw.replica_in_flight("a", "r1") == 0
    assert len(gw.slots.of) == taken - 1  # the replica's slot is free again (the API's stays its own)


async def test_an_api_removed_and_deployed_again_starts_from_no_requests_after_a_worker_ended(
        upstreams, two_workers):
    # as on one gateway, where a deployed-again API is a new route; what a worker that ended had
    # counted for the API it served before stayed in its sums for ever
    up, port, gw = await serving(upstreams, two_workers)
    await served(gw, port, "a", 10, 10, "the worker's report")
    [pid] = gw.worker_pids()
    os.kill(pid, signal.SIGKILL)
    await started_again(gw, pid, "the worker started again")
    assert gw.route("a").counters_snapshot()["total"] == 10  # the ended worker's 5 still count

    await gw.configure([])
    await serve_one(gw, port, up)
    await gw.counted()
    assert gw.route("a").counters_snapshot()["total"] == 0
    await served(gw, port, "a", 4, 4, "the worker's report")


async def test_a_worker_that_cannot_be_started_again_is_tried_again(upstreams, two_workers, monkeypatch):
    # starting a process can fail for a while (no file descriptor or process left, or as here the
    # interpreter gone in an upgrade); the restart raised in the worker's task, which ended: the
    # worker was never started again, and nothing said so
    events: list[tuple[str, str]] = []
    up, port, gw = await serving(upstreams, two_workers, events)
    [pid] = gw.worker_pids()
    monkeypatch.setattr("sys.executable", "/nonexistent/python3")
    os.kill(pid, signal.SIGKILL)
    await until(lambda: any("could not be started" in message for level, message in events if level == "error"),
                timeout=15, what="the failed start said")
    monkeypatch.undo()
    await started_again(gw, pid, "the worker started again")
    for _ in range(4):
        assert (await post(port, "/a"))[0] == 200
    await until(lambda: gw.requests_per_worker()[1] == 2, what="the new worker's report")


async def test_a_worker_that_ends_before_it_applied_its_start_is_started_again_less_and_less_often(
        upstreams, two_workers, monkeypatch):
    # one that cannot start (here /bin/false for the interpreter: an upgrade broke it, say) was
    # started again every second for ever: a process and an event a second; the wait doubles
    # while it ends without having applied the configuration it was started with
    import re

    events: list[tuple[str, str]] = []
    up, port, gw = await serving(upstreams, two_workers, events)
    [pid] = gw.worker_pids()
    monkeypatch.setattr("sys.executable", "/bin/false")

    def ended() -> list[str]:
        return [m for level, m in events if level == "warning" and m.startswith("gateway worker 1 ended")]

    os.kill(pid, signal.SIGKILL)
    await until(lambda: len(ended()) >= 3, timeout=20, what="three ends")
    waits = [re.search(r"starting it again in (\S+) s", m) for m in ended()[:3]]
    assert [w.group(1) if w else None for w in waits] == ["1", "2", "4"], ended()
    monkeypatch.undo()
    await until(lambda: gw.worker_pids()[0] is not None and gw.applied(), timeout=20, what="the worker back")


async def test_a_killed_workers_end_says_the_signal(upstreams, two_workers):
    # the pipe's end came first, and the daemon's kill() of the ended process polled it, taking
    # its exit status from asyncio's waiter: the event said "exit code 255" (the OOM killer's
    # SIGKILL looked like a crash of its own); a race, so three times
    up = await upstreams("r1")
    events = []
    gw = await two_workers(on_event=lambda message, level: events.append((level, message)))
    await serve_one(gw, free_port(), up)  # applied() waits for the worker's acknowledgement from now
    for n in range(1, 4):
        await until(lambda: gw.worker_pids()[0] is not None and gw.applied(), timeout=15, what="the worker")
        [pid] = gw.worker_pids()
        os.kill(pid, signal.SIGKILL)
        await until(lambda n=n: len(events) == n, timeout=15, what="its end said")
    assert [message for _, message in events] == \
        ["gateway worker 1 ended (exit code -9); starting it again in 1 s"] * 3, events
