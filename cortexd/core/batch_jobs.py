"""A BatchAPI job's pure decisions: a submission read and refused in words, its items cut into
batches, the file filters (`includes`/`excludes`), a batch's next state after a failure or a lost
worker, and the job's status in Cortex 0.23's values.

The rules are Cortex 0.23's (docs/deployments/batch-api/endpoints.md and its operator's
batchapi/validations.go and enqueue.go): exactly one of item_list, file_path_lister and
delimited_files; workers and batch_size at least 1; an item and a batch (JSON-encoded) at most
256 KiB; globs compiled with '/' as the separator (`*` stops at '/', `**` does not). Values in,
a value out: no I/O, no clock (`now` is given).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

MESSAGE_LIMIT = 256 * 1024  # bytes of one item, and of one batch, JSON-encoded (Cortex: SQS's limit)
SUBMISSION_LIMIT = 10 * 1024 * 1024  # bytes of a submission's body
SOURCES = ("item_list", "file_path_lister", "delimited_files")
Source = Literal["item_list", "file_path_lister", "delimited_files"]
_LISTER_KEYS = {"s3_paths", "includes", "excludes", "batch_size"}


class SubmissionError(ValueError):
    """A submission Cortex would refuse (400), said in words."""


@dataclass(frozen=True)
class Lister:
    """The files of file_path_lister or delimited_files: `s3_paths` (s3://, and on one host local
    paths and file:// too: a file, a folder, or a prefix of file names), filtered."""

    paths: tuple[str, ...]
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Submission:
    workers: int
    source: Source
    batch_size: int
    items: tuple[Any, ...] = ()  # item_list's
    lister: Lister | None = None  # file_path_lister's and delimited_files'
    config: dict[str, Any] = field(default_factory=dict)


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SubmissionError(f"{where}: expected an integer; found {json.dumps(value)[:60]}")
    if value < 1:
        raise SubmissionError(f"{where}: must be greater than or equal to 1; found {value}")
    return value


def _strings(value: Any, where: str, *, required: bool = False) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SubmissionError(f"{where}: expected a list of strings")
    if required and not value:
        raise SubmissionError(f"{where}: must have at least 1 element")
    return tuple(value)


def parse_submission(body: Any) -> Submission:
    """The submission in a job request's JSON body (raises SubmissionError)."""
    if not isinstance(body, dict):
        raise SubmissionError("expected a JSON object with workers and one of " + ", ".join(SOURCES))
    unknown = sorted(set(body) - {"workers", "config", *SOURCES})
    if unknown:
        raise SubmissionError(f"unknown field {unknown[0]!r} (fields: workers, config, {', '.join(SOURCES)})")
    given = [s for s in SOURCES if body.get(s) is not None]
    if not given:
        raise SubmissionError(f"specify exactly one of the following keys: {', '.join(SOURCES)}")
    if len(given) > 1:
        raise SubmissionError(f"please specify either the {' or '.join(given)} field (but not more than one "
                              "at the same time)")
    workers = _positive_int(body.get("workers"), "workers")
    config = body.get("config") or {}
    if not isinstance(config, dict):
        raise SubmissionError("config: expected a JSON object (its fields override the api's predictor.config)")
    source: Source = given[0]  # type: ignore[assignment]  # one of SOURCES
    section = body[source]
    if not isinstance(section, dict):
        raise SubmissionError(f"{source}: expected a JSON object")
    if source == "item_list":
        unknown = sorted(set(section) - {"items", "batch_size"})
        if unknown:
            raise SubmissionError(f"item_list: unknown field {unknown[0]!r} (fields: items, batch_size)")
        items = section.get("items")
        if not isinstance(items, list) or not items:
            raise SubmissionError("item_list.items: expected a list of at least 1 item")
        batch_size = _positive_int(section.get("batch_size"), "item_list.batch_size")
        return Submission(workers, source, batch_size, items=tuple(items), config=config)
    unknown = sorted(set(section) - _LISTER_KEYS)
    if unknown:
        raise SubmissionError(f"{source}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(_LISTER_KEYS))})")
    lister = Lister(_strings(section.get("s3_paths"), f"{source}.s3_paths", required=True),
                    _strings(section.get("includes"), f"{source}.includes"),
                    _strings(section.get("excludes"), f"{source}.excludes"))
    for what, patterns in (("includes", lister.includes), ("excludes", lister.excludes)):
        for pattern in patterns:
            try:
                compile_glob(pattern)
            except ValueError as e:
                raise SubmissionError(f"{source}.{what}: {pattern!r}: {e}") from None
    batch_size = _positive_int(section.get("batch_size"), f"{source}.batch_size")
    return Submission(workers, source, batch_size, lister=lister, config=config)


def encode_item(item: Any, index: int) -> str:
    """One item as JSON, refused past MESSAGE_LIMIT (Cortex: 'item N has size ...')."""
    text = json.dumps(item, separators=(",", ":"))
    if len(text.encode()) > MESSAGE_LIMIT:
        raise SubmissionError(f"item {index} has size {len(text.encode())} bytes which exceeds the limit "
                              f"({MESSAGE_LIMIT} bytes)")
    return text


def batches_of(encoded: Iterable[str], batch_size: int) -> list[str]:
    """JSON-encoded items -> JSON-encoded batches (lists) of `batch_size` items, the last one
    shorter; a batch past MESSAGE_LIMIT is refused, saying to make batches smaller."""
    out: list[str] = []
    chunk: list[str] = []
    for text in encoded:
        chunk.append(text)
        if len(chunk) == batch_size:
            out.append(_batch(chunk, len(out)))
            chunk = []
    if chunk:
        out.append(_batch(chunk, len(out)))
    return out


def _batch(chunk: list[str], index: int) -> str:
    text = "[" + ",".join(chunk) + "]"
    size = len(text.encode())
    if size > MESSAGE_LIMIT:
        raise SubmissionError(f"batch {index} has size {size} bytes, which exceeds the {MESSAGE_LIMIT} bytes limit "
                              "(256 KiB); use a smaller batch size or reduce the size of each item in the batch")
    return text


# -- includes/excludes: glob patterns with '/' as the separator (gobwas/glob, as Cortex compiled them)

def compile_glob(pattern: str) -> re.Pattern[str]:
    """`*` any run without '/', `**` any run, `?` one character but '/', `[...]`/`[!...]` a class,
    `{a,b}` alternatives, `\\` escapes (raises ValueError for an unclosed `[` or `{`)."""
    out, i, depth = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            double = pattern.startswith("**", i)
            out.append(".*" if double else "[^/]*")
            i += 2 if double else 1
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise ValueError("unclosed '['")
            body = pattern[i + 1:end]
            negate = body[:1] == "!"
            out.append("[" + ("^" if negate else "") + body[1 if negate else 0:].replace("\\", "\\\\") + "]")
            i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError("unclosed '{'")
    return re.compile("".join(out) + r"\Z", re.S)


def select_paths(paths: Iterable[str], includes: Sequence[str], excludes: Sequence[str]) -> list[str]:
    """Cortex's filter: with includes, a path must match one of them; then it must match no exclude."""
    inc = [compile_glob(p) for p in includes]
    exc = [compile_glob(p) for p in excludes]
    return [p for p in paths if (not inc or any(g.match(p) for g in inc)) and not any(g.match(p) for g in exc)]


# -- a batch's life and the job's status --------------------------------------------------------

class BatchState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # claimed by a worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed max_attempts times: recorded with its last error


DEFAULT_MAX_ATTEMPTS = 3  # a batch is tried at most this many times (a worker's error, or a lost worker)


def after_attempt(attempts: int, max_attempts: int) -> BatchState:
    """The state of a batch whose attempt number `attempts` failed or was lost: tried again, or failed."""
    return BatchState.QUEUED if attempts < max_attempts else BatchState.FAILED


def lease_expired(claimed_at: float, now: float, lease: float) -> bool:
    """Whether a running batch's worker is presumed lost (no outcome `lease` seconds after its claim)."""
    return now - claimed_at > lease


class JobStatus(StrEnum):
    """Cortex 0.23's job status values (docs/deployments/batch-api/statuses.md)."""

    UNKNOWN = "status_unknown"
    ENQUEUING = "status_enqueuing"
    RUNNING = "status_running"
    ENQUEUE_FAILED = "status_enqueue_failed"
    COMPLETED_WITH_FAILURES = "status_completed_with_failures"
    SUCCEEDED = "status_succeeded"
    UNEXPECTED_ERROR = "status_unexpected_error"
    WORKER_ERROR = "status_worker_error"
    WORKER_OOM = "status_worker_oom"
    STOPPED = "status_stopped"

    @property
    def done(self) -> bool:
        return self not in (JobStatus.UNKNOWN, JobStatus.ENQUEUING, JobStatus.RUNNING)


@dataclass(frozen=True)
class BatchCounts:
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.queued + self.running + self.succeeded + self.failed


def job_status(counts: BatchCounts, *, stopped: bool = False, worker_error: bool = False) -> JobStatus:
    """The job's status from its batches: running while any is queued or running; then succeeded,
    or completed with failures. A stop, or workers that cannot start (worker_error), end it so."""
    if stopped:
        return JobStatus.STOPPED
    if counts.queued or counts.running:
        return JobStatus.WORKER_ERROR if worker_error else JobStatus.RUNNING
    return JobStatus.COMPLETED_WITH_FAILURES if counts.failed else JobStatus.SUCCEEDED


def merged_config(api_config: dict[str, Any], job_config: dict[str, Any]) -> dict[str, Any]:
    """The predictor's config for a job: the api's, with the job's fields taking precedence."""
    return {**api_config, **job_config}



# -- which jobs are shown one by one (the live view, /metrics' per-job series) -------------------

RECENT_ENDED_S = 600.0  # an ended job keeps its row (and its series) this long after its end ...
RECENT_ENDED_N = 5  # ... for at most this many ended jobs per BatchAPI
RUNNING_SHOWN_N = 20  # jobs not ended shown one by one per BatchAPI; the rest are counted


def shown_jobs(jobs: Sequence[tuple[str, float | None]], now: float, *, ended_for: float = RECENT_ENDED_S,
               ended_n: int = RECENT_ENDED_N, running_n: int = RUNNING_SHOWN_N) -> list[str]:
    """The ids of a BatchAPI's jobs shown one by one, newest first: the newest `running_n` jobs
    not ended, then the newest `ended_n` that ended at most `ended_for` seconds ago (so a finished
    job shows its end status for a while). `jobs`: (job id, end time or None), newest first. The
    bound keeps a BatchAPI's per-job Prometheus series few whatever its history."""
    running = [job_id for job_id, ended in jobs if ended is None][:running_n]
    ended = [job_id for job_id, end in jobs if end is not None and now - end <= ended_for][:ended_n]
    return running + ended


def settled(ended: float | None, now: float, *, after: float = RECENT_ENDED_S) -> bool:
    """Whether an ended job's batch counts are final (a worker stopped at the job's end may still
    report its batch for a moment): its counts can be kept instead of read again."""
    return ended is not None and now - ended > after
