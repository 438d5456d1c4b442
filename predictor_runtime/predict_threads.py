"""The threads that run a worker's sync user code: `threads_per_process` of them.

server.py hands each sync `predict` / `post_predict` call here and awaits its result
on the event loop; the predictor's `__init__` runs here too, before the loop starts
(`call`), so with one thread, handles made in `__init__` are used on the thread that
made them, as under Cortex.

Why not `loop.run_in_executor(ThreadPoolExecutor)`: per call that builds a
concurrent Future (with its Condition), chains it to an asyncio Future through two
callbacks, and takes the executor's semaphore, which measured as about a third of
the replica's own CPU per request for a no-op predictor (bench/runtime.py). Here a
call is one tuple on a SimpleQueue and one `call_soon_threadsafe` back with the
result. The threads start with the pool (all of them, so the first requests do not
pay for a thread start) and are not daemons: an idle one exits at `shutdown`, and
server.py leaves with `os._exit` when a call outlives the drain deadline.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_STOP = None  # a worker's signal to exit


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():  # the request went away while its call ran
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _resolve_concurrent(future: Future[Any], ok: bool, value: Any) -> None:
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _now(resolve: Callable[..., None], *args: Any) -> None:
    resolve(*args)


class PredictThreads:
    """`size` threads taking calls from one queue, in order."""

    def __init__(self, size: int, name: str = "predict"):
        # (fn, args, future, how to answer, resolve): the answer is `resolve(future, ok, value)`
        # called through `how`: at once, or on the future's loop (call_soon_threadsafe)
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Any,
                                             Callable[..., Any], Callable[..., None]] | None] = (
            queue.SimpleQueue())
        self._closed = False
        # thread index -> monotonic start of the call it runs (the health rule's input)
        self.busy: dict[int, float] = {}
        self._threads = [threading.Thread(target=self._work, args=(i,), name=f"{name}_{i}")
                         for i in range(size)]
        for thread in self._threads:
            thread.start()

    def _work(self, index: int) -> None:
        get = self._queue.get
        busy = self.busy
        monotonic = time.monotonic
        while True:
            item = get()
            if item is _STOP:
                return
            fn, args, future, how, resolve = item
            del item
            if future.cancelled():  # its request was cancelled while the call waited: skip it, as
                continue  # an executor does (reading the flag from this thread is a plain read)
            busy[index] = monotonic()
            try:
                outcome = (True, fn(*args))
            except BaseException as e:  # handed to the awaiting side, as executors do
                outcome = (False, e)
            del busy[index]
            try:
                how(resolve, future, *outcome)
            except RuntimeError:  # the loop closed (a call that outlived the drain deadline)
                pass
            del fn, args, future, outcome  # no reference to the call outlives it

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) on a pool thread and wait for it here (start-up, before the loop runs)."""
        future: Future[Any] = Future()
        self._queue.put((fn, args, future, _now, _resolve_concurrent))
        return future.result()

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """fn(*args) on a pool thread; await the returned future on the running loop."""
        if self._closed:
            raise RuntimeError("the predict threads are shut down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((fn, args, future, loop.call_soon_threadsafe, _resolve))
        return future

    def shutdown(self) -> None:
        """Cancel the calls not started yet; each thread exits once its current call returns."""
        self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                item[2].cancel()
        for _ in self._threads:
            self._queue.put(_STOP)
