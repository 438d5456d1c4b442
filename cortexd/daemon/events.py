"""The daemon's recent events: config applied or rejected, replicas started/ready/crashed/stopped.

A bounded in-memory list that the control API serves (status snapshot, live view)
and that is mirrored to the daemon's log. Events are values; time is passed in.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal

log = logging.getLogger("cortexd")

Level = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class Event:
    at: float
    level: Level
    message: str
    api: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


class EventLog:
    def __init__(self, clock, maxlen: int = 200):
        self._clock = clock
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._listeners: list = []

    def add(self, message: str, *, api: str | None = None, level: Level = "info") -> Event:
        event = Event(self._clock(), level, message, api)
        self._events.append(event)
        prefix = f"[{api}] " if api else ""
        log.log({"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}[level],
                "%s%s", prefix, message)
        for listener in list(self._listeners):
            listener(event)
        return event

    def subscribe(self, listener) -> None:
        self._listeners.append(listener)

    def recent(self, n: int = 50) -> list[Event]:
        return list(self._events)[-n:]
