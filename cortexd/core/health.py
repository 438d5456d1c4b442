"""Passive health of replicas: when the gateway takes one out of rotation, and when it is replaced.

A pure decision (no asyncio, no I/O, no clock reads): the gateway keeps one `ReplicaHealth`
value per routable replica (cortexd/gateway/routes.py ReplicaTarget), passes it here with `now`
after every request that failed on the way to or from the replica, and acts on the value it
gets back (cortexd/gateway/passive_health.py; an answer resets the streaks: request_path.py);
the reconciler (cortexd/daemon/reconciler.py) is told when a replica turns unhealthy and
replaces it.

Kinds of failure and their outcomes (Envoy's outlier detection is the model):

- Gateway failures (the connection could not be opened, or was closed or reset before the
  replica read the request): `eject_after_failures` in a row eject the replica from rotation
  for a while. The first ejection lasts `ejection_time`, each further one that much longer,
  up to `max_ejection_time`; afterwards the replica is tried again. The last replica in
  rotation is not ejected for these (Envoy's panic routing): with nowhere else to go, trying
  it is no worse than refusing, and the reconciler replaces a replica that died.
- A dropped request (the replica had the request and closed the connection without a
  complete answer): the runtime never does that while it lives, so the replica is taken out
  of rotation at once, on the same terms. This matters when a replica is killed: its
  connections fail one by one as the gateway notices, and a request written on one in the
  meantime cannot be retried (nothing proves the replica did not read it); out of rotation
  at the first, no new request goes there.
- Upstream timeouts (the replica took the request and never answered): a replica whose
  `unhealthy_after_timeouts` requests in a row timed out is hung (its /healthz, answered by
  the runtime's event loop, may well stay 200). It leaves rotation for good, even if it is
  the last one (requests then wait for its replacement instead of hanging), and is replaced.

Any answer from the replica, whatever its status, resets both streaks: a predictor raising
an exception is the predictor's business, not a sign that the replica is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class HealthPolicy:
    eject_after_failures: int = 3  # gateway failures in a row that eject a replica
    ejection_time: float = 10.0  # seconds out of rotation for the first ejection
    max_ejection_time: float = 300.0
    unhealthy_after_timeouts: int = 3  # upstream timeouts in a row that make a replica hung


@dataclass(frozen=True)
class ReplicaHealth:
    failures: int = 0  # gateway failures in a row
    timeouts: int = 0  # upstream timeouts in a row
    streak: int = 0  # failures + timeouts: one test on the request path
    ejections: int = 0  # times ejected so far; each ejection lasts longer
    ejected_until: float | None = None  # out of rotation until then
    unhealthy: str | None = None  # why the replica must be replaced (it never returns)
    reason: str | None = None  # why it is out of rotation, in words


HEALTHY = ReplicaHealth()

FAILURE = "failure"  # connect failure, or closed/reset before the replica read the request
DROPPED = "dropped"  # the replica had the request and closed without a complete answer
TIMEOUT = "timeout"  # no answer within the upstream timeout


def after_answer(health: ReplicaHealth) -> ReplicaHealth:
    """The replica answered: the streaks end (how often it was ejected is remembered)."""
    if not health.streak:
        return health
    return replace(health, failures=0, timeouts=0, streak=0)


def after_failure(health: ReplicaHealth, kind: str, now: float, policy: HealthPolicy, *,
                  others_in_rotation: int) -> ReplicaHealth:
    """The health after one more failure of `kind` (FAILURE, DROPPED or TIMEOUT) at `now`.

    `others_in_rotation`: how many other replicas of the API would still take requests;
    with none, gateway failures do not eject (timeouts still do).
    """
    if health.unhealthy is not None:
        return health
    if kind == TIMEOUT:
        timeouts = health.timeouts + 1
        health = replace(health, timeouts=timeouts, streak=health.failures + timeouts)
        if timeouts >= policy.unhealthy_after_timeouts:
            why = f"{timeouts} requests in a row timed out"
            return replace(health, unhealthy=why, reason=why, ejected_until=None)
        return health
    failures = health.failures + 1
    health = replace(health, failures=failures, streak=failures + health.timeouts)
    if kind == DROPPED:
        why = "it dropped a request without answering"
    elif failures >= policy.eject_after_failures:
        why = f"{failures} connection failures in a row"
    else:
        return health
    if others_in_rotation > 0 and not is_ejected(health, now):
        ejections = health.ejections + 1
        seconds = min(policy.ejection_time * ejections, policy.max_ejection_time)
        return replace(health, ejections=ejections, ejected_until=now + seconds,
                       reason=f"{why}; out of rotation for {seconds:g}s")
    return health


def is_ejected(health: ReplicaHealth, now: float) -> bool:
    """Out of rotation at `now`: hung (for good) or ejected (until its time is up)."""
    if health.unhealthy is not None:
        return True
    return health.ejected_until is not None and now < health.ejected_until


def readmitted(health: ReplicaHealth) -> ReplicaHealth:
    """Back in rotation after an ejection: on probation, its failure streak starts over."""
    if health.unhealthy is not None:
        return health
    return replace(health, failures=0, timeouts=0, streak=0, ejected_until=None, reason=None)
