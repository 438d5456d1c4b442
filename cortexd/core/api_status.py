"""What an API shows (live, updating, error) and how long it waits to restart a failed replica.

Pure decisions of the reconciler (cortexd/daemon/reconciler.py), which counts the
failures in a row per API and reads the replicas; these functions turn those
counts into the restart delay and the status. Cortex showed an API `error` after
repeated crashes with the last log lines; cortexd does too, at once for an out-of-
memory kill or a dependency that cannot install (the same files fail again).
"""

from __future__ import annotations

from typing import Literal

Status = Literal["live", "updating", "error"]


def restart_delay(failures: int, initial: float, maximum: float) -> float:
    """Seconds before the next start after `failures` in a row (>= 1): initial, doubling, capped."""
    # the exponent is bounded: 2 ** 10_000 does not fit a float (a long crash loop)
    return min(initial * 2 ** min(max(failures, 1) - 1, 1000), maximum)


def shows_error(failures: int, error_after: int, *, oom: bool = False, at_once: bool = False) -> bool:
    """Whether `failures` in a row put the API in `error` (it keeps retrying at the backoff pace)."""
    return failures >= error_after or oom or at_once


def api_status(*, failing: bool, desired: int, current_ready: int, stale: bool, routable: int) -> Status:
    """failing: in error until a replica of the current spec becomes ready; current_ready: ready,
    not draining replicas of the current spec; stale: a replica of an older spec still runs;
    routable: replicas the gateway routes to. Live only when exactly the current version serves."""
    if failing:
        return "error"
    if current_ready >= desired and not stale and routable == current_ready:
        return "live"
    return "updating"
