"""Autoscaling decisions: Cortex 0.23's concurrency algorithm, and the HPA rule for legacy APIs.

This is the pure core behind daemon/autoscaler.py. The daemon samples each
API's in-flight request count at the gateway every
`SAMPLE_INTERVAL` seconds, and every `TICK_INTERVAL` seconds calls `decide`
with those samples, the current replica count and the API's deploy time; it
writes `Decision.request` as the desired replica count that the reconciler
converges to, logs `Decision.reason` and shows it in the TUI. Nothing here
reads a clock or does I/O: time arrives as `now`, history leaves as a new
`AutoscalerState` value that the caller keeps for the next tick.

Where Cortex's Go code (pkg/operator/resources/realtimeapi/autoscaler.go)
composes the stabilization rules, we follow its later, fixed form: the
downscale rule only ever acts on a scale-down and the upscale rule only on a
scale-up, and neither can push the request past the current count. Applied
unconditionally (as 0.23 does), the upscale rule's "min of recent
recommendations" would include the new, lower recommendation and let every
scale-down bypass `downscale_stabilization_period`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cortexd.spec.model import AutoscalingSpec

SAMPLE_INTERVAL = 1.0  # seconds between in-flight samples (gateway)
TICK_INTERVAL = 10.0  # seconds between decisions; Cortex's AutoscalingTickInterval
HPA_TOLERANCE = 0.1  # Kubernetes' --horizontal-pod-autoscaler-tolerance default


@dataclass(frozen=True)
class Sample:
    """API-wide in-flight requests observed at `at` (seconds, daemon clock)."""

    at: float
    in_flight: float


@dataclass(frozen=True)
class CpuSample:
    """Mean CPU use of an API's ready replicas at `at`, in percent of `compute.cpu`."""

    at: float
    utilization: float


@dataclass(frozen=True)
class Decision:
    """One autoscaler tick, with the values needed to log it and show it in words."""

    at: float
    current: int
    avg_in_flight: float | None  # None: no samples in the window, or a CPU decision
    raw: float | None  # unrounded recommendation; None when nothing was measured
    recommendation: int  # after tolerance, factor caps and min/max; what history records
    request: int  # after stabilization: the replica count to converge to
    reason: str
    avg_cpu_utilization: float | None = None  # percent, for legacy `kind: api` decisions

    @property
    def changed(self) -> bool:
        return self.request != self.current


@dataclass(frozen=True)
class AutoscalerState:
    """Past recommendations as (time, recommendation), oldest first, pruned on each tick."""

    recommendations: tuple[tuple[float, int], ...] = ()


def samples_to_keep(spec: AutoscalingSpec, sample_interval: float = SAMPLE_INTERVAL) -> int:
    """How many samples cover `window`: the size of the daemon's sample ring buffer."""
    return max(1, math.ceil(spec.window / sample_interval) + 1)


def window_average(samples: Sequence[Sample], window: float, now: float) -> float | None:
    """Mean in-flight over the samples taken in (now - window, now]; None if there are none."""
    recent = [s.in_flight for s in samples if now - window < s.at <= now]
    if not recent:
        return None
    return sum(recent) / len(recent)


def decide(
    spec: AutoscalingSpec,
    samples: Sequence[Sample],
    state: AutoscalerState,
    current: int,
    start: float,
    now: float,
) -> tuple[Decision, AutoscalerState]:
    """Cortex's concurrency autoscaler for one tick.

    `current` is the replica count requested so far (the last decision, not the
    number ready), `start` when the API was last (re)deployed. With no samples
    in the window the tick is skipped, as Cortex did when metrics were not
    available yet: the request stays `current` and nothing enters the history.
    """
    avg = window_average(samples, spec.window, now)
    if avg is None:
        reason = f"no in-flight samples in the last {_num(spec.window)}s yet; keeping {current}"
        return Decision(now, current, None, None, current, current, reason), state

    target = spec.target_replica_concurrency
    raw = avg / target
    notes = [f"avg in-flight {_num(avg)} / target {_num(target)} = {_num(raw)} -> {_ceil(raw)}"]
    rec = _ceil(raw)
    # the tolerance band keeps small drifts around `current` from causing churn
    if current * (1 - spec.downscale_tolerance) < raw < current:
        rec = current
        notes.append(f"within downscale tolerance {_num(spec.downscale_tolerance)} -> {rec}")
    if current < raw < current * (1 + spec.upscale_tolerance):
        rec = current
        notes.append(f"within upscale tolerance {_num(spec.upscale_tolerance)} -> {rec}")
    # the factor caps bound one step, but removing or adding one replica is always allowed
    floor = min(current - 1, _ceil(current * spec.max_downscale_factor))
    if rec < floor:
        rec = floor
        notes.append(f"down-factor cap {_num(spec.max_downscale_factor)} -> {rec}")
    ceil = max(current + 1, _ceil(current * spec.max_upscale_factor))
    if rec > ceil:
        rec = ceil
        notes.append(f"up-factor cap {_num(spec.max_upscale_factor)} -> {rec}")
    rec = _clamp(rec, spec, notes)
    request, state = _stabilize(rec, spec, state, current, start, now, notes)
    return Decision(now, current, avg, raw, rec, request, _sentence(notes, current, request)), state


def cpu_decide(
    spec: AutoscalingSpec,
    samples: Sequence[CpuSample],
    state: AutoscalerState,
    current: int,
    start: float,
    now: float,
) -> tuple[Decision, AutoscalerState]:
    """The Kubernetes HPA rule that legacy `kind: api` APIs scaled by (`target_cpu_utilization`).

    desired = ceil(current * utilization / target), unchanged while the ratio is
    within HPA's default 10% tolerance, then clamped to min/max replicas. HPA has
    no per-step factor caps, so none are applied; the stabilization periods are
    the same as for `decide` (the legacy translation fills Cortex's defaults),
    which also covers HPA's own 5-minute downscale stabilization window.
    Utilization is averaged over `window`; no samples skips the tick.
    """
    target = spec.target_cpu_utilization
    if not target:
        raise ValueError(
            "cpu_decide needs autoscaling.target_cpu_utilization > 0; "
            "use decide() for APIs that scale on concurrency"
        )
    recent = [s.utilization for s in samples if now - spec.window < s.at <= now]
    if not recent:
        reason = f"no CPU samples in the last {_num(spec.window)}s yet; keeping {current}"
        return Decision(now, current, None, None, current, current, reason), state

    avg = sum(recent) / len(recent)
    ratio = avg / target
    raw = current * ratio
    notes = [f"avg CPU {_num(avg)}% / target {target}% = {_num(ratio)}"]
    if abs(ratio - 1) <= HPA_TOLERANCE:
        rec = current
        notes.append(f"within HPA tolerance {_num(HPA_TOLERANCE)} -> {rec}")
    else:
        rec = _ceil(raw)
        notes.append(f"{current} x {_num(ratio)} = {_num(raw)} -> {rec}")
    rec = _clamp(rec, spec, notes)
    request, state = _stabilize(rec, spec, state, current, start, now, notes)
    decision = Decision(now, current, None, raw, rec, request, _sentence(notes, current, request),
                        avg_cpu_utilization=avg)
    return decision, state


def _clamp(rec: int, spec: AutoscalingSpec, notes: list[str]) -> int:
    rec = max(rec, 1)
    if rec < spec.min_replicas:
        rec = spec.min_replicas
        notes.append(f"min_replicas {rec}")
    if rec > spec.max_replicas:
        rec = spec.max_replicas
        notes.append(f"max_replicas {rec}")
    return rec


def _stabilize(
    rec: int,
    spec: AutoscalingSpec,
    state: AutoscalerState,
    current: int,
    start: float,
    now: float,
    notes: list[str],
) -> tuple[int, AutoscalerState]:
    """Record `rec`, then hold the request against the recommendations of the recent past."""
    down_period = spec.downscale_stabilization_period
    up_period = spec.upscale_stabilization_period
    # history is only consulted over the longest period, so nothing older is kept
    keep = max(down_period, up_period)
    history = tuple(
        (t, r) for t, r in (*state.recommendations, (now, rec)) if now - t <= keep
    )
    request = rec
    if request < current:
        if now - start < down_period:
            request = current
            notes.append(f"downscale held: less than {_num(down_period)}s since deploy")
        else:
            floor = min(max(r for t, r in history if now - t <= down_period), current)
            if request < floor:
                request = floor
                notes.append(
                    f"downscale held by stabilization (max of last {_num(down_period)}s = {floor})"
                )
    if request > current:
        if now - start < up_period:
            request = current
            notes.append(f"upscale held: less than {_num(up_period)}s since deploy")
        else:
            ceil = max(min(r for t, r in history if now - t <= up_period), current)
            if request > ceil:
                request = ceil
                notes.append(
                    f"upscale held by stabilization (min of last {_num(up_period)}s = {ceil})"
                )
    return request, AutoscalerState(history)


def _sentence(notes: list[str], current: int, request: int) -> str:
    outcome = f"keep {current}" if request == current else f"scale {current} -> {request}"
    return "; ".join(notes) + f"; {outcome}"


def _ceil(x: float) -> int:
    # round away float noise first: 10 * 0.7 is 7.000000000000001, which must not become 8
    return math.ceil(round(x, 9))


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")
