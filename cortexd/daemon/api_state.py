"""What the reconciler keeps that no backend can report: each API's state and each replica's record.

An APIState is the daemon's memory of one API: its desired count, what it shows (status,
reason and the kind of its failure), the failures in a row and the restart backoff, what
its replicas wait for. A ReplicaRecord is the daemon's memory of one replica: when it was
launched, became ready, started draining; whether it is unhealthy or out of rotation.
The reconciler (reconciler.py) changes them on every pass; the transitions that concern
an API's failures live here, beside the fields they change, and take their numbers from
core/api_status.py. `facts()` hands both to the status snapshot (cortexd/status.py) as
plain values: the snapshot never sees these records.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cortexd.core.api_status import ERROR_PREFIX, Failure, restart_delay, shows_error
from cortexd.spec.model import APISpec
from cortexd.status import APIFacts, ReplicaFacts

if TYPE_CHECKING:
    from cortexd.backends.base import ReplicaInfo

LOG_LINES_IN_ERROR = 15  # the last lines of a failed replica's output its API's reason shows


@dataclass
class ReplicaRecord:
    """Daemon-side facts about one replica that no backend can report."""

    replica_id: str
    spec_hash: str
    launched_at: float  # monotonic
    ready_at: float | None = None
    draining_since: float | None = None
    stopping: bool = False
    unhealthy: str | None = None  # why it must be replaced (hung, failing liveness checks)
    replacing: bool = False  # its replacement was set in motion
    out_of_rotation: str | None = None  # why the gateway ejected it, until `ejected_until`
    ejected_until: float | None = None
    liveness_failures: int = 0  # /healthz checks failed in a row since it was ready
    next_liveness_at: float = 0.0
    checking: bool = False  # a liveness check is running

    @property
    def state(self) -> str:
        """starting | ready | draining | stopping, as the status snapshot shows it."""
        if self.stopping:
            return "stopping"
        if self.draining_since is not None:
            return "draining"
        return "ready" if self.ready_at is not None else "starting"

    def routable(self) -> bool:
        """Whether requests may go to it: ready, and not draining."""
        return self.ready_at is not None and self.draining_since is None

    def facts(self, info: ReplicaInfo) -> ReplicaFacts:
        """The replica as the status snapshot shows it: what the backend observed (`info`) and this record."""
        return ReplicaFacts(info.replica_id, info.api, info.spec_hash, f"{info.host}:{info.port}", info.started_at,
                            tuple(info.gpu_ids), info.extra, self.state, self.unhealthy, self.out_of_rotation,
                            self.ejected_until)


@dataclass
class APIState:
    spec: APISpec
    desired: int
    deployed_at: float  # monotonic; the autoscaler's stabilization starts here
    status: str = "updating"  # updating | live | error
    reason: str | None = None
    failure: Failure | None = None  # the kind of the failure `reason` tells (None: it tells none)
    consecutive_crashes: int = 0
    restarts: int = 0
    next_start_at: float = 0.0
    image_ready_for: str | None = None  # spec hash whose image is built
    image_task: asyncio.Task[None] | None = None
    pending_reason: str | None = None  # why desired replicas are not started (GPU, backoff...)
    pending: Failure | None = None  # the kind of `pending_reason`, when it has one (NO_GPU)
    failing: bool = False  # in error until a replica of the current spec becomes ready
    last_decision: str | None = None  # autoscaler, in words

    def roll_to(self, spec: APISpec, now: float) -> None:
        """A new version: it rolls from `now`, its desired count kept within the new bounds, and
        the old version's failures forgotten."""
        self.spec = spec
        self.desired = max(spec.autoscaling.min_replicas, min(self.desired, spec.autoscaling.max_replicas))
        self.deployed_at = now
        self.status, self.reason, self.failure, self.failing = "updating", None, None, False
        self.consecutive_crashes, self.next_start_at = 0, 0.0

    def show(self, status: str, reason: str | None = None, failure: Failure | None = None) -> None:
        """What the API shows from now: its status, the reason, and the kind of the failure it tells."""
        self.status, self.reason, self.failure = status, reason, failure

    def wait(self, reason: str | None, kind: Failure | None = None) -> None:
        """Why requested replicas are not started now (None: nothing holds them), and its kind."""
        self.pending_reason, self.pending = reason, kind

    def recovered(self) -> None:
        """A replica of the current version became ready: the failures in a row end, and so does `error`."""
        self.consecutive_crashes = 0
        if self.failing:
            self.failing = False
            self.show("updating")

    def cannot_start(self, kind: Failure, message: str) -> bool:
        """No replica can start until the host changes (no GPU on it): `error` at once, without a
        restart backoff (nothing was started; the next pass asks again, and a replica of this
        version that becomes ready ends it). Returns whether this is news (an event to add)."""
        news = not (self.failing and self.failure is kind and self.reason == message)
        self.failing = True
        self.show("error", message, kind)
        return news

    def record_failure(self, kind: Failure, message: str, now: float, logs: list[str], *, backoff: tuple[float, float],
                       error_after: int, at_once: bool = False) -> float:
        """Count a failure of `kind` (`message` says it for `cortexd get`): the next start waits out the
        backoff (`backoff`: initial and maximum seconds), returned; `error_after` failures in a row,
        or one that fails again as it is (out of memory, `at_once`), show `error` with the last log lines."""
        self.consecutive_crashes += 1
        n = self.consecutive_crashes
        delay = restart_delay(n, *backoff)
        self.next_start_at = now + delay
        if shows_error(n, error_after, oom=kind is Failure.OOM, at_once=at_once):
            self.failing = True
            tail = ("\n" + "\n".join(logs[-LOG_LINES_IN_ERROR:])) if logs else ""
            self.show("error", f"{ERROR_PREFIX.get(kind, '')}{message} ({n} failure(s) in a row; "
                               f"retrying in {delay:.0f}s){tail}", kind)
        return delay

    def facts(self) -> APIFacts:
        """The API as the status snapshot shows it."""
        return APIFacts(self.spec, self.desired, self.status, self.reason, self.pending_reason, self.restarts,
                        self.last_decision, self.failure, self.pending)


@dataclass
class RemovedAPI:
    """An API removed from the config: its replicas drain, then it is forgotten."""

    name: str
    since: float
