"""Rollout planning: which replicas to start and which to drain, as a value.

This is the pure core of daemon/reconciler.py (docs/architecture.md, "A config edit,
end to end", step 4).
Each reconcile pass re-reads the backend, describes every live replica of an
API as an `ObservedReplica`, and asks `plan` what to do next; the reconciler
starts `Plan.start` replicas of the desired spec and drains `Plan.drain`
(removed from routing at once, stopped when their in-flight requests reach 0).
The reconciler calls again after anything changes, so a plan is one step, not
the whole rollout.

One function covers plain scaling and rolling updates, alone or at once, with Kubernetes Deployment arithmetic for
`update_strategy`: percentages are of the desired count, surge rounds up,
unavailable rounds down, and both resolving to 0 makes unavailable 1. A plan
never starts a replica that would take the non-draining total above
desired + max_surge, and never drains a ready replica that would take the
ready count below desired - max_unavailable. Choices are deterministic
(ordered by started_at, then replica_id), so equal inputs give equal plans.

A replica that crashed or did not become ready in time never reaches the plan:
the reconciler stops it, counts the failure (core/api_status.py: restart delay,
when the API shows `error`) and the plan starts its replacement as a missing one.
update_strategy values are parsed by spec/units.py (`parse_surge`), the one parser
of "25%".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cortexd.spec.units import Percent, parse_surge


@dataclass(frozen=True)
class ObservedReplica:
    replica_id: str
    spec_hash: str
    ready: bool  # passed its readiness probe; can take requests
    draining: bool  # already leaving: out of routing, stopping once idle
    started_at: float


@dataclass(frozen=True)
class Plan:
    start: int  # new replicas of the desired spec to start
    drain: tuple[str, ...]  # replica ids to take out of routing and stop once idle
    max_surge: int  # update_strategy resolved against the desired count
    max_unavailable: int


def resolve_update_strategy(
    max_surge: int | Percent | str, max_unavailable: int | Percent | str, desired_count: int
) -> tuple[int, int]:
    """(surge, unavailable) as replica counts, the way Kubernetes resolves them."""
    surge = _resolve("max_surge", max_surge, desired_count, round_up=True)
    unavailable = _resolve("max_unavailable", max_unavailable, desired_count, round_up=False)
    if surge == 0 and unavailable == 0:
        # both 0 could never make progress; Kubernetes then allows one unavailable
        unavailable = 1
    return surge, unavailable


def plan(
    desired_hash: str,
    desired_count: int,
    observed: Sequence[ObservedReplica],
    max_surge: int | Percent | str,
    max_unavailable: int | Percent | str,
) -> Plan:
    """Next step from `observed` towards `desired_count` ready replicas of `desired_hash`."""
    surge, unavailable = resolve_update_strategy(max_surge, max_unavailable, desired_count)
    max_total = desired_count + surge
    min_ready = max(desired_count - unavailable, 0)

    by_age = sorted(
        (r for r in observed if not r.draining), key=lambda r: (r.started_at, r.replica_id)
    )
    new = [r for r in by_age if r.spec_hash == desired_hash]
    old = [r for r in by_age if r.spec_hash != desired_hash]

    # an old replica that is not ready serves nothing: removing it never lowers
    # availability and frees surge room for a new one
    drain = [r.replica_id for r in old if not r.ready]
    old_ready = [r for r in old if r.ready]

    # more current replicas than desired (scale down): keep the ready and the
    # oldest, i.e. drain the not-ready first, then the newest
    keep_new = sorted(new, key=lambda r: not r.ready)[:desired_count]
    kept = {r.replica_id for r in keep_new}
    excess = [r for r in reversed(new) if r.replica_id not in kept]
    excess.sort(key=lambda r: r.ready)  # stable: not-ready first, each group newest first
    drain += [r.replica_id for r in excess]

    # old ready replicas go, oldest first, as far as the ready floor allows
    ready_now = sum(r.ready for r in keep_new) + len(old_ready)
    budget = max(ready_now - min_ready, 0)
    drained_old = old_ready[:budget]
    drain += [r.replica_id for r in drained_old]

    remaining = len(keep_new) + len(old_ready) - len(drained_old)
    start = max(0, min(desired_count - len(keep_new), max_total - remaining))
    return Plan(start, tuple(drain), surge, unavailable)


def _resolve(field: str, value: int | Percent | str, desired_count: int, round_up: bool) -> int:
    try:
        count = parse_surge(value)  # the spec's values pass as they are; "N%" as written becomes a Percent
    except ValueError as e:
        raise ValueError(f"update_strategy.{field}: {e}") from None
    if isinstance(count, int):
        return count
    return count.of(desired_count, round_up=round_up)  # a Percent

