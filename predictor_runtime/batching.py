"""Server-side batching: concurrent predictions of one model run as one batch.

`server_side_batching: {max_batch_size, batch_interval}` works like TF
Serving's batching, but inside the runtime and for onnx and tensorflow alike
(no TF Serving). Each `predict` thread hands its already converted input to
the model's `Batcher` and blocks; the batcher's thread takes the first waiting
input, collects more until `max_batch_size` inputs are waiting or
`batch_interval` has passed since the first one arrived, and calls `run` once
with all of them. `run` (given by the client: stack along the batch dimension,
run the model, split the outputs by each input's row count) returns one result
per input, in order, and each caller gets its own. When `run` raises, every
caller of that batch raises `BatchFailed` (its request gets 500).

The validation rule max_batch_size <= processes_per_replica *
threads_per_process makes sure that enough predict threads exist to fill a
batch. `stats()` (batch count, largest batch, size histogram) is shown by
GET on the endpoint, so batching can be observed from outside.

`stack` and `split` are the numpy helpers the clients use for `run`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypedDict

log = logging.getLogger("predictor_runtime")


class BatchStats(TypedDict):
    batches: int
    requests: int
    largest_batch: int
    batch_sizes: dict[str, int]  # batch size (as text: a JSON key) -> how many batches had it


class BatchFailed(Exception):
    """The batch this request was part of failed (every member gets this error)."""


class Batcher:
    """Collects inputs from many threads into batches for `run` (see the module docstring)."""

    def __init__(self, run: Callable[[list[Any]], Sequence[Any]], max_batch_size: int,
                 batch_interval: float, name: str = "model"):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._run = run
        self.max_batch_size = max_batch_size
        self.batch_interval = batch_interval
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Any, Future[Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.batches = 0
        self.requests = 0
        self.sizes: dict[int, int] = {}
        self._thread = threading.Thread(target=self._loop, name=f"batch-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> Any:
        """Run `item` as part of a batch; returns its own result (blocks the calling thread)."""
        fut: Future[Any] = Future()
        self._queue.put((item, fut))
        return fut.result()

    def close(self) -> None:
        self._queue.put(None)

    def stats(self) -> BatchStats:
        with self._lock:
            return {"batches": self.batches, "requests": self.requests,
                    "largest_batch": max(self.sizes, default=0),
                    "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}

    def _collect(self, first: tuple[Any, Future[Any]]) -> tuple[list[tuple[Any, Future[Any]]], bool]:
        batch = [first]
        deadline = time.monotonic() + self.batch_interval
        while len(batch) < self.max_batch_size:
            timeout = deadline - time.monotonic()
            try:
                got = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if got is None:
                return batch, True
            batch.append(got)
        return batch, False

    def _loop(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            if first is None:
                return
            batch, closing = self._collect(first)
            items = [item for item, _ in batch]
            try:
                results = self._run(items)
                if len(results) != len(items):
                    raise RuntimeError(f"the batch of {len(items)} inputs produced {len(results)} results")
            except Exception as e:
                log.error("error: a batch of %d requests for %s failed: %s: %s",
                          len(items), self.name, type(e).__name__, e)
                err = BatchFailed(f"the batch of {len(items)} requests this one was part of failed: "
                                  f"{type(e).__name__}: {e}")
                for _, fut in batch:
                    fut.set_exception(err)
                results = None
            with self._lock:
                self.batches += 1
                self.requests += len(items)
                self.sizes[len(items)] = self.sizes.get(len(items), 0) + 1
            if results is not None:
                for (_, fut), result in zip(batch, results):
                    fut.set_result(result)


class BatcherSet:
    """One Batcher per (model name, version), created on first use."""

    def __init__(self, max_batch_size: int, batch_interval: float):
        self.max_batch_size = max_batch_size
        self.batch_interval = batch_interval
        self._batchers: dict[Any, Batcher] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, run: Callable[[list[Any]], Sequence[Any]]) -> Batcher:
        b = self._batchers.get(key)
        if b is None:
            with self._lock:
                b = self._batchers.get(key)
                if b is None:
                    name = f"{key[0]} version {key[1]}" if isinstance(key, tuple) else str(key)
                    b = self._batchers[key] = Batcher(run, self.max_batch_size, self.batch_interval, name)
        return b

    def stats(self) -> dict[str, Any]:
        with self._lock:
            batchers = list(self._batchers.values())
        total: BatchStats = {"batches": 0, "requests": 0, "largest_batch": 0, "batch_sizes": {}}
        for b in batchers:
            s = b.stats()
            total["batches"] += s["batches"]
            total["requests"] += s["requests"]
            total["largest_batch"] = max(total["largest_batch"], s["largest_batch"])
            for k, v in s["batch_sizes"].items():
                total["batch_sizes"][k] = total["batch_sizes"].get(k, 0) + v
        total["batch_sizes"] = dict(sorted(total["batch_sizes"].items(), key=lambda kv: int(kv[0])))
        return {"max_batch_size": self.max_batch_size, "batch_interval": self.batch_interval, **total}


# ---- numpy helpers for the clients' `run` ---------------------------------------------

def rows(inputs: dict[str, Any]) -> int:
    """The batch dimension of one converted input (all its arrays share it)."""
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if getattr(first, "ndim", 0) else 1


def stack(items: list[dict[str, Any]]) -> tuple[dict[str, Any], list[int]]:
    """Concatenate each named input along axis 0; also returns each item's row count."""
    import numpy as np

    counts = [rows(item) for item in items]
    names = list(items[0])
    for i, item in enumerate(items[1:], 1):
        if list(item) != names:
            raise ValueError(f"batched inputs differ: input {i} has {sorted(item)}, input 0 has {sorted(names)}")
    return {n: np.concatenate([item[n] for item in items], axis=0) for n in names}, counts


def split(output: Any, counts: list[int]) -> list[Any]:
    """Slice one batched output back into per-item pieces (outputs without the batch dim are shared)."""
    total = sum(counts)
    length = output.shape[0] if getattr(output, "ndim", 0) else (len(output) if isinstance(output, list) else None)
    if length != total:
        return [output] * len(counts)
    pieces, start = [], 0
    for n in counts:
        pieces.append(output[start:start + n])
        start += n
    return pieces
