"""Replica log lines for `cortexd logs`: the "replica | text" prefix in a colour per replica.

Pure: a line in, a rich Text out. The colour comes from a stable hash of the
replica id, so a replica keeps its colour across restarts of `cortexd logs -f`.
"""

from __future__ import annotations

import zlib

from rich.text import Text

PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan",
           "bright_magenta", "bright_green", "bright_blue")
SEPARATOR = " | "


def replica_colour(replica_id: str) -> str:
    return PALETTE[zlib.crc32(replica_id.encode()) % len(PALETTE)]


def log_line(line: str) -> Text:
    """`line` with its replica prefix coloured (lines without a prefix stay plain)."""
    rid, sep, rest = line.partition(SEPARATOR)
    if not sep or not rid or " " in rid:
        return Text(line)
    return Text.assemble((rid, replica_colour(rid)), (sep, "dim"), rest)
