"""The web console's real handlers (cortexd/console/, on daemon/control.py's admin port) in front
of a fake daemon: a status snapshot of N APIs, and a log that says what a test gives it.

`FakeConsole` runs them on 127.0.0.1 in a thread of its own (its own event loop), so a browser
test or a plain HTTP test can open it; the sampler is driven by the test (`sample()`), never by
a clock. For what a page costs with many APIs without starting one replica per API.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from cortexd.console.server import Console
from cortexd.daemon.control import serve_metrics
from cortexd.daemon.events import EventLog
from cortexd.daemon.sampler import Sampler
from cortexd.errors import UnknownAPI
from cortexd.status import Status
from tests.real_daemon import free_port
from tests.unit.snapshots import NOW, api, snapshot

TOKEN = "test-token"


class FakeDaemon:
    guarded_pid = None

    def __init__(self, n: int, log_lines: tuple[str, ...] = (), batch_apis: tuple[dict, ...] = (),
                 splitters: tuple[dict, ...] = ()):
        self.events = EventLog(lambda: NOW)
        self.names = [f"api-{i:02d}" for i in range(n)]
        self.snap = Status.from_json({**snapshot([api(name) for name in self.names]), "batch_apis": list(batch_apis),
                                      "splitters": list(splitters)})
        self.log_lines = log_lines
        self.streams_ended = 0  # log streams closed (by the console: a tab went away)

    def status(self) -> Status:
        return self.snap

    async def counted(self) -> None:
        pass

    def replica_of_peer(self, pid: int, uid: int) -> str | None:
        return None

    async def replica_models(self, name: str) -> dict[str, dict]:
        return {}

    def log_sources(self, name: str, previous: bool = False) -> list[tuple[str, str | None]]:
        if name not in self.names:
            raise UnknownAPI(f"no api named {name!r}")
        return [(f"{name}-r0", None)]

    async def stream_logs(self, name: str, sources, tail, follow, since=None) -> AsyncIterator[str]:
        try:
            for line in self.log_lines:
                yield line
            while follow:  # nothing new, for as long as it is followed
                await asyncio.sleep(3600)
        finally:
            self.streams_ended += 1

    def spec_of(self, name: str):
        return None

    def route_metrics(self) -> list:
        return []

    def split_metrics(self) -> list:
        return []

    def unrouted_requests(self) -> int:
        return 0


class FakeConsole:
    """The console of a FakeDaemon at http://127.0.0.1:{port}/, until close()."""

    def __init__(self, n: int, log_lines: tuple[str, ...] = (), batch_apis: tuple[dict, ...] = (),
                 splitters: tuple[dict, ...] = ()):
        self.daemon = FakeDaemon(n, log_lines, batch_apis, splitters)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.sampler: Sampler = self._call(self._make_sampler())
        self.runner = self._call(serve_metrics(self.daemon, self.port, "127.0.0.1",
                                               Console(self.daemon, self.sampler, TOKEN)))
        assert self.runner is not None, f"port {self.port} is taken"
        self.url = f"http://127.0.0.1:{self.port}"

    async def _make_sampler(self) -> Sampler:
        return Sampler(self.daemon.status, self.daemon.route_metrics)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def sample(self) -> None:
        """One sample, as the daemon's task takes once a second."""
        self.loop.call_soon_threadsafe(self.sampler.sample)

    def close(self) -> None:
        self._call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
