"""The live status view: rich's Live refreshing ui.view.status_view about once a second.

Two drivers of the same view:
- `run_live(fetch, console)`: blocking, for `cortexd status` (fetch = GET /status on
  the control socket, read back with Status.from_json); Ctrl-C (KeyboardInterrupt) reaches the caller, which exits 0.
- `live_task(snapshot, console)`: a coroutine for foreground `cortexd up`, where the
  daemon runs in the same event loop: the snapshot is taken on the loop (it reads
  daemon state), the rendering happens in a worker thread so the gateway is not
  held up while rich lays out tables.

`print_once` is the plain-text fallback when stdout is not a terminal: one frame,
no cursor movement, no colour (rich drops styles on non-terminals). A view taller
than the terminal is cut at the bottom (the oldest events go first), never scrolled:
a Live region that scrolls cannot be redrawn in place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live

from cortexd.status import Status
from cortexd.ui.view import status_view

log = logging.getLogger("cortexd")


class CLIConsole(Console):
    """A Console for the CLI: a closed stdout (`cortexd status | head`) raises BrokenPipeError,
    which the CLI ends quietly like every command's, not rich's own SystemExit(1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def print_once(snap: Status, console: Console, now: float | None = None) -> None:
    console.print(status_view(snap, time.time() if now is None else now))


def run_live(fetch: Callable[[], Status], console: Console, *, interval: float = 1.0,
             clock: Callable[[], float] = time.time) -> None:
    """Refresh until interrupted; exceptions from `fetch` (daemon gone) end the view and propagate."""
    with Live(console=console, auto_refresh=False, redirect_stdout=False,
              redirect_stderr=False, vertical_overflow="ellipsis") as live:
        while True:
            snap = fetch()
            live.update(status_view(snap, clock()), refresh=True)
            time.sleep(interval)


async def live_task(snapshot: Callable[[], Status], console: Console, *, interval: float = 1.0,
                    clock: Callable[[], float] = time.time) -> None:
    """Refresh until cancelled (the foreground daemon's shutdown cancels it)."""
    live = Live(console=console, auto_refresh=False, redirect_stdout=False,
                redirect_stderr=False, vertical_overflow="ellipsis")
    live.start()
    try:
        while True:
            try:
                view = status_view(snapshot(), clock())
                await asyncio.to_thread(live.update, view, refresh=True)
            except Exception:  # a frame that fails must not end the view (or the daemon)
                log.exception("live view refresh failed")
            await asyncio.sleep(interval)
    finally:
        live.stop()
