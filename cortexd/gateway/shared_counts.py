"""In-flight counts shared by gateway workers (issue 20.4): one table in shared memory.

With `gateway_workers` N > 1 the daemon's gateway and N - 1 worker processes serve the same ports
(SO_REUSEPORT; cortexd/gateway/workers.py). Least-in-flight routing, `max_replica_concurrency` and
the autoscaler must see every worker's requests, not one worker's, so the counts live in a table
of int64 cells in a memfd every worker maps:

    slot (an API, or one replica of an API)  x  column (a worker)

Each cell is written by its own worker only (no locks: an aligned 8-byte store is one store), and
a reader adds a row. The daemon hands out the slots (`Slots`) and sends each worker the slot of
every API and replica it configures; a worker's routes and replica targets (SharedRoute,
SharedTarget) keep their own count as before (the connection pools, draining and retiring are the
worker's own business) and publish it to their cell on every change; `load` is the row's sum, what
routing and admission read.

How exact it stays: a replica's row sum is read, compared with `max_replica_concurrency` and then
raised by one, with no lock across workers; N workers admitting at the same instant can hold a
replica at up to max + N - 1 for that instant. Autoscaling and draining read the row sums: exact.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Hashable
from typing import Any

from cortexd.gateway.routes import APIRoute, ReplicaAddress, ReplicaTarget

CELL = 8  # bytes: an int64


class CountTable:
    """The shared table: `slots` rows of `workers` int64 cells, in a memfd (fd passed to workers)."""

    def __init__(self, slots: int, workers: int, fd: int | None = None):
        self.slots = slots
        self.workers = workers
        size = slots * workers * CELL
        if fd is None:
            fd = os.memfd_create("cortexd-gateway-counts", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        self.fd = fd
        self._map = mmap.mmap(fd, size)
        self.cells = memoryview(self._map).cast("q")

    def row_sum(self, slot: int) -> int:
        start = slot * self.workers
        return sum(self.cells[start:start + self.workers])

    def clear_column(self, worker: int) -> None:
        """A worker is gone: its requests with it (its cells back to 0)."""
        cells, n = self.cells, self.workers
        for slot in range(self.slots):
            cells[slot * n + worker] = 0

    def close(self) -> None:
        self.cells.release()
        self._map.close()
        os.close(self.fd)


class Slots:
    """The daemon's slot numbers: one per API name and one per (API, replica id), reused once free."""

    def __init__(self, size: int):
        self.size = size
        self.of: dict[Hashable, int] = {}
        self._free = list(range(size - 1, -1, -1))

    def slot(self, key: Hashable) -> int:
        slot = self.of.get(key)
        if slot is None:
            if not self._free:
                raise RuntimeError(f"the gateway workers' count table is full ({self.size} slots)")
            slot = self.of[key] = self._free.pop()
        return slot

    def release(self, key: Hashable) -> None:
        slot = self.of.pop(key, None)
        if slot is not None:
            self._free.append(slot)


class WorkerCounts:
    """One worker's side of the table: its column, and the slots the daemon assigned it."""

    def __init__(self, table: CountTable, worker: int, slots: dict[Hashable, int] | None = None):
        self.table = table
        self.worker = worker
        self.slots: dict[Hashable, int] = {} if slots is None else slots  # the daemon's, or sent by it

    def cell(self, key: Hashable) -> int:
        return self.slots[key] * self.table.workers + self.worker

    def new_route(self, name: str, endpoint: str, port: int, max_replica_concurrency: int) -> APIRoute:
        return SharedRoute(self, name, endpoint, port, max_replica_concurrency)

    def new_target(self, api: str, address: ReplicaAddress, pool: object) -> ReplicaTarget:
        return SharedTarget(self, api, address, pool)


class PublishedCount:
    """`in_flight` of a worker's route or replica target: its own count, written to its cell too."""

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj._local

    def __set__(self, obj: Any, value: int) -> None:
        obj._local = value
        obj._cells[obj._cell] = value


class SharedRoute(APIRoute):
    """An APIRoute whose API-wide in-flight count is published to its cell."""

    __slots__ = ("_cell", "_cells", "_local")

    def __init__(self, counts: WorkerCounts, name: str, endpoint: str, port: int, max_replica_concurrency: int):
        self._cells = counts.table.cells
        self._cell = counts.cell(("api", name))
        self._local = 0
        super().__init__(name, endpoint, port, max_replica_concurrency)

    # this worker's requests of the API (its own retiring goes by them)
    in_flight = PublishedCount()


class SharedTarget(ReplicaTarget):
    """A ReplicaTarget whose in-flight count is published to its cell; `load` sums every worker's."""

    def __init__(self, counts: WorkerCounts, api: str, address: ReplicaAddress, pool: object):
        table = counts.table
        self._cells = table.cells
        self._cell = cell = counts.cell(("replica", api, address.replica_id))
        start = cell - cell % table.workers
        self._row = slice(start, start + table.workers)
        self._local = 0
        super().__init__(address.replica_id, address.host, address.port, pool=pool, socket=address.socket)

    # this worker's requests on the replica (its pool closes, once removed, at 0)
    in_flight = PublishedCount()

    @property
    def load(self) -> int:
        """Every worker's requests on the replica: what routing and admission compare."""
        return sum(self._cells[self._row])

