"""Rollout planning: which replicas to start and which to drain, as a value.

This is the pure core of daemon/reconciler.py (DESIGN.md sections 4 and 10).
Each reconcile pass re-reads the backend, describes every live replica of an
API as an `ObservedReplica`, and asks `plan` what to do next; the reconciler
starts `Plan.start` replicas of the desired spec and drains `Plan.drain`
(removed from routing at once, stopped when their in-flight requests reach 0).
The reconciler calls again after anything changes, so a plan is one step, not
the whole rollout.

One function covers plain scaling, replacing failed replicas and rolling
updates, alone or at once, with Kubernetes Deployment arithmetic for
`update_strategy`: percentages are of the desired count, surge rounds up,
unavailable rounds down, and both resolving to 0 makes unavailable 1. A plan
never starts a replica that would take the non-draining total above
desired + max_surge, and never drains a ready replica that would take the
ready count below desired - max_unavailable. Choices are deterministic
(ordered by started_at, then replica_id), so equal inputs give equal plans.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_PERCENT = re.compile(r"^\s*(\d+)\s*%\s*$")


@dataclass(frozen=True)
class ObservedReplica:
    replica_id: str
    spec_hash: str
    ready: bool  # passed its readiness probe; can take requests
    draining: bool  # already leaving: out of routing, stopping once idle
    failed: bool  # crashed or timed out starting; needs replacing
    started_at: float


@dataclass(frozen=True)
class Plan:
    start: int  # new replicas of the desired spec to start
    drain: tuple[str, ...]  # replica ids to take out of routing and stop once idle
    reason: str  # one line for logs and the status view
    max_surge: int  # update_strategy resolved against the desired count
    max_unavailable: int
    converged: bool  # exactly desired_count ready replicas of the desired spec, nothing to do


def resolve_update_strategy(
    max_surge: int | str, max_unavailable: int | str, desired_count: int
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
    max_surge: int | str,
    max_unavailable: int | str,
) -> Plan:
    """Next step from `observed` towards `desired_count` ready replicas of `desired_hash`."""
    surge, unavailable = resolve_update_strategy(max_surge, max_unavailable, desired_count)
    max_total = desired_count + surge
    min_ready = max(desired_count - unavailable, 0)

    by_age = sorted(
        (r for r in observed if not r.draining), key=lambda r: (r.started_at, r.replica_id)
    )
    failed = [r for r in by_age if r.failed]
    live = [r for r in by_age if not r.failed]
    new = [r for r in live if r.spec_hash == desired_hash]
    old = [r for r in live if r.spec_hash != desired_hash]

    # a failed replica serves nothing: drain it now, and it no longer counts
    drain = [r.replica_id for r in failed]
    # an old replica that is not ready serves nothing either: removing it never
    # lowers availability and frees surge room for a new one
    drain += [r.replica_id for r in old if not r.ready]
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

    ready_new = sum(r.ready for r in keep_new)
    converged = (
        not drain and start == 0 and not old_ready
        and len(keep_new) == desired_count and ready_new == desired_count
    )
    reason = _describe(
        desired_hash, desired_count, len(new), ready_new, len(old), len(failed),
        start, len(drain), surge, unavailable, converged,
    )
    return Plan(start, tuple(drain), reason, surge, unavailable, converged)


def _resolve(field: str, value: int | str, desired_count: int, round_up: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and (m := _PERCENT.match(value)):
        share = int(m.group(1)) * desired_count  # integer maths: no float rounding surprises
        count = -(-share // 100) if round_up else share // 100
    elif isinstance(value, str) and value.strip().isdigit():
        count = int(value)
    else:
        raise ValueError(
            f"update_strategy.{field} must be a number or a percentage like '25%', got {value!r}"
        )
    if count < 0:
        raise ValueError(f"update_strategy.{field} must not be negative, got {value!r}")
    return count


def _describe(
    desired_hash: str, desired: int, new: int, ready_new: int, old: int, failed: int,
    start: int, drained: int, surge: int, unavailable: int, converged: bool,
) -> str:
    if converged:
        return f"steady: {ready_new}/{desired} ready"
    if old:
        head = (f"rolling update to {desired_hash}: {ready_new}/{desired} new ready, "
                f"{old} old (surge {surge}, unavailable {unavailable})")
    elif new < desired:
        head = f"scaling up: {new} -> {desired}"
    elif new > desired:
        head = f"scaling down: {new} -> {desired}"
    else:
        head = f"waiting for readiness: {ready_new}/{desired} ready"
    parts = [head]
    if failed:
        parts.append(f"replacing {failed} failed")
    if start:
        parts.append(f"start {start}")
    if drained:
        parts.append(f"drain {drained}")
    return "; ".join(parts)
