"""Which api of a traffic splitter takes a request: a weighted choice among the live ones.

Pure (no asyncio, no I/O, no clock): the gateway (cortexd/gateway/split_route.py) asks
`split_table` once whenever a splitter's configuration or one of its apis' state changes,
and `pick_target` once per request with a random number in [0, 1): one multiplication and
one bisect, nothing allocated.

An api that is down (not deployed, in error, waiting for a GPU) takes no traffic: its
weight goes to the live apis in proportion to theirs (70/20/10 with the 20 down serves
87.5/0/12.5). An api of weight 0 never takes traffic. With no live api of weight > 0
the table is empty and requests are refused (503). `share_notes` says it in words for
`cortexd get`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SplitTable:
    """The live targets and their cumulative weights, ready for pick_target."""

    live: tuple[int, ...]  # indices (into the weights given) of the targets that take traffic
    cumulative: tuple[float, ...]  # running sums of their weights; the last one is infinite
    total: int  # the sum of their weights
    shares: tuple[float, ...]  # the percent of traffic each target (all of them) takes now


def split_table(weights: Sequence[int], down: Sequence[bool]) -> SplitTable:
    """The table for targets of `weights`, those flagged in `down` taking no traffic."""
    live = tuple(i for i, (w, d) in enumerate(zip(weights, down)) if w > 0 and not d)
    total = sum(weights[i] for i in live)
    cumulative: list[float] = []
    running = 0
    for i in live:
        running += weights[i]
        cumulative.append(running)
    if cumulative:
        # r * total can round up to total itself: the last target takes everything past its start
        cumulative[-1] = math.inf
    shares = tuple(100.0 * weights[i] / total if i in live else 0.0 for i in range(len(weights)))
    return SplitTable(live, tuple(cumulative), total, shares)


def pick_target(cumulative: Sequence[float], total: int, r: float) -> int:
    """The position in SplitTable.live of the target for a request, r uniform in [0, 1)."""
    return bisect_right(cumulative, r * total)


def percent(value: float) -> str:
    """37.5 -> '37.5%', 30.0 -> '30%'."""
    return f"{value:.1f}".removesuffix(".0") + "%"


def share_notes(targets: Sequence[tuple[str, int]], down: Mapping[str, str]) -> list[str]:
    """What `cortexd get` says of down targets: (name, weight) each; down: name -> why
    ("is in error"). E.g. "api 'b' is in error; its 30% goes to the others"."""
    weights = [w for _, w in targets]
    table = split_table(weights, [name in down for name, _ in targets])
    notes = []
    for name, weight in targets:
        if name not in down:
            continue
        if not table.live:
            notes.append(f"api {name!r} {down[name]}")
        elif weight:
            others = ", ".join(f"{targets[i][0]} {percent(table.shares[i])}" for i in table.live)
            notes.append(f"api {name!r} {down[name]}; its {weight}% goes to the others (now {others})")
        else:
            notes.append(f"api {name!r} {down[name]} (its weight is 0)")
    if down and not table.live:
        notes.append("no api can take requests: they get 503 until one is live again")
    return notes
