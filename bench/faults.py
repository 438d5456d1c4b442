"""Faults and bad input against a real daemon: the figures of issue 9.

Run by hand (never a test); loopback only, every loop bounded in count and in time:

    python bench/faults.py                         # every figure, process backend
    python bench/faults.py --backend docker        # kill, rollout, scale, down on Docker replicas
    python bench/faults.py --only kill,down --quick

Figures (--only takes a comma-separated list of these names):
- kill:    SIGKILL (process) or `docker kill` of one of two replicas under 8 keep-alive clients:
           failed requests against those in flight on the victim, and the time from the kill to
           a replacement ready;
- rollout: predictor.py edited (temp file + rename) under 8 keep-alive clients, 2 replicas,
           max_surge 1, max_unavailable 0: failed requests until every replica is new;
- scale:   up on the load (target_replica_concurrency 2, up to 3 replicas), then down by
           `cortexd deploy` with max_replicas 1, under 8 keep-alive clients: failed requests;
- down:    `cortexd down` under 8 keep-alive clients: failed requests (anything but 200, or 503
           with Connection: close; a cut or reset connection counts as failed);
- fuzz:    10,000 seeded fuzzed requests over raw sockets (methods, paths, versions, headers,
           bodies, encodings, chunking, truncated and garbage HTTP): 5xx not from the predictor,
           daemon RSS growth, the daemon's open fds before and after;
- configs: 1,000 mutated cortex.yaml files through `cortexd validate` in this process, and a
           sample through the CLI: tracebacks, problems without file:line;
- flood:   20,000 malformed requests: daemon.log growth;
- hoard:   1,000 connections each sending about 1 MB of headers that never finish (8 KB lines),
           then 1,000 holding an unfinished head just under the 32 KiB cap for 15 s: the daemon's
           RSS against idle, how the hoarders were answered, requests served meanwhile;
- idle:    1,000 and then 5,000 idle connections, the daemon started under a soft open-file limit
           of 1,024 (the hard one as it is: the daemon raises to it), then under 1,024 both: new
           clients served, `cortexd get` answering, what the daemon logged.

Each figure gets a private daemon (`python -m cortexd up -d` with CORTEXD_HOME in a temp dir,
`--metrics-port 0`), stopped with `cortexd down` and its home removed afterwards, with the
defaults a user gets (a root daemon on this host's Python under /root runs its replicas as root
and says so).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
import zlib
from collections import Counter
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.builders import write_project
from tests.load import KeepAliveClients, Record
from tests.real_daemon import CLI, Result, free_port

SEED = 20261201
FIGURES = ("kill", "rollout", "scale", "down", "fuzz", "configs", "flood", "hoard", "idle")

PREDICTOR = textwrap.dedent('''\
    import os
    import socket
    import time

    VERSION = "v1"


    class PythonPredictor:
        def __init__(self, config):
            self.who = f"{socket.gethostname()}/{os.getpid()}"  # containers: pids alike

        def predict(self, payload):
            if isinstance(payload, dict) and "raise" in payload:
                raise ValueError("asked to fail")  # the predictor's own 500
            if isinstance(payload, dict) and isinstance(payload.get("sleep"), (int, float)):
                time.sleep(min(max(payload["sleep"], 0), 0.2))
            return {"who": self.who, "version": VERSION}
    ''')


def load_text() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.1f} {la[1]:.1f} {la[2]:.1f}"


def say(line: str) -> None:
    print(line, flush=True)


# -- a private daemon -------------------------------------------------------------------------


class Daemon:
    """`cortexd up -d` on a generated project in a temp home; `down` and the home removed on exit.

    The project sits inside the home, both world-readable (a Docker replica's user reads the
    project through a bind mount). Status is read straight from the control socket (a CLI
    process per poll costs a core-second on this machine).
    """

    def __init__(self, backend: str, api_yaml: str, files: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, wait: float = 240, nofile: tuple[int, int] | None = None):
        self.backend, self.wait = backend, wait
        self.nofile = nofile  # RLIMIT_NOFILE (soft, hard) the daemon starts under; None: this process's
        self.home = Path(tempfile.mkdtemp(prefix="cxd-fb-"))  # short: unix socket paths <= 107 bytes
        self.home.chmod(0o755)
        self.cli = CLI(self.home)
        self.cli.env.update(env or {})
        self.project = write_project(self.home / "p", api_yaml, files or {"predictor.py": PREDICTOR})
        for p in [self.project, *self.project.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)

    def __enter__(self) -> Self:
        try:
            args = ["up", "-d", "--backend", self.backend, "--metrics-port", "0", "--wait", str(int(self.wait))]
            if self.backend == "docker":
                args += ["--base-image", docker_base_image()]
            if self.nofile is None:
                up = self.cli(*args, str(self.project), timeout=self.wait + 60)
            else:  # `up -d` (and so the daemon it starts) under that open-file limit
                wrapper = (f"import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, {self.nofile!r}); "
                           "sys.argv[0] = 'cortexd'; runpy.run_module('cortexd', run_name='__main__')")
                p = subprocess.run([sys.executable, "-c", wrapper, *args, str(self.project)], env=self.cli.env,
                                   cwd=str(REPO), capture_output=True, text=True, timeout=self.wait + 60, check=False)
                up = Result(p.returncode, p.stdout, p.stderr)
            if up.code != 0:
                raise RuntimeError(f"cortexd up exited {up.code}:\n{up.out}\n{up.err}\n{self.cli.daemon_log()}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            if (self.home / "cortexd.sock").exists():
                self.cli("down", timeout=120)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def get(self, path: str) -> dict:
        conn = _UnixHTTPConnection(str(self.home / "cortexd.sock"))
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def status(self) -> dict:
        return self.get("/status")

    def api(self, name: str) -> dict:
        return next(a for a in self.status()["apis"] if a["name"] == name)

    def pid(self) -> int:
        return int(self.status()["daemon"]["pid"])

    def wait_for(self, name: str, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        api = None
        while time.monotonic() < deadline:
            api = self.api(name)
            if predicate(api):
                return api
            time.sleep(0.05)
        raise RuntimeError(f"timed out ({timeout:g} s) waiting for {what}: {json.dumps(api)[:2000]}\n"
                           f"{self.cli.daemon_log()[-3000:]}")


class _UnixHTTPConnection(HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.unix_path)
        self.sock = s


_BASE_IMAGE: list[str] = []


def docker_base_image() -> str:
    if not _BASE_IMAGE:
        import docker
        import docker.errors

        from cortexd.backends.images import DEFAULT_BASE_IMAGE, OFFLINE_BASE_IMAGE

        chosen = os.environ.get("CORTEXD_BASE_IMAGE")
        if not chosen:
            client = docker.from_env()
            try:
                client.images.get(OFFLINE_BASE_IMAGE)
                chosen = OFFLINE_BASE_IMAGE
            except docker.errors.ImageNotFound:
                chosen = DEFAULT_BASE_IMAGE
            finally:
                client.close()
        _BASE_IMAGE.append(chosen)
    return _BASE_IMAGE[0]


def api_yaml(name: str, port: int, extra: str = "", threads: int = 4) -> str:
    return (f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
            f"    threads_per_process: {threads}\n  networking:\n    local_port: {port}\n{extra}")


def ready(api: dict) -> list[dict]:
    return [r for r in api["replica_list"] if r["state"] == "ready"]


# -- 8 keep-alive clients ---------------------------------------------------------------------


def who(r: Record) -> str | None:
    """Which predictor and version answered (the fault predictors answer {"who", "version"})."""
    return f"{r.body['who']} {r.body['version']}" if isinstance(r.body, dict) and "who" in r.body else None


def clients(port: int, path: str, payload: bytes = b'{"sleep": 0.02}', **options) -> KeepAliveClients:
    """8 keep-alive clients (tests/load.py) for at most 120 s unless told otherwise."""
    return KeepAliveClients(port, path, 8, payload, **{"limit": 120.0, **options})


def failed(records, allowed=("200",)) -> list:
    return [r for r in records if r[2] not in allowed]


def outcome_text(counts: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


# -- kill -------------------------------------------------------------------------------------


def replaced_by_new(victim: str, before: set[str]):
    def done(api: dict) -> bool:
        ids = {r["id"] for r in api["replica_list"]}
        return len(ready(api)) == 2 and victim not in ids and bool({r["id"] for r in ready(api)} - before)
    return done


def fig_kill(backend: str, runs: int) -> None:
    say(f"\n## kill: one of two replicas killed under 8 keep-alive clients ({backend}, {runs} runs; {load_text()})")
    for run in range(runs):
        port = free_port()
        extra = "  autoscaling:\n    min_replicas: 2\n    max_replicas: 2\n    init_replicas: 2\n"
        with Daemon(backend, api_yaml("pids", port, extra)) as d:
            api = d.wait_for("pids", lambda a: len(ready(a)) == 2, 120, "2 ready replicas")
            before_ids = {r["id"] for r in api["replica_list"]}
            with clients(port, "/pids") as load:
                time.sleep(1.0)
                api = d.api("pids")
                victim = ready(api)[0]
                gateway_in_flight = victim.get("in_flight")
                began = time.monotonic()
                if backend == "process":
                    os.kill(int(victim["backend"]["pid"]), signal.SIGKILL)
                else:
                    import docker

                    client = docker.from_env()
                    try:
                        client.containers.get(victim["backend"]["container"]).kill()
                    finally:
                        client.close()
                returned = time.monotonic()
                d.wait_for("pids", replaced_by_new(victim["id"], before_ids), 60, "the replacement ready")
                replaced = time.monotonic() - began
                time.sleep(1.0)
            records = load.records
        before = {who(r) for r in records if r[1] < began and who(r)}
        after = {who(r) for r in records if r[0] > returned + 0.5 and who(r)}
        survivors = before & after
        # in flight on the victim: underway across the kill and not answered by the survivor
        in_flight = [r for r in records if r[0] < returned and r[1] > began and who(r) not in survivors]
        bad = failed(records)
        late = [r for r in bad if r[0] > returned]
        say(f"run {run + 1}: {len(records)} requests, {len(bad)} failed ({outcome_text(Counter(r[2] for r in bad))}); "
            f"in flight on the victim at the kill: {len(in_flight)} "
            f"(gateway's count just before: {gateway_in_flight}); "
            f"failed that were sent after the kill: {len(late)}; replacement ready {replaced:.2f} s after the kill "
            f"[{'ok' if len(bad) <= len(in_flight) else 'MISSED: more failed than were in flight'}]")
        if load.cuts:
            say(f"  cut: {load.cuts[:3]}")


# -- rollout, scale, down ---------------------------------------------------------------------


def edit(path: Path, text: str) -> None:
    """Save as editors do: a temp file beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def fig_rollout(backend: str) -> None:
    say(f"\n## rollout: predictor.py edited under 8 keep-alive clients ({backend}; {load_text()})")
    port = free_port()
    extra = ("  autoscaling:\n    min_replicas: 2\n    max_replicas: 2\n"
             "  update_strategy:\n    max_surge: 1\n    max_unavailable: 0\n")
    with Daemon(backend, api_yaml("rolled", port, extra)) as d:
        api = d.wait_for("rolled", lambda a: a["status"] == "live" and len(ready(a)) == 2, 120, "2 ready")
        old = {r["id"] for r in api["replica_list"]}
        with clients(port, "/rolled") as load:
            time.sleep(1.0)
            saved = time.monotonic()
            edit(d.project / "predictor.py", PREDICTOR.replace('VERSION = "v1"', 'VERSION = "v2"'))
            d.wait_for("rolled", lambda a: a["status"] == "live" and len(ready(a)) == 2
                       and not {r["id"] for r in a["replica_list"]} & old, 180, "every replica new")
            done = time.monotonic() - saved
            time.sleep(1.0)
        records = load.records
    bad = failed(records)
    versions = Counter(w.split()[1] for w in map(who, records) if w)
    say(f"{len(records)} requests ({outcome_text(load.outcomes())}), answers by version {dict(versions)}; "
        f"rollout done {done:.1f} s after the save; failed: {len(bad)} [{'ok' if not bad else 'MISSED'}]")
    if load.cuts:
        say(f"  cut: {load.cuts[:3]}")


def fig_scale(backend: str) -> None:
    say(f"\n## scale: up on the load, down by `cortexd deploy`, under 8 keep-alive clients ({backend}; {load_text()})")
    port = free_port()
    autoscaling = ("  autoscaling:\n    min_replicas: 1\n    max_replicas: {max}\n    target_replica_concurrency: 2\n"
                   "    window: 10s\n    upscale_stabilization_period: 0s\n    downscale_stabilization_period: 0s\n")
    with Daemon(backend, api_yaml("scaled", port, autoscaling.format(max=3))) as d:
        d.wait_for("scaled", lambda a: a["status"] == "live" and len(ready(a)) == 1, 120, "1 ready")
        with clients(port, "/scaled", b'{"sleep": 0.05}', limit=300) as load:
            t0 = time.monotonic()
            d.wait_for("scaled", lambda a: len(ready(a)) == 3, 120, "3 replicas ready on the load")
            up = time.monotonic() - t0
            time.sleep(1.0)
            during_up = len(load.records)
            edit(d.project / "cortex.yaml", api_yaml("scaled", port, autoscaling.format(max=1)))
            deployed = d.cli("deploy", str(d.project), timeout=120)
            t1 = time.monotonic()
            d.wait_for("scaled", lambda a: len(a["replica_list"]) == 1 and len(ready(a)) == 1, 120, "1 replica")
            down = time.monotonic() - t1
            time.sleep(1.0)
        records = load.records
    bad_up, bad_down = failed(records[:during_up]), failed(records[during_up:])
    say(f"1 -> 3 replicas on the load in {up:.1f} s: {during_up} requests, {len(bad_up)} failed; "
        f"`cortexd deploy` (max_replicas 1, exit {deployed.code}) -> 1 replica in {down:.1f} s: "
        f"{len(records) - during_up} requests, {len(bad_down)} failed ({outcome_text(load.outcomes())}) "
        f"[{'ok' if not bad_up and not bad_down else 'MISSED'}]")
    if load.cuts:
        say(f"  cut: {load.cuts[:3]}")


def fig_down(backend: str) -> None:
    say(f"\n## down: `cortexd down` under 8 keep-alive clients ({backend}; {load_text()})")
    port = free_port()
    with Daemon(backend, api_yaml("steady", port)) as d:
        d.wait_for("steady", lambda a: a["status"] == "live", 120, "live")
        with clients(port, "/steady", stop_when_refused=True) as load:
            time.sleep(1.0)
            t0 = time.monotonic()
            result = d.cli("down", timeout=120)
            took = time.monotonic() - t0
            time.sleep(0.5)
        records = load.records
    bad = failed(records, allowed=("200", "503-close"))
    say(f"{len(records)} requests ({outcome_text(load.outcomes())}); down exit {result.code} in {took:.1f} s; "
        f"failed: {len(bad)} [{'ok' if not bad and result.code == 0 else 'MISSED'}]")
    if bad:
        say(f"  failed: {outcome_text(Counter(r[2] for r in bad))}; cut: {load.cuts[:3]}")


# -- fuzz -------------------------------------------------------------------------------------

METHODS = ["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT",
           "PRI", "get", "FOO", "P OST", "", "GET\x00", "\xffPOST"]
VERSIONS = ["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.x", "http/1.1", "HTTP/1.1 extra", ""]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", "application/octet-stream",
                 "multipart/form-data; boundary=XyZ", "multipart/form-data", "multipart/form-data; boundary=",
                 "application/x-www-form-urlencoded", "application/json; charset=klingon", "\x00/\x00", ";;;", "*/*"]
ENCODINGS = ["gzip", "deflate", "br", "identity", "gzip, gzip", "x-gzip", "compress", "zstd", "GZIP", "bogus"]


def fuzz_path(rng: random.Random, endpoint: str) -> str:
    choice = rng.randrange(12)
    if choice < 5:
        return endpoint + rng.choice(["", "/", "?x=1", "?" + "a=b&" * rng.randrange(1, 300), "#frag", "/sub/path"])
    return rng.choice([
        "/", "/nope", "*", endpoint + "/../../etc/passwd", "/%2e%2e/%2e%2e", "/" + "a" * rng.choice([100, 5000, 9000]),
        "http://127.0.0.1" + endpoint, "//" + endpoint, endpoint + "%00", "/\u00e9\u00e8".encode().decode("latin-1"),
        endpoint.upper(), "/healthz", "/metrics", "",
    ])


def fuzz_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return rng.randrange(-2**70, 2**70)
    if kind == 1:
        return rng.random() * 10 ** rng.randrange(-300, 300)
    if kind == 2:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(0, 40)))
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return {"sleep": rng.choice([0, 0.001, -1, "x", None])}
    if kind in (5, 6):
        return [fuzz_json(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    return {str(fuzz_json(rng, 4))[:20]: fuzz_json(rng, depth + 1) for _ in range(rng.randrange(0, 6))}


def fuzz_body(rng: random.Random) -> tuple[bytes, str]:
    kind = rng.randrange(10)
    if kind < 3:
        return json.dumps(fuzz_json(rng)).encode(), "json"
    if kind == 3:
        n = rng.choice([10, 100, 1000, 5000, 200000])
        return (b"[" * n + b"]" * n if rng.random() < 0.5 else b'{"a":' * n + b"1" + b"}" * n), "deep-json"
    if kind == 4:
        return rng.randbytes(rng.choice([0, 1, 17, 1000, 65536])), "bytes"
    if kind == 5:
        return (b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n"
                + rng.randbytes(rng.randrange(0, 500))
                + rng.choice([b"\r\n--XyZ--\r\n", b"", b"\r\n--XyZ"])), "multipart"
    if kind == 6:
        return b'{"raise": 1}', "raise"
    if kind == 7:
        return b"a=1&b=" + b"%" * rng.randrange(0, 100) + b"&c=\xff", "form"
    if kind == 8:
        return b"", "empty"
    return json.dumps({"sleep": 0}).encode(), "json"


BOMB = None


def gzip_bomb() -> bytes:
    global BOMB
    if BOMB is None:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(2**20)
        BOMB = b"".join(packer.compress(zeros) for _ in range(40)) + packer.flush()  # 40 MiB inflated
    return BOMB


EXTRA_HEADERS = [
    ("X-Request-Id", ["ok-123", "a" * 500, "bad id\x7f", "\u00ff" * 10, "../../x"]),
    ("X-Forwarded-For", ["1.2.3.4", "junk, , ,", "::1, 999.1.1.1", "x" * 2000]),
    ("Forwarded", ["for=evil;proto=https", "for=\"[::1]\""]),
    ("Expect", ["100-continue", "nonsense"]),
    ("Connection", ["keep-alive", "close", "Upgrade", "keep-alive, close", "TE"]),
    ("Upgrade", ["websocket", "h2c", "TLS/1.0"]),
    ("Accept-Encoding", ["gzip", "*;q=0", "br;q=abc"]),
    ("X-Big", ["b" * 100, "b" * 8000, "b" * 20000]),
    ("Bad Name", ["v"]), ("Bad:Name", ["v"]), ("\x00", ["v"]), ("X-\xff", ["v"]),
    ("X-Folded", ["a\r\n continued"]),
    ("X-Ctl", ["a\x00b\x1bc"]),
]


def fuzz_request(rng: random.Random, port: int, endpoint: str) -> tuple[bytes, str, bool]:
    """(bytes to send, kind, whether the request is known to be incomplete).

    A few are noise (random bytes, a TLS hello, an HTTP/2 preface); the rest start as a valid
    POST of JSON and get 0-3 perturbations each (method, path, version, Host, content type,
    encoding, framing, body, extra or broken headers, line endings, cut short, pipelined), so
    that many reach the predictor and many stop at each of the gateway's checks."""
    roll = rng.random()
    if roll < 0.04:
        return rng.randbytes(rng.choice([1, 16, 300, 5000, 70000])), "garbage", True
    if roll < 0.06:
        return rng.choice([b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(200),
                           b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), "other-protocol", True
    perturb = set(rng.sample(["method", "path", "version", "host", "type", "encoding", "framing", "body",
                              "headers", "eol", "cut", "pipeline"], rng.choice([0, 1, 1, 1, 2, 2, 3])))
    method = rng.choice(METHODS) if "method" in perturb else "POST"
    path = fuzz_path(rng, endpoint) if "path" in perturb else endpoint
    version = rng.choice(VERSIONS) if "version" in perturb else "HTTP/1.1"
    if "body" in perturb:
        body, body_kind = fuzz_body(rng)
    else:
        body, body_kind = json.dumps(fuzz_json(rng) if rng.random() < 0.5 else {"sleep": 0}).encode(), "json"
    headers: list[tuple[str, str]] = []
    if "host" not in perturb:
        headers.append(("Host", f"127.0.0.1:{port}"))
    elif rng.random() < 0.8:
        headers.append(("Host", rng.choice(["x", "", "a" * 300, "evil.example, other"])))
        if rng.random() < 0.3:
            headers.append(("Host", "second"))
    headers.append(("Content-Type", rng.choice(CONTENT_TYPES) if "type" in perturb else "application/json"))
    if "encoding" in perturb:
        enc = rng.choice(ENCODINGS)
        headers.append(("Content-Encoding", enc))
        roll = rng.random()
        if roll < 0.15:
            body, body_kind = gzip_bomb(), "gzip-bomb"
        elif roll < 0.6 and enc.lower() in ("gzip", "x-gzip"):
            body = gzip.compress(body)
        elif roll < 0.75 and enc == "deflate":
            body = zlib.compress(body)
        elif roll < 0.9 and body:
            body = gzip.compress(body)[: rng.randrange(1, len(body) + 20)]  # truncated gzip
    incomplete = False
    framing = rng.randrange(5) if "framing" in perturb else -1
    framed = ["content-length", "chunked", "lying-length", "length-and-chunked", "two-lengths", "unframed"][framing + 1]
    if framing < 0:
        headers.append(("Content-Length", str(len(body))))
        wire_body = body
    elif framing == 0:  # chunked, well formed or not
        headers.append(("Transfer-Encoding", rng.choice(["chunked", "chunked", "gzip, chunked", "chunked, identity",
                                                         "xchunked"])))
        pieces = [body[i:i + 1000] for i in range(0, len(body), 1000)]
        wire_body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + rng.choice(
            [b"0\r\n\r\n", b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n", b"zz\r\n", b"", b"ffffffffffffffff\r\n"])
        incomplete = not wire_body.endswith(b"\r\n\r\n")
    elif framing == 1:  # lies about its length
        n = rng.choice([-1, 0, len(body) + rng.randrange(1, 1000), 2**64, 10**30])
        headers.append(("Content-Length", str(n) if rng.random() < 0.8 else f"{len(body)}, {n}"))
        wire_body, incomplete = body, True
    elif framing == 2:  # both framings (request smuggling)
        headers += [("Content-Length", str(len(body))), ("Transfer-Encoding", "chunked")]
        wire_body, incomplete = body, True
    elif framing == 3:  # two Content-Length headers
        headers += [("Content-Length", str(len(body))), ("Content-Length", str(len(body) + 1))]
        wire_body, incomplete = body, True
    else:  # no framing at all
        wire_body = body
    if "headers" in perturb:
        for name, values in rng.sample(EXTRA_HEADERS, rng.randrange(1, 4)):
            headers.append((name, rng.choice(values)))
        if rng.random() < 0.1:
            headers += [(f"X-H{i}", "v") for i in range(rng.choice([150, 300]))]
    rng.shuffle(headers)
    eol = rng.choice([b"\n", b"\r", b"\r\r\n"]) if "eol" in perturb else b"\r\n"
    head = f"{method} {path} {version}".encode("latin-1", "replace") + eol
    head += b"".join(f"{k}: {v}".encode("utf-8", "surrogateescape") + eol for k, v in headers) + eol
    data = head + wire_body
    if "cut" in perturb:
        data, incomplete, framed = data[: rng.randrange(1, len(data))], True, "cut-short"
    elif "pipeline" in perturb:
        data += head + wire_body
    return data, f"http/{body_kind}/{framed}", incomplete


def read_answer(sock: socket.socket, head_only: bool, deadline: float) -> bytes:
    """The first complete response (skipping 1xx), or what came before the close / the deadline."""
    buf = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                break
            if re.match(rb"HTTP/\d\.\d 1\d\d", head):
                buf = rest  # 100 Continue
                continue
            if head_only:
                return buf
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if m and len(rest) >= int(m.group(1)):
                return buf
            if re.search(rb"(?im)^transfer-encoding:\s*chunked", head) and rest.endswith(b"0\r\n\r\n"):
                return buf
            break
    return buf


def status_of(answer: bytes) -> int:
    m = re.match(rb"HTTP/\d\.\d (\d{3})", answer)
    return int(m.group(1)) if m else 0


def fuzz_one(rng: random.Random, port: int, endpoint: str) -> tuple[str, int, bytes]:
    """Send one fuzzed request on a new connection: (kind, status or 0, the answer's bytes).

    The answer is awaited 3 s (0.5 s for a request known to be incomplete); without one, the
    client half-closes (nothing more comes) and waits 7 s more."""
    data, kind, incomplete = fuzz_request(rng, port, endpoint)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with contextlib.suppress(OSError):  # it may answer (400) and close before all of it is sent
            s.sendall(data)
        head_only = data.split(b" ", 1)[0] == b"HEAD"
        answer = read_answer(s, head_only, time.monotonic() + (0.5 if incomplete else 3))
        if not answer:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_WR)
            answer = read_answer(s, head_only, time.monotonic() + 7)
    return kind if incomplete else f"{kind} complete", status_of(answer), answer


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _sockets() -> dict[str, tuple[str, str]]:
    """socket inode -> (local, remote) address of this host's TCP sockets (IPv4 and IPv6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                cols = line.split()
                out[cols[9]] = (_addr(cols[1]), _addr(cols[2]))
    return out


def _addr(hexaddr: str) -> str:
    host, port = hexaddr.split(":")
    if len(host) == 8:
        host = ".".join(str(b) for b in reversed(bytes.fromhex(host)))
    return f"{host}:{int(port, 16)}"


def fd_targets(pid: int, gateway_port: int) -> Counter:
    """What the daemon's fds point at: files and pipes by name, TCP sockets as the gateway's
    listener, a client's connection, or an upstream connection to a replica address."""
    out: Counter = Counter()
    sockets = _sockets()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and m.group(1) in sockets:
                local, remote = sockets[m.group(1)]
                if remote.endswith(":0"):
                    target = f"listening {local}"
                elif local.endswith(f":{gateway_port}"):
                    target = "a client's connection"
                else:
                    target = f"upstream to {remote}"
            out[re.sub(r"\[\d+\]", "[N]", target)] += 1
    return out


def from_predictor(answer: bytes) -> bool:
    body = answer.partition(b"\r\n\r\n")[2]
    return b'"error": "predict raised' in body or b"could not be encoded as a response" in body


def run_threads(work, n_threads: int, total: int, limit: float, seed: int) -> tuple[list, float]:
    """`work(rng, i)` for i in range(total) spread over threads, stopping at `limit` seconds."""
    results: list = []
    lock = threading.Lock()
    counter = iter(range(total))
    deadline = time.monotonic() + limit

    def loop(t: int) -> None:
        rng = random.Random(seed * 1000 + t)
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                out = work(rng, i)
            except OSError as e:
                out = ("connect-error", 0, repr(e).encode())
            with lock:
                results.append(out)

    t0 = time.monotonic()
    threads = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit + 30)
    return results, time.monotonic() - t0


def settle(pid: int, baseline: int, limit: float = 15.0) -> int:
    deadline = time.monotonic() + limit
    n = fds(pid)
    while n > baseline and time.monotonic() < deadline:
        time.sleep(0.25)
        n = fds(pid)
    return n


def fig_fuzz(backend: str, total: int, seed: int) -> None:
    say(f"\n## fuzz: {total} seeded fuzzed requests over raw sockets (seed {seed}; {load_text()})")
    port = free_port()
    with Daemon(backend, api_yaml("fuzz", port)) as d:
        d.wait_for("fuzz", lambda a: a["status"] == "live", 120, "live")
        pid = d.pid()
        run_threads(lambda rng, i: fuzz_one(rng, port, "/fuzz"), 8, 500, 120, seed + 1)
        time.sleep(1.0)
        fd0, fd_targets0 = fds(pid), fd_targets(pid, port)
        rss0, log0 = rss_kb(pid), log_bytes(d.home)
        results, took = run_threads(lambda rng, i: fuzz_one(rng, port, "/fuzz"), 8, total, 600, seed)
        rss1 = rss_kb(pid)
        time.sleep(2.0)
        fd1 = settle(pid, fd0)
        rss2 = rss_kb(pid)
        fd_targets1 = fd_targets(pid, port)
        alive = d.status()["daemon"]["pid"] == pid
        probe = post_ok(port, "/fuzz")
        new_log = read_log_since(d.home, log0)
    statuses = Counter(s for _, s, _ in results)
    five = [(k, s, a) for k, s, a in results if s >= 500]
    ours = [(k, s, a) for k, s, a in five if not from_predictor(a)]
    gateway = [x for x in ours if b'"request_id"' in x[2]]
    say(f"{len(results)} requests in {took:.0f} s ({len(results) / took:.0f}/s, 8 threads), after 500 to warm up; "
        f"statuses: {dict(sorted(statuses.items()))} (0: closed without an answer, or none within 10 s)")
    say(f"5xx: {len(five)}, of which from the predictor (it raises on {{\"raise\": ...}}): {len(five) - len(ours)}; "
        f"not from the predictor: {len(ours)} (with the gateway's JSON error body: {len(gateway)}) "
        f"[{'ok' if not ours else 'MISSED'}]")
    for k, s, a in ours[:5]:
        say(f"  {s} on a {k} request: {a[:300]!r}")
    unanswered = Counter(k for k, s, _ in results if s == 0 and k.endswith("complete"))
    say(f"complete requests (by their framing) without an answer: {sum(unanswered.values())} {dict(unanswered)}")
    by_framing: dict[str, Counter] = {}
    for k, s, _ in results:
        by_framing.setdefault(k.split(" ")[0].split("/")[-1], Counter())[s] += 1
    say("statuses by framing: " + "; ".join(f"{f}: {dict(sorted(c.items()))}" for f, c in sorted(by_framing.items())))
    say(f"daemon RSS {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB after the fuzz -> {rss2 / 1024:.1f} MiB 2 s later "
        f"(growth {(rss2 - rss0) / 1024:+.1f} MiB) [{'ok' if rss2 - rss0 < 20 * 1024 else 'MISSED'}]; "
        f"open fds {fd0} -> {fd1} [{'ok' if fd1 <= fd0 else 'MISSED'}]; "
        f"daemon alive: {alive}; a plain POST after: {probe}")
    upstream0 = sum(n for t, n in fd_targets0.items() if t.startswith("upstream to "))
    upstream1 = sum(n for t, n in fd_targets1.items() if t.startswith("upstream to "))
    say(f"  of those, pooled upstream connections to replicas (at most 64 idle per replica, not reused after "
        f"30 s idle): {upstream0} -> {upstream1}; the others {fd0 - upstream0} -> {fd1 - upstream1} "
        f"[{'ok' if fd1 - upstream1 <= fd0 - upstream0 else 'MISSED'}]")
    if fd1 > fd0:
        say(f"  fds new since the baseline: {dict(fd_targets1 - fd_targets0)}")
    errors = [line for line in new_log.splitlines() if " ERROR " in line or "Traceback" in line]
    say(f"daemon.log grew {len(new_log.encode())} bytes, {len(new_log.splitlines())} lines, "
        f"{len(errors)} ERROR/Traceback lines")
    for line in errors[:5]:
        say(f"  {line[:300]}")


def post_ok(port: int, path: str) -> int:
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    except (OSError, HTTPException):
        return 0
    finally:
        conn.close()


# -- flood ------------------------------------------------------------------------------------

MALFORMED = [
    b"GARBAGE " + b"\xff" * 4000 + b"\r\n\r\n",  # bad method, raw bytes
    b"POST /flood HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",  # bad header value
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line too long
    b"POST /flood HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk
    b"\x16\x03\x01\x02\x00" + b"\xff" * 4000 + b"\r\n\r\n",  # a TLS hello, then garbage
    b"POST /flood HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 70000 + b"\r\n\r\n",  # a header too long
]


def log_bytes(home: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in home.glob("daemon.log*")}


def read_log_since(home: Path, before: dict[str, int]) -> str:
    """daemon.log's text added since `before` (sizes by file name; a rotation starts it anew)."""
    log = home / "daemon.log"
    if not log.exists():
        return ""
    start = before.get("daemon.log", 0)
    if set(log_bytes(home)) != set(before) or log.stat().st_size < start:
        start = 0
    with log.open("rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


def fig_flood(backend: str, total: int) -> None:
    say(f"\n## flood: {total} malformed requests ({load_text()})")
    port = free_port()
    with Daemon(backend, api_yaml("flood", port)) as d:
        d.wait_for("flood", lambda a: a["status"] == "live", 120, "live")
        before = log_bytes(d.home)

        def one(rng, i):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                try:
                    s.sendall(MALFORMED[i % len(MALFORMED)])
                except OSError:
                    pass
                answer = read_answer(s, False, time.monotonic() + 10)
            return "malformed", status_of(answer), b""

        results, took = run_threads(one, 4, total, 300, SEED)
        time.sleep(10.5)  # past the client-error log interval: one more of each kind writes the counts
        extra, _ = run_threads(one, 1, len(MALFORMED), 30, SEED)
        results += extra
        time.sleep(1.0)
        after = log_bytes(d.home)
        new = read_log_since(d.home, before)
        probe = post_ok(port, "/flood")
    grown = sum(after.values()) - sum(before.values())
    lines = new.splitlines()
    say(f"{len(results)} sent in {took:.0f} s ({len(results) / took:.0f}/s); answers "
        f"{dict(sorted(Counter(s for _, s, _ in results).items()))}; daemon.log grew {grown} bytes "
        f"({grown / 2**20:.3f} MiB; files {after}) in {len(lines)} lines "
        f"[{'ok' if grown < 2 * 2**20 else 'MISSED'}]; a plain POST after: {probe}")
    for line in [ln for ln in lines if "client error" in ln][:8]:
        more = re.search(r" \(and \d+ more like it since the last such line\)$", line)
        say(f"  {line[:110]}{' ...' + more.group(0) if more else ''}")


# -- hoard and idle: resource exhaustion at the gateway (issue 15) ------------------------------


def raise_own_fd_limit(wanted: int) -> int:
    """This process's soft open-file limit raised toward `wanted` (up to the hard one); the result."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def daemon_nofile(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        line = next(ln for ln in f if ln.startswith("Max open files"))
    return "/".join(line.split()[3:5])


class Prober(threading.Thread):
    """POSTs on new connections, one after another, until stopped: (status, seconds) each; 0 for
    a refused, reset or unanswered one."""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.results: list[tuple[int, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            t0 = time.monotonic()
            self.results.append((post_ok(self.port, self.path), time.monotonic() - t0))
            time.sleep(0.05)

    def stop(self) -> Counter:
        self._halt.set()
        self.join(40)
        return Counter(s for s, _ in self.results)


class RSSSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak = pid, rss_kb(pid)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            with contextlib.suppress(OSError, StopIteration):
                self.peak = max(self.peak, rss_kb(self.pid))

    def stop(self) -> int:
        self._halt.set()
        self.join(5)
        return self.peak


def hoard(port: int, n: int, per_connection: int, hold: float) -> tuple[Counter, float]:
    """`n` connections each sending header lines of 8 KB until `per_connection` bytes, never the
    blank line, then waiting until `hold` seconds have passed; how they were answered (0: closed
    or reset without an answer, -1: no answer yet), and the seconds it took."""
    line = b"X-Hoard: " + b"h" * 8180 + b"\r\n"
    head = b"POST /hoard HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    socks, sent, answers = [], [], []
    t0 = time.monotonic()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        s.send(head)
        socks.append(s)
        sent.append(len(head))
        answers.append(b"")
    going = set(range(n))
    deadline = t0 + max(hold, 120)
    while going and time.monotonic() < deadline:
        for i in list(going):
            s = socks[i]
            try:
                data = s.recv(65536)
                answers[i] += data
                if not data or answers[i]:  # closed, or answered: a client stops there
                    going.discard(i)
                    continue
            except BlockingIOError:
                pass
            except OSError:
                going.discard(i)
                continue
            if sent[i] >= per_connection:
                going.discard(i)
                continue
            piece = line[:min(len(line), per_connection - sent[i])]
            if per_connection - sent[i] - len(piece) < 0:
                piece = piece[:-2] + b"\r\n"
            try:
                sent[i] += s.send(piece)
            except BlockingIOError:
                pass
            except OSError:
                going.discard(i)
    while time.monotonic() < t0 + hold:
        time.sleep(0.2)
    took = time.monotonic() - t0
    statuses: Counter = Counter()
    for i, s in enumerate(socks):  # what came by now; nothing more is waited for
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                answers[i] += chunk
        statuses[status_of(answers[i]) if answers[i] else -1] += 1
        s.close()
    return statuses, took


def fig_hoard(backend: str, quick: bool) -> None:
    n = 300 if quick else 1000
    say(f"\n## hoard: {n} connections sending headers that never finish ({load_text()})")
    raise_own_fd_limit(n + 200)
    for what, per_connection, hold in (("about 1 MB each, in 8 KB lines", 2**20, 10.0),
                                       ("31 KB each (just under the 32 KiB head cap), then held",
                                        31 * 1024, 15.0)):
        port = free_port()
        with Daemon(backend, api_yaml("hoard", port)) as d:  # each its own: RSS keeps its high-water mark
            d.wait_for("hoard", lambda a: a["status"] == "live", 120, "live")
            pid = d.pid()
            time.sleep(1.0)
            idle = rss_kb(pid)
            sampler, prober = RSSSampler(pid), Prober(port, "/hoard")
            sampler.start()
            prober.start()
            statuses, took = hoard(port, n, per_connection, hold)
            probes = prober.stop()
            peak = sampler.stop()
            time.sleep(1.0)
            say(f"{n} connections, {what}: daemon RSS {idle / 1024:.0f} MiB idle -> peak {peak / 1024:.0f} MiB "
                f"(+{(peak - idle) / 1024:.0f} MiB) [{'ok' if peak - idle < 200 * 1024 else 'MISSED'}], "
                f"{rss_kb(pid) / 1024:.0f} MiB after; in {took:.0f} s")
            say(f"  hoarders' answers: {dict(sorted(statuses.items()))} (431: head too large; 503: shed past the "
                f"budget for unfinished heads; -1: none yet); requests served meanwhile: "
                f"{dict(sorted(probes.items()))} [{'ok' if probes[200] and set(probes) == {200} else 'MISSED'}]")
            log = read_log_since(d.home, {})
        lines = [ln for ln in log.splitlines() if "request head" in ln]
        say(f"  daemon.log: {len(lines)} lines about them")
        for ln in lines[:3]:
            say(f"    {ln[:160]}")


def fig_idle(backend: str, quick: bool) -> None:
    levels = (1000,) if quick else (1000, 5000)
    say(f"\n## idle: {', '.join(map(str, levels))} idle connections ({load_text()})")
    raise_own_fd_limit(max(levels) + 200)
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for nofile in ((1024, hard), (1024, 1024)):
        port = free_port()
        with Daemon(backend, api_yaml("idle", port), nofile=nofile) as d:
            d.wait_for("idle", lambda a: a["status"] == "live", 120, "live")
            pid = d.pid()
            say(f"daemon started under RLIMIT_NOFILE {nofile[0]}/{nofile[1]}: it runs with {daemon_nofile(pid)}")
            idle_rss = rss_kb(pid)
            for n in levels:
                before = log_bytes(d.home)
                socks = []
                t0 = time.monotonic()
                for _ in range(n):
                    try:
                        socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
                    except OSError:
                        break
                time.sleep(2.0)  # taken in, and shed where they must be
                opened = len(socks)
                prober = Prober(port, "/idle")
                prober.start()
                time.sleep(3.0)
                gets = []
                for _ in range(3):
                    g0 = time.monotonic()
                    got = d.cli("get", timeout=60)
                    gets.append((got.code, time.monotonic() - g0, got.err.strip()[:100]))
                probes = prober.stop()
                closed = 0
                for s in socks:
                    s.setblocking(False)
                    try:
                        closed += s.recv(1) == b""
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed += 1
                fd_count, rss = fds(pid), rss_kb(pid)
                for s in socks:
                    s.close()
                ok = probes[200] and set(probes) == {200} and all(code == 0 for code, _, _ in gets)
                lat = sorted(t for st, t in prober.results if st == 200)
                p50 = lat[len(lat) // 2] * 1e3 if lat else 0.0
                say(f"{n} idle connections ({opened} opened in {time.monotonic() - t0:.1f} s): closed by the gateway "
                    f"{closed}; new clients {dict(sorted(probes.items()))} (p50 {p50:.1f} ms); "
                    f"`cortexd get` exits {[g[0] for g in gets]} in {max(g[1] for g in gets):.1f} s at most "
                    f"[{'ok' if ok else 'MISSED'}]; daemon fds {fd_count}, RSS {idle_rss / 1024:.0f} -> "
                    f"{rss / 1024:.0f} MiB")
                if not ok:
                    say(f"  get: {gets}")
                time.sleep(1.0)
                new = read_log_since(d.home, before)
                short = [ln for ln in new.splitlines() if "file descriptors" in ln or "EMFILE" in ln
                         or "Too many open files" in ln]
                say(f"  daemon.log: {len(short)} line(s) about descriptors" + (f": {short[0][:220]}" if short else ""))


# -- configs ----------------------------------------------------------------------------------

LOCATED = re.compile(r"^  \S[^:]*:\d+(:\d+)?: ")


def mutants(n: int, seed: int) -> list[tuple[Path, str | bytes]]:
    """`n` mutated configurations: the faults tier's mutations (hostile values, control
    characters, lines deleted, duplicated, re-indented, cut short), and some of its own
    (type swaps, duplicate keys, tabs, several documents, bytes that are not UTF-8, whole
    files of noise, huge strings)."""
    from tests.faults.test_config_faults import HOSTILE_VALUES, base_projects, mutate

    rng = random.Random(seed)
    bases = base_projects()
    out: list[tuple[Path, str | bytes]] = []
    for i in range(n):
        source, text = bases[i % len(bases)]
        kind = rng.randrange(10)
        lines = text.splitlines()
        if kind < 6:
            out.append((source, mutate(text, rng)))
            continue
        if kind == 6:  # a value of another type: a mapping, a list, a hostile value, twice over
            valued = [k for k, ln in enumerate(lines) if re.match(r"^\s*(- )?[a-z_]+: \S", ln)] or [0]
            for _ in range(rng.randrange(1, 4)):
                k = rng.choice(valued)
                key = lines[k].split(":", 1)[0]
                lines[k] = f"{key}: " + rng.choice(["{a: 1}", "[1, 2]", "[[[]]]", "''", "~", "0o777", "1_000",
                                                    "'x' " * 50, rng.choice(HOSTILE_VALUES)])
            out.append((source, "\n".join(lines) + "\n"))
        elif kind == 7:  # a key duplicated, renamed, or a tab
            k = rng.randrange(len(lines))
            change = rng.randrange(3)
            if change == 0:
                lines.insert(k, lines[k])
            elif change == 1:
                lines[k] = re.sub(r"[a-z]", lambda m: rng.choice("abcxyz_"), lines[k], count=2)
            else:
                lines[k] = "\t" + lines[k]
            out.append((source, "\n".join(lines) + "\n"))
        elif kind == 8:  # several documents, an empty one, a second copy of the same API
            out.append((source, rng.choice([text + "---\n" + text, "---\n", text + "\n" + text, "", "...\n" + text])))
        else:  # bytes: invalid UTF-8, noise, a huge string, nesting
            raw = text.encode()
            pos = rng.randrange(len(raw) + 1)
            out.append((source, rng.choice([
                raw[:pos] + rng.randbytes(rng.randrange(1, 20)) + raw[pos:],
                rng.randbytes(rng.randrange(1, 3000)),
                raw + b"  x: '" + b"y" * 2_000_000 + b"'\n",
                raw.replace(b"kind: RealtimeAPI", b"kind: " + b"[" * 5000),
                b"\xef\xbb\xbf" + raw,
                raw.decode().encode("utf-16"),
            ])))
    return out


def validate_in_process(folder: Path) -> tuple[int | str, str]:
    from cortexd import cli as cortexd_cli

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cortexd_cli.main(["validate", str(folder)])
    except BaseException:
        return "traceback", traceback.format_exc()
    return code, err.getvalue()


def judge(code, err: str) -> str:
    if code == "traceback" or "Traceback" in err:
        return "traceback"
    if code == 0:
        return "valid"
    if code != 1:
        return f"exit {code}"
    problems = err.splitlines()[1:]
    if not err.startswith("error: ") or not problems or not all(LOCATED.match(p) for p in problems):
        return "unlocated"
    return "located"


def fig_configs(total: int, sample: int, seed: int) -> None:
    say(f"\n## configs: {total} mutated cortex.yaml files through `cortexd validate` (seed {seed}; {load_text()})")
    work = Path(tempfile.mkdtemp(prefix="cxd-fb-cfg-"))
    try:
        cases = mutants(total, seed)
        verdicts: Counter = Counter()
        examples: dict[str, list[str]] = {}
        t0 = time.monotonic()
        folders = []
        for i, (source, mutant) in enumerate(cases):
            if time.monotonic() - t0 > 600:
                say(f"stopped at {i}: 600 s")
                break
            folder = work / f"m{i}"
            shutil.copytree(source, folder)
            if isinstance(mutant, bytes):
                (folder / "cortex.yaml").write_bytes(mutant)
            else:
                (folder / "cortex.yaml").write_text(mutant, encoding="utf-8", errors="surrogatepass")
            code, err = validate_in_process(folder)
            verdict = judge(code, err)
            verdicts[verdict] += 1
            if verdict not in ("valid", "located"):
                examples.setdefault(verdict, []).append(f"m{i}: {err[-600:]}")
            folders.append(folder)
        took = time.monotonic() - t0
        n = sum(verdicts.values())
        bad = n - verdicts["valid"] - verdicts["located"]
        say(f"in process: {n} in {took:.0f} s: {dict(verdicts)} [{'ok' if not bad else 'MISSED'}]")
        for verdict, lines in examples.items():
            for line in lines[:3]:
                say(f"  {verdict}: {line}")
        # a sample through the real CLI, the refused ones first
        rng = random.Random(seed)
        picked = rng.sample(folders, min(sample, len(folders)))
        cli_verdicts: Counter = Counter()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t1 = time.monotonic()
        for folder in picked:
            if time.monotonic() - t1 > 300:
                break
            try:
                p = subprocess.run([sys.executable, "-m", "cortexd", "validate", str(folder)], env=env, check=False,
                                   capture_output=True, text=True, timeout=60, cwd=str(REPO))
                verdict = judge(p.returncode, p.stderr)
            except subprocess.TimeoutExpired:
                verdict, p = "timeout (60 s)", None
            cli_verdicts[verdict] += 1
            if verdict not in ("valid", "located"):
                say(f"  CLI {verdict}: {folder.name}: {(p.stderr if p else '')[-600:]}")
        n_cli = sum(cli_verdicts.values())
        bad_cli = n_cli - cli_verdicts["valid"] - cli_verdicts["located"]
        say(f"through `python -m cortexd validate`: {n_cli} in {time.monotonic() - t1:.0f} s: {dict(cli_verdicts)} "
            f"[{'ok' if not bad_cli else 'MISSED'}]")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--backend", default="process", choices=["process", "docker"])
    ap.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated: {', '.join(FIGURES)}")
    ap.add_argument("--quick", action="store_true", help="fewer runs and requests (a smoke run)")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    chosen = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(chosen) - set(FIGURES)
    if unknown:
        ap.error(f"unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
    if args.backend == "docker":
        from cortexd.backends.docker import DockerBackend

        reason = DockerBackend.probe()
        if reason is not None:
            say(f"no Docker engine answers ({reason})")
            return 1
    q = args.quick
    say(f"# bench/faults.py --backend {args.backend} --only {','.join(chosen)}{' --quick' if q else ''} "
        f"({os.cpu_count()} cores, {load_text()})")
    figures = {
        "kill": lambda: fig_kill(args.backend, 1 if q else 3),
        "rollout": lambda: fig_rollout(args.backend),
        "scale": lambda: fig_scale(args.backend),
        "down": lambda: fig_down(args.backend),
        "fuzz": lambda: fig_fuzz(args.backend, 1000 if q else 10_000, args.seed),
        "configs": lambda: fig_configs(200 if q else 1000, 10 if q else 40, args.seed),
        "flood": lambda: fig_flood(args.backend, 2000 if q else 20_000),
        "hoard": lambda: fig_hoard(args.backend, q),
        "idle": lambda: fig_idle(args.backend, q),
    }
    failures = 0
    for name in chosen:
        try:
            figures[name]()
        except Exception as e:
            failures += 1
            say(f"{name}: could not be measured: {e}")
    say(f"\n# done ({load_text()})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
