"""PredictThreads: the threads that run a worker's sync user code (predictor_runtime/predict_threads.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from predictor_runtime.predict_threads import PredictThreads


@pytest.fixture
def one_thread():
    threads = PredictThreads(1)
    yield threads
    threads.shutdown()


def test_init_and_predict_run_on_the_same_thread_with_one_thread(one_thread):
    # Cortex's rule: with threads_per_process 1, handles made in __init__ are used on their thread
    init_thread = one_thread.call(threading.get_ident)

    async def predict_thread() -> int:
        return await one_thread.run(threading.get_ident)

    assert asyncio.run(predict_thread()) == init_thread != threading.get_ident()


def test_results_and_exceptions_reach_the_awaiting_side(one_thread):
    def fails(text: str) -> None:
        raise ValueError(text)

    async def both() -> tuple[int, str]:
        result = await one_thread.run(pow, 2, 10)
        with pytest.raises(ValueError) as e:
            await one_thread.run(fails, "bad input")
        return result, str(e.value)

    assert asyncio.run(both()) == (1024, "bad input")
    with pytest.raises(KeyError):
        one_thread.call({}.__getitem__, "missing")


def test_calls_run_concurrently_up_to_the_thread_count():
    threads = PredictThreads(3)
    barrier = threading.Barrier(3, timeout=10)  # passes only when three calls run at once

    async def three() -> list[int]:
        return list(await asyncio.gather(*(threads.run(barrier.wait) for _ in range(3))))

    try:
        assert sorted(asyncio.run(three())) == [0, 1, 2]
    finally:
        threads.shutdown()


def test_a_cancelled_call_leaves_the_thread_serving(one_thread):
    release = threading.Event()

    async def cancel_then_call() -> str:
        blocked = one_thread.run(release.wait, 10)
        blocked.cancel()  # the request went away while its call ran
        release.set()
        return await one_thread.run(str, "still serving")

    assert asyncio.run(cancel_then_call()) == "still serving"


def test_shutdown_cancels_waiting_calls_and_the_threads_exit():
    threads = PredictThreads(1)
    started, release = threading.Event(), threading.Event()

    def busy() -> bool:
        started.set()
        return release.wait(10)

    async def run() -> tuple[bool, bool]:
        running = threads.run(busy)
        waiting = threads.run(str, "never runs")
        assert started.wait(10)
        threads.shutdown()
        release.set()
        return await running, waiting.cancelled()

    assert asyncio.run(run()) == (True, True)
    for thread in threads._threads:
        thread.join(10)
        assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="shut down"):
        asyncio.run(_call_after_shutdown(threads))


async def _call_after_shutdown(threads: PredictThreads) -> None:
    await threads.run(str, "too late")


def test_busy_says_since_when_each_thread_runs_its_call(one_thread):
    # the health rule (server.py's stuck_reason) reads it: a thread past the request timeout
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        started.set()
        release.wait(10)

    async def run() -> list[float]:
        call = one_thread.run(busy)
        assert started.wait(10)
        seen = list(one_thread.busy.values())
        release.set()
        await call
        return seen

    assert len(asyncio.run(run())) == 1
    assert one_thread.busy == {}


def test_a_call_cancelled_before_it_started_never_runs(one_thread):
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def busy() -> None:
        started.set()
        release.wait(10)

    async def run() -> None:
        first = one_thread.run(busy)
        assert started.wait(10)
        queued = one_thread.run(ran.append, "cancelled call")
        queued.cancel()
        release.set()
        await first
        await one_thread.run(ran.append, "next call")

    asyncio.run(run())
    assert ran == ["next call"]
