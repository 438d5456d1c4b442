"""The daemon's recent events: config applied or rejected, replicas started/ready/crashed/stopped.

A bounded in-memory list that the control API serves (status snapshot, live view)
and that is mirrored to the daemon's log. Events are values; time is passed in.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("cortexd")

Level = Literal["info", "warning", "error"]
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass(frozen=True)
class Event:
    at: float
    level: Level
    message: str
    api: str | None = None
    kind: str | None = None  # what it marks on its API's charts (cortexd/history.py MARK_KINDS)


class EventLog:
    """The last `maxlen` events, oldest first; `clock` gives an event's wall-clock time."""

    def __init__(self, clock: Callable[[], float], maxlen: int = 200):
        self._clock = clock
        self._events: deque[Event] = deque(maxlen=maxlen)

    def add(self, message: str, *, api: str | None = None, level: Level = "info",
            kind: str | None = None) -> Event:
        event = Event(self._clock(), level, message, api, kind)
        self._events.append(event)
        prefix = f"[{api}] " if api else ""
        log.log(_LEVELS[level], "%s%s", prefix, message)
        return event

    def recent(self, n: int = 50) -> list[Event]:
        return list(self._events)[-n:]
