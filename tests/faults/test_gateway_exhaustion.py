"""Resource exhaustion at the gateway (issue 15): huge and unfinished request heads, many connections.

What a user sees: a request head past nginx's 4 x 8 KiB gets 431 with a JSON error; heads that
never finish cost the daemon a bounded amount of memory however many connections send them
(past a budget the longest held is shed, 503); with the daemon at its open-file limit, idle
keep-alive connections are closed first, so a new client is served and `cortexd get` answers,
and running short of descriptors is logged once per interval, not once per connection.

The first tests run a Gateway in this process (small limits, so a few hundred connections
reach them); the others drive a real daemon. Loopback only; every count and wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from cortexd.gateway.admission import HEAD_LIMIT, socket_cap
from cortexd.gateway.proxy import Gateway
from cortexd.gateway.routes import RouteConfig
from tests.builders import OK_PREDICTOR, realtime_yaml, write_project
from tests.real_daemon import CLI, REPO, free_port, http, post_json
from tests.upstreams import Upstream

pytestmark = pytest.mark.timeout(180)



def usable_fds(wanted: int) -> int:
    """Raise this process's soft open-file limit toward `wanted` (up to the hard limit); how many
    connections it can open, keeping 64 descriptors for everything else."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + 64:
        target = wanted + 64 if hard == resource.RLIM_INFINITY else min(hard, wanted + 64)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return min(wanted, soft - 64)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def json_body(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def headers_of(answer: bytes) -> str:
    return answer.partition(b"\r\n\r\n")[0].decode("latin-1")


def closed_silently(sock: socket.socket) -> bool:
    """Whether the gateway closed `sock` without sending anything (non-blocking look)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError:  # reset, or the timeout: what came before it is the answer
        pass
    return b"".join(chunks)


def pad_lines(total: int, line: int = 7000) -> bytes:
    """Header lines of `line` bytes each, `total` bytes in all (no blank line: the head goes on)."""
    out = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * (line - 14)) for i in range(total // line))
    return out + b"X-Tail: " + b"t" * max(0, total - len(out) - 10) + b"\r\n"


# -- in this process: the budget for unfinished heads, and the socket cap ------------------------


@pytest.fixture
async def replicas():
    started: list[Upstream] = []

    async def start(n: int) -> list[Upstream]:
        for i in range(n):
            started.append(await Upstream(f"r{i + 1}").start())
        return started

    yield start
    for up in started:
        await up.stop()


async def serving(gw: Gateway, ups: list[Upstream]) -> int:
    port = free_port()
    await gw.configure([RouteConfig("api", "/api", port, 1000)])
    gw.set_replicas("api", [up.replica for up in ups])
    gw.set_state("api", starting=False)
    return port


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_unfinished_heads_past_the_budget_shed_the_one_held_longest(replicas):
    ups = await replicas(1)
    gw = Gateway("127.0.0.1", held_heads_budget=64 * 1024)
    head = b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" + pad_lines(20_000)
    try:
        port = await serving(gw, ups)
        conns = []
        for i in range(5):  # 20 KB each, under the head cap: 3 fit the budget
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            await writer.drain()
            conns.append((reader, writer))
            await until(lambda i=i: gw.held_heads.total == min(i + 1, 3) * len(head), f"head {i} held")
        for reader, _ in conns[:2]:  # the two held longest are shed, in that order
            answer = await asyncio.wait_for(reader.read(), 5)
            assert status_of(answer) == 503, answer[:300]
            assert "Retry-After: 1" in headers_of(answer) and "Connection: close" in headers_of(answer)
            assert json_body(answer)["error"] == ("the gateway holds too many unfinished request heads (64 KiB "
                                                  "across connections); send the request again, its head in "
                                                  "one piece")
        # the others are still there: the newest finishes its head and is served
        reader, writer = conns[4]
        writer.write(b"\r\n{}")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert status_of(answer) == 200, answer
        assert not conns[2][0].at_eof() and not conns[3][0].at_eof()
        for _, writer in conns:
            writer.close()
        await until(lambda: gw.held_heads.total == 0 and not gw.held_heads.holders, "nothing held")
    finally:
        await gw.close(drain_timeout=1)


async def non_reading(port: int) -> asyncio.StreamWriter:
    """A client connection that reads nothing and buffers little (a 4 KiB receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    _, writer = await asyncio.open_connection(sock=sock, limit=4096)
    return writer


async def closed(gw: Gateway, writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.transport.abort()
    await gw.close(drain_timeout=1)


async def test_a_client_pipelining_without_reading_is_served_only_as_fast_as_it_reads(replicas):
    # whole answers go out without waiting for the client: without a stop between pipelined
    # requests the gateway would serve all of them and buffer every answer (aiohttp stopped too)
    ups = await replicas(1)
    gw = Gateway("127.0.0.1")
    one = b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (256 * 1024) + b"x" * (256 * 1024)
    writer = None
    try:
        port = await serving(gw, ups)
        writer = await non_reading(port)
        writer.write(one * 100)  # 25 MiB of requests, never drained: the client process holds them
        await until(lambda: ups[0].requests >= 5, "the first requests served")
        await asyncio.sleep(1.0)
        served = ups[0].requests
        await asyncio.sleep(1.0)
        # what the kernel's buffers and the transport's high-water mark hold, and no more
        assert ups[0].requests == served < 40, served
        writer.transport.abort()
        reader, other = await asyncio.open_connection("127.0.0.1", port)  # the gateway serves on
        other.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        assert status_of(await asyncio.wait_for(reader.read(), 5)) == 200
        other.close()
    finally:
        await closed(gw, writer)


async def test_a_client_that_stops_reading_a_streamed_answer_is_cut_off_after_the_send_timeout(replicas):
    # the answer streams from the replica as the client takes it: a client that takes nothing
    # would hold the replica's slot (max_replica_concurrency 1 here) and connection for ever
    ups = await replicas(1)
    gw = Gateway("127.0.0.1", client_send_timeout=1.0)  # nginx's 60 s, shortened for the test
    big = 8 * 2**20  # past the 1 MiB the gateway buffers: streamed
    writer = None
    try:
        port = free_port()
        await gw.configure([RouteConfig("api", "/api", port, 1)])
        gw.set_replicas("api", [up.replica for up in ups])
        gw.set_state("api", starting=False)
        writer = await non_reading(port)
        writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % big + b"x" * big)
        await until(lambda: ups[0].bodies == 1, "the replica answering")
        started = time.monotonic()
        other = b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        while True:  # 503 while the slot is held, then served
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(other)
            status = status_of(await asyncio.wait_for(r2.read(), 10))
            w2.close()
            if status == 200:
                break
            assert status == 503 and time.monotonic() - started < 8, status
            await asyncio.sleep(0.2)
        assert 0.5 < time.monotonic() - started < 8
    finally:
        await closed(gw, writer)


async def test_a_pipelining_client_that_reads_nothing_holds_its_socket_no_longer_than_the_send_timeout(replicas):
    # answers past the kernel's buffers wait in the gateway, the last one after the connection
    # closed: without a limit the socket would stay open for ever
    ups = await replicas(1)
    gw = Gateway("127.0.0.1", client_send_timeout=1.0)  # nginx's 60 s, shortened for the test
    body = b"x" * (900 * 1024)  # answered whole (under 1 MiB)
    one = b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    writer = None
    try:
        port = await serving(gw, ups)
        writer = await non_reading(port)
        # 7 MiB of answers, more than the kernel's socket buffers take (4 MiB at most here)
        writer.write(one * 7 + one.replace(b"Host: x", b"Host: x\r\nConnection: close"))
        await until(lambda: ups[0].bodies >= 4, "the replica answering")
        sockets = gw.clients.sockets
        await until(lambda: sockets.open == 1, "only the pooled replica connection left open", timeout=8)
    finally:
        await closed(gw, writer)


async def slow_requests(port: int, n: int, ups: list[Upstream], seconds: float = 2.0) -> list:
    """`n` requests the replicas answer after `seconds`: a client and an upstream socket each, busy."""
    before = sum(up.requests for up in ups)
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api?sleep=%g HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" % seconds)
        conns.append((reader, writer))
    await until(lambda: sum(up.requests for up in ups) == before + n, "the slow requests at the replicas")
    return conns


async def test_at_the_socket_cap_idle_connections_go_first_then_newcomers_get_503(replicas, caplog):
    ups = await replicas(1)
    gw = Gateway("127.0.0.1", open_files=200)
    cap = gw.sockets.cap
    assert cap == socket_cap(200) == 100
    caplog.set_level(logging.WARNING, "cortexd.gateway.proxy")
    try:
        port = await serving(gw, ups)
        # idle connections fill the cap; a newcomer is served by closing those idle longest
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(cap)]
        await until(lambda: gw.sockets.open == cap, "the idle connections taken in")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        assert status_of(await asyncio.wait_for(reader.read(), 5)) == 200
        writer.close()
        await until(lambda: any(r.at_eof() for r, _ in idle), "an idle connection closed")
        shed = [i for i, (r, _) in enumerate(idle) if r.at_eof()]
        assert shed == list(range(len(shed))), shed  # the oldest ones
        for i in shed:  # closed as a keep-alive timeout closes: nothing sent
            assert await idle[i][0].read() == b""
        for _, w in idle:
            w.close()
        await until(lambda: gw.sockets.open <= 1, "the idle connections gone")  # a pooled upstream one stays

        # nothing idle, no head waiting: requests in flight hold a client and an upstream socket each
        slow = await slow_requests(port, cap // 2, ups)
        await until(lambda: gw.sockets.open == cap, "their sockets counted")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert status_of(answer) == 503 and "Retry-After: 1" in headers_of(answer), answer[:300]
        assert json_body(answer)["error"] == ("the gateway is at its connection limit (100 connections under "
                                              "an open-file limit of 200); try again shortly")
        for r, w in slow:  # the requests in flight were not cut
            assert status_of(await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)) == 200
            w.close()
    finally:
        await gw.close(drain_timeout=1)
    short = [r.getMessage() for r in caplog.records if "short of file descriptors" in r.getMessage()]
    # one line per kind per interval (idle ones closed, newcomers refused), never one per connection
    assert [line.split(":")[1].strip() for line in short] == ["idle connections closed", "connections refused"], short
    assert all("open-file limit 200" in line for line in short), short


async def test_no_socket_left_for_a_replica_is_503_and_no_replica_is_blamed(replicas, caplog):
    ups = await replicas(2)
    gw = Gateway("127.0.0.1", open_files=200)
    cap = gw.sockets.cap
    caplog.set_level(logging.WARNING, "cortexd.gateway.proxy")
    try:
        port = await serving(gw, ups)
        slow = await slow_requests(port, cap // 2 - 1, ups)
        await until(lambda: gw.sockets.open == cap - 2, "their sockets counted")
        waiting, w_writer = await asyncio.open_connection("127.0.0.1", port)
        w_writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\n")  # a head that is not finished
        await until(lambda: gw.sockets.open == cap - 1 and gw.held_heads.total, "the waiting head")
        # a newcomer fits under the cap, but no socket is left for its request's upstream
        # connection: 503, and however many in a row, no replica is taken out of rotation
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(8):
            writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = json.loads(await reader.readexactly(length))
            assert status_of(head) == 503 and b"Retry-After: 1" in head, head
            assert body["error"] == ("the gateway is at its connection limit and cannot reach a replica now; "
                                     "try again shortly")
        assert not gw.route("api").ejected and len(gw.route("api").replicas) == 2
        for r, _ in slow:
            assert status_of(await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)) == 200
        # the slow requests done, their upstream connections are pooled: the next one is served
        writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
        for _, w in [*slow, (None, w_writer), (None, writer)]:
            w.close()
    finally:
        await gw.close(drain_timeout=1)
    assert "out of rotation" not in caplog.text
    short = [r.getMessage() for r in caplog.records if "short of file descriptors" in r.getMessage()]
    assert len(short) == 1 and "connections to replicas refused" in short[0], short


# -- a real daemon ---------------------------------------------------------------------------------


def start_daemon(project: Path, env: dict | None = None, nofile: tuple[int, int] | None = None) -> CLI:
    """`cortexd up -d` on `project` in a private home; with `nofile`, under that RLIMIT_NOFILE (soft, hard)."""
    cli = CLI(Path(tempfile.mkdtemp(prefix="cxd-")))
    cli.env.update(env or {})
    args = ["up", "-d", "--backend", "process", "--metrics-port", "0", str(project)]
    if nofile is None:
        cli(*args, check=True)
    else:  # the daemon (and the CLI that starts it) under a low limit, as many hosts have
        wrapper = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, "
                   f"{nofile!r}); sys.argv[0] = 'cortexd'; runpy.run_module('cortexd', run_name='__main__')")
        p = subprocess.run([sys.executable, "-c", wrapper, *args], env=cli.env, cwd=str(REPO),
                           capture_output=True, text=True, timeout=120, check=False)
        assert p.returncode == 0, (p.stdout, p.stderr)
    cli.wait_for(lambda s: s["apis"] and s["apis"][0]["status"] == "live", timeout=90, what="echo live")
    return cli


def stop_daemon(cli: CLI) -> None:
    if (cli.home / "cortexd.sock").exists():
        cli("down", timeout=90)
    shutil.rmtree(cli.home, ignore_errors=True)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    port = free_port()
    project = write_project(tmp_path_factory.mktemp("exhaust") / "project", realtime_yaml("echo", port),
                            {"predictor.py": OK_PREDICTOR})
    # a short header timeout: hoarders the budget leaves alone are answered 408 within the test
    cli = start_daemon(project, {"CORTEXD_CLIENT_HEADER_TIMEOUT": "20"})
    try:
        yield cli, port
    finally:
        stop_daemon(cli)


def raw(port: int, data: bytes, pieces: int = 1) -> bytes:
    """Send `data` on a new connection (in `pieces`, each its own read), then read until the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        step = -(-len(data) // pieces)
        try:
            for i in range(0, len(data), step):
                s.sendall(data[i:i + step])
                if pieces > 1:
                    time.sleep(0.02)
        except OSError:  # answered and closed before all of it was sent: the answer is still there
            pass
        return read_all(s)


def test_a_head_past_the_cap_gets_431_with_a_json_error(served):
    _, port = served
    too_large = [
        ("40 KB of headers at once", b"POST /echo HTTP/1.1\r\nHost: x\r\n" + pad_lines(40_000) + b"\r\n", 1),
        ("40 KB of headers in pieces", b"POST /echo HTTP/1.1\r\nHost: x\r\n" + pad_lines(40_000) + b"\r\n", 20),
        ("a 9 KB header line", b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 1),
        ("200 header lines", b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200))
         + b"\r\n", 1),
    ]
    for what, data, pieces in too_large:
        answer = raw(port, data, pieces)
        assert status_of(answer) == 431, (what, answer[:300])
        body = json_body(answer)
        assert body["error"] == ("the request head is larger than the gateway allows (32 KiB in all, 8 KiB per "
                                 "header line, 128 header lines); send fewer or smaller headers"), what
        assert f"X-Request-Id: {body['request_id']}" in headers_of(answer), what
        assert b"Traceback" not in answer and b"pppp" not in answer and b"bbbb" not in answer
    # a request line too long is still not valid HTTP (400), and a large head within the cap is served
    assert status_of(raw(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")) == 400
    fits = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    answer = raw(port, fits + pad_lines(HEAD_LIMIT - len(fits) - 200) + b"Connection: close\r\n\r\n{}", 4)
    assert status_of(answer) == 200, answer[:300]


def test_header_hoarders_cost_bounded_memory_and_the_api_keeps_serving(served):
    cli, port = served
    pid = cli.status()["daemon"]["pid"]
    keepers = usable_fds(900) // 3 * 2  # unfinished heads under the cap, ~30 KB each: past the 16 MiB budget
    floods = usable_fds(900) // 3  # heads that would go on to 1 MB (the attack, fewer connections)
    base = rss_mib(pid)
    peak = base
    held, flooding = [], []
    try:
        for i in range(keepers):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + pad_lines(30_000))
            held.append(s)
            if i % 50 == 0:
                peak = max(peak, rss_mib(pid))
        for _ in range(floods):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setblocking(False)
            s.send(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
            flooding.append(s)
        line = b"X-Flood: " + b"f" * 8180 + b"\r\n"
        sending = set(range(floods))
        answers = {i: b"" for i in range(floods)}
        deadline = time.monotonic() + 60
        for _ in range(128):  # 1 MB each, one 8 KB line at a time across the connections
            for i in list(sending):
                s = flooding[i]
                try:
                    answers[i] += s.recv(65536)
                except BlockingIOError:
                    pass
                except OSError:
                    sending.discard(i)
                    continue
                if answers[i]:  # answered: a client stops sending
                    sending.discard(i)
                    continue
                try:
                    s.send(line)
                except BlockingIOError:
                    pass
                except OSError:  # closed or reset: this one is done
                    sending.discard(i)
            peak = max(peak, rss_mib(pid))
            if not sending or time.monotonic() > deadline:
                break
        # the API serves while all of that is going on
        status, _, body = post_json(f"http://127.0.0.1:{port}/echo", {"x": 1})
        assert (status, json.loads(body)) == (200, {"ok": True})
        peak = max(peak, rss_mib(pid))
        floods_answered = Counter(status_of(answers[i] + read_all(s, 10)) for i, s in enumerate(flooding))
        shed = [status_of(read_all(s, 0.5)) for s in held[:50]]  # the longest held are shed first
    finally:
        for s in held + flooding:
            s.close()
    assert floods_answered[431] >= floods * 0.9, floods_answered  # 0: reset while still sending
    assert set(floods_answered) <= {431, 0}, floods_answered
    assert shed.count(503) >= 10, Counter(shed)
    # 16 MiB of heads may be held (about twice over: as bytes and as text in aiohttp's parser),
    # plus ~4 KB per connection: +35 MiB measured; the issue measured +1,950 MB for 1,000
    assert peak - base < 100, f"daemon RSS {base:.0f} MiB -> peak {peak:.0f} MiB"
    assert post_json(f"http://127.0.0.1:{port}/echo", {"after": True})[0] == 200


def test_at_the_open_file_limit_idle_connections_go_new_clients_are_served_and_get_answers(tmp_path):
    port = free_port()
    project = write_project(tmp_path / "project", realtime_yaml("echo", port), {"predictor.py": OK_PREDICTOR})
    # soft 256, hard 400: the daemon raises the soft limit to 400; its gateway keeps 128 back
    cli = start_daemon(project, nofile=(256, 400))
    idle: list[socket.socket] = []
    try:
        cap = socket_cap(400)
        n = usable_fds(cap + 180)
        assert n > cap + 50, f"this process can open only {n} connections"
        for _ in range(n):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        deadline = time.monotonic() + 30
        while sum(closed_silently(s) for s in idle) < n - cap:
            assert time.monotonic() < deadline, "the gateway did not shed idle connections"
            time.sleep(0.1)
        # all of them accepted: without the cap the daemon would be at EMFILE, and libuv would
        # reset every new connection, the control socket's too ("no cortexd daemon is running")
        status, headers, body = post_json(f"http://127.0.0.1:{port}/echo", {"new": "client"})
        assert (status, json.loads(body)) == (200, {"ok": True}), body
        got = cli("get")
        assert got.code == 0 and "echo" in got.out, got
        assert cli("get", "echo", "-o", "json").code == 0
        first_closed = [closed_silently(s) for s in idle]
        assert any(first_closed) and not all(first_closed)
        log = (cli.home / "daemon.log").read_text()
        short = [line for line in log.splitlines() if "short of file descriptors" in line]
        assert len(short) == 1, short  # dozens of sheds, one line
        assert "open-file limit 400" in short[0] and "EMFILE" in short[0], short[0]
        # one line per interval (10 s), saying how many were left out
        time.sleep(10.5)
        for s in idle:
            s.close()
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
        deadline = time.monotonic() + 30
        while sum(closed_silently(s) for s in idle) < n - cap:
            assert time.monotonic() < deadline, "the gateway did not shed idle connections"
            time.sleep(0.1)
        assert http("GET", f"http://127.0.0.1:{port}/echo")[0] == 200
        log = (cli.home / "daemon.log").read_text()
        short = [line for line in log.splitlines() if "short of file descriptors" in line]
        assert len(short) == 2 and "more like it since the last such line" in short[1], short
    finally:
        for s in idle:
            s.close()
        stop_daemon(cli)
