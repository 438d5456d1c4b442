"""Closed-loop keep-alive load on loopback, for the tests and benchmarks that need requests in
flight while something happens (a rollout, a kill, `cortexd down`, a scale-up).

`n` threads each POST on one kept-alive connection as fast as answers come, until stopped or
`limit` seconds. Every request sent is one Record: when it was sent and answered, its outcome
(the status as text, "503-close" when a non-200 answer said Connection: close, or "cut": sent and
no complete answer, a reset or a closed connection) and the JSON body of a 200. A connection that
is refused sent nothing; with `stop_when_refused` the thread ends there (the daemon is going down).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from http.client import HTTPConnection, HTTPException
from typing import Any, NamedTuple, Self


class Record(NamedTuple):
    sent: float
    answered: float
    outcome: str  # "200", "503", "503-close", "cut"
    body: Any  # the parsed JSON of a 200 answer, else None


class KeepAliveClients:
    def __init__(self, port: int, path: str, n: int = 8, payload: bytes | dict = b"{}", *,
                 limit: float = 60.0, stop_when_refused: bool = False, timeout: float = 30.0):
        self.port, self.path, self.limit, self.timeout = port, path, limit, timeout
        self.payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.stop_when_refused = stop_when_refused
        self.records: list[Record] = []
        self.cuts: list[str] = []  # what the cut requests raised
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self) -> None:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        deadline = time.monotonic() + self.limit
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if conn.sock is None:
                    try:
                        conn.connect()
                    except OSError:
                        if self.stop_when_refused:
                            return
                        time.sleep(0.05)
                        continue
                self._one(conn)
        finally:
            conn.close()

    def _one(self, conn: HTTPConnection) -> None:
        sent = time.monotonic()
        try:
            conn.request("POST", self.path, body=self.payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, HTTPException) as e:
            with self._lock:
                self.records.append(Record(sent, time.monotonic(), "cut", None))
                self.cuts.append(repr(e)[:200])
            conn.close()
            return
        closing = (resp.getheader("Connection") or "").lower() == "close"
        body = None
        if resp.status == 200:
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
        outcome = f"{resp.status}-close" if closing and resp.status != 200 else str(resp.status)
        with self._lock:
            self.records.append(Record(sent, time.monotonic(), outcome, body))
        if closing:
            conn.close()

    # -- what happened --------------------------------------------------------------------------
    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def outcomes(self) -> Counter:
        return Counter(r.outcome for r in self.snapshot())

    def served(self) -> int:
        return sum(r.outcome == "200" for r in self.snapshot())

    def bodies(self) -> list[tuple[float, Any]]:
        """(answered, body) of every 200, in order."""
        return [(r.answered, r.body) for r in self.snapshot() if r.outcome == "200"]

    def latest(self) -> Any:
        """The body of the last 200 (None before one)."""
        bodies = self.bodies()
        return bodies[-1][1] if bodies else None

    def failures(self) -> list[Record]:
        return [r for r in self.snapshot() if r.outcome != "200"]

    def wait_served(self, count: int, timeout: float = 30) -> None:
        """Until `count` requests got a 200 in all (a count, not a time: a loaded machine is slow)."""
        deadline = time.monotonic() + timeout
        while self.served() < count:
            assert time.monotonic() < deadline, f"only {self.served()} served in {timeout} s: {self.outcomes()}"
            time.sleep(0.02)

    def wait_ended(self, timeout: float = 30) -> None:
        """Until every client stopped by itself (refused: the gateway no longer accepts)."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = sum(t.is_alive() for t in self._threads)
        assert not alive, f"{alive} client(s) still sending {timeout} s later: {self.outcomes()}"

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
