"""Which replica gets the next request: least in-flight, round-robin among ties.

A pure decision (no asyncio, no I/O): the gateway's request path
(cortexd/gateway/request_path.py) passes the in-flight counts of an API's ready replicas, the API's
`max_replica_concurrency` and a rotating start index, and gets back the index of
the replica to use, or None when every replica is at its concurrency limit (the
gateway then answers 503 with Retry-After).

Least in-flight rather than plain round-robin because predictors differ wildly
in latency (a replica stuck on a slow request should not be handed the next
one); the rotating start spreads load evenly when counts are equal (the idle
case), so that one replica does not take every request at low load.
"""

from __future__ import annotations

from collections.abc import Sequence


def pick_replica(in_flights: Sequence[int], max_concurrency: int, start: int) -> int | None:
    """Index of the replica with the fewest in-flight requests, or None if all are full.

    Ties go to the first replica at or after `start` (modulo the count), so a
    caller that increments `start` per request gets round-robin among equals.
    A replica holding `max_concurrency` requests (or more) is never chosen.
    """
    n = len(in_flights)
    if n == 0:
        return None
    if n == 1:  # the common single-replica case, without the loop
        return 0 if in_flights[0] < max_concurrency else None
    best = -1
    best_load = max_concurrency  # only loads strictly below the limit qualify
    first = start % n
    for offset in range(n):
        i = first + offset
        if i >= n:
            i -= n
        load = in_flights[i]
        if load < best_load:
            best, best_load = i, load
            if load == 0:
                break  # nothing beats an idle replica
    return best if best >= 0 else None
