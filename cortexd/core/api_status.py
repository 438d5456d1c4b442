"""What an API shows (live, updating, error), why it fails, and how long it waits to restart a replica.

Pure decisions of the reconciler (cortexd/daemon/reconciler.py), which counts the
failures in a row per API and reads the replicas; these functions turn those
counts into the restart delay and the status. Cortex showed an API `error` after
repeated crashes with the last log lines; cortexd does too, at once for an out-of-
memory kill or a dependency that cannot install (the same files fail again).

A failure has a kind, `Failure` (kopf's `Reason` is the model): the reconciler sets it
beside the sentence it writes for `cortexd get`, and whoever acts on a failure reads the
kind, never the sentence: the gateway's answer to clients (gateway/answers.py
`client_reason`), the out-of-memory rule below, and the CLI's "not serving yet"
(`APIStatus.failure` in the status snapshot).
"""

from __future__ import annotations

import enum
from typing import Literal

Status = Literal["live", "updating", "error"]


class Failure(enum.StrEnum):
    """Why an API does not serve, as a kind; the sentences are rendered from it.

    A StrEnum: its value is what the status JSON carries ("failure": "oom"), and a value
    read back from JSON compares equal to its member.
    """

    CRASHED = "crashed"  # a replica exited: the predictor failed to start, or died
    OOM = "oom"  # a replica was killed for using more memory than it may
    NOT_READY = "not_ready"  # a replica did not become ready within the start timeout
    UNHEALTHY = "unhealthy"  # a ready replica stopped answering: it is being replaced
    DEPENDENCIES = "dependencies"  # the project's dependencies cannot be installed
    IMAGE = "image"  # the replica image could not be prepared
    START = "start"  # the backend could not start a replica
    INTERNAL = "internal"  # the daemon failed reconciling the API
    NO_GPU = "no_gpu"  # no replica can start until a GPU is free (not an error: it waits)
    NO_GPU_ON_HOST = "no_gpu_on_host"  # it requests compute.gpu and this host has no GPU at all


# the sentence's prefix in `cortexd get` for the kinds a user must act on at once
ERROR_PREFIX = {Failure.OOM: "error (out of memory): "}


def restart_delay(failures: int, initial: float, maximum: float) -> float:
    """Seconds before the next start after `failures` in a row (>= 1): initial, doubling, capped."""
    # the exponent is bounded: 2 ** 10_000 does not fit a float (a long crash loop)
    return min(initial * 2 ** min(max(failures, 1) - 1, 1000), maximum)


def shows_error(failures: int, error_after: int, *, oom: bool = False, at_once: bool = False) -> bool:
    """Whether `failures` in a row put the API in `error` (it keeps retrying at the backoff pace)."""
    return failures >= error_after or oom or at_once


def shown_failure(status: str, failure: Failure | None, pending: Failure | None) -> Failure | None:
    """The kind the status snapshot carries: an API in error shows its failure's kind; one
    that waits (for a GPU) shows why it waits; else the failure it recovers from, if any."""
    if status == "error":
        return failure
    return pending or failure


def api_status(*, failing: bool, desired: int, current_ready: int, stale: bool, routable: int) -> Status:
    """failing: in error until a replica of the current spec becomes ready; current_ready: ready,
    not draining replicas of the current spec; stale: a replica of an older spec still runs;
    routable: replicas the gateway routes to. Live only when exactly the current version serves."""
    if failing:
        return "error"
    if current_ready >= desired and not stale and routable == current_ready:
        return "live"
    return "updating"
