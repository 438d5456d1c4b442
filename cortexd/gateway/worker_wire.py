"""The pipe between the daemon and a gateway worker process (workers.py, worker.py): framed messages.

One Unix socketpair per worker; a message is a 4-byte big-endian length and a pickled tuple whose
first item names it. Both ends are cortexd's own processes, of the same uid, started by the
daemon: no client's bytes are ever unpickled (they travel inside the tuples as bytes and str).

    daemon -> worker:  init, configure, replicas, state, job_reply, report_now, close
    worker -> daemon:  ack, error, health, job, report
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

_LENGTH = struct.Struct(">I")
MAX_MESSAGE = 256 * 2**20  # a job request's body can be the gateway's max_body_size (32 MiB by default)


def frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def read_message(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at the end of the pipe (the other side is gone)."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        (length,) = _LENGTH.unpack(head)
        if length > MAX_MESSAGE:
            raise ValueError(f"a gateway worker message of {length} bytes")
        message = pickle.loads(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    if not isinstance(message, tuple) or not message:
        raise ValueError(f"not a gateway worker message: {type(message).__name__}")
    return message
