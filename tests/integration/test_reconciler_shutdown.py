"""The reconciler's loop ends when cancelled, even when a wake-up arrives at the same moment.

On the real event loop clock (it waits for the loop to block): integration tier."""

from __future__ import annotations

import asyncio

import pytest

from cortexd.daemon.events import EventLog
from cortexd.daemon.reconciler import Reconciler
from cortexd.settings import DaemonSettings
from tests.unit.reconciler_fakes import FakeBackend, FakeGateway


async def test_a_cancel_that_meets_a_wake_up_ends_the_loop():
    # a reload applied during shutdown wakes the loop just as shutdown cancels it
    rec = Reconciler(FakeBackend(), FakeGateway(), DaemonSettings(reconcile_interval=30.0),
                     EventLog(lambda: 0.0))
    for _ in range(20):
        task = asyncio.ensure_future(rec.run())
        await asyncio.sleep(0.01)  # the loop waits for a wake-up
        rec.wake()
        await asyncio.sleep(0)  # the wake-up is delivered to the waiter...
        task.cancel()  # ...as the cancellation arrives
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
