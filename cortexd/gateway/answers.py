"""The answers the gateway gives itself: JSON errors, and what a client is told about an API in error.

Every answer the gateway makes rather than relays is JSON {"error": ..., "request_id": ...}
with X-Request-Id (every answer, relayed or not, carries it), from `error_answer` for a
request, and from `raw_answer`, as bytes, when a connection is refused before any request
exists (client_connection.py). An `Answer` is what the request path hands the client
connection to write (answer_writer.py): a replica's answer (its header bytes kept as sent)
or the gateway's own; `answer_head` makes its head for the client's HTTP version. Neither
ever carries a replica's log lines: an API in error is described to clients by the kind of
its failure (`client_reason`), while the daemon's sentence, which holds the last lines its
predictor printed, stays in `cortexd get`.
"""

from __future__ import annotations

import json
from typing import Any

from cortexd.core.api_status import Failure
from cortexd.gateway.relay import STATUS_LINES, encode
from cortexd.settings import OPTIONS

# what a client is told an API in error suffers from, by the kind of its failure
CLIENT_REASONS = {
    Failure.DEPENDENCIES: "its dependencies could not be installed",
    Failure.UNHEALTHY: "its replicas stopped answering and are being replaced",
    Failure.OOM: "its predictor ran out of memory",
    Failure.NOT_READY: "its predictor did not become ready in time",
    Failure.IMAGE: "its replica image could not be prepared",
    Failure.START: "its replicas could not be started",
    Failure.INTERNAL: "the daemon could not reconcile it",
    Failure.CRASHED: "its predictor failed to start",
    Failure.NO_GPU: "no GPU is free for its replicas",
    Failure.NO_GPU_ON_HOST: ("it requests compute.gpu and this host has no GPU (remove compute.gpu, or "
                             f"serve it on the CPU: `cortexd deploy {OPTIONS['cpu_only'].flag} PATH`)"),
}


def client_reason(api: str, failure: Failure) -> str:
    """What a client is told about an API in error: the kind of its failure, never its detail.

    The daemon's reason holds the replica's last log lines, which may hold anything the
    predictor printed (a password, a database URL): none of it reaches an HTTP client, and
    the gateway is never given it.
    """
    return f"the API is not ready: {CLIENT_REASONS[failure]}; see `cortexd get {api}`"


class Answer:
    """A whole answer to one request: a replica's (`relayed`, its end-to-end header bytes as
    sent) or the gateway's own. The connection adds the framing (Content-Length, Connection)
    and X-Request-Id when it writes it; `close`: the connection closes after it."""

    __slots__ = ("body", "close", "head_length", "head_only", "headers", "relayed", "rid", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], rid: str, body: bytes, *,
                 relayed: bool = False, head_only: bool = False, head_length: bytes | None = None,
                 close: bool = False):
        self.status = status
        self.headers = headers
        self.rid = rid
        self.body = body  # also read by the gateway's monitoring (metrics.Monitor)
        self.relayed = relayed
        self.head_only = head_only  # a replica's answer to HEAD: no body, the replica's Content-Length
        self.head_length = head_length
        self.close = close

    def force_close(self) -> None:
        """The connection closes after this answer, whatever the client asked for."""
        self.close = True


_JSON = (b"Content-Type", b"application/json; charset=utf-8")


def answer_head(answer: Answer, version: tuple[int, int], keep_alive: bool, head_request: bool) -> bytes:
    """The head of `answer` to a request of `version`, ending in the blank line (pure)."""
    status = answer.status
    lines = [b"HTTP/%d.%d " % version + (STATUS_LINES.get(status) or b"%d Unknown" % status)]
    for name, value in answer.headers:
        lines.append(name + b": " + value)
    lines.append(b"X-Request-Id: " + answer.rid.encode())  # ASCII: checked, or made by the gateway
    if answer.head_only:
        if answer.head_length is not None:
            lines.append(b"Content-Length: " + answer.head_length)
    elif status >= 200 and status != 204 and status != 304:
        lines.append(b"Content-Length: %d" % len(answer.body))
    if not keep_alive:
        lines.append(b"Connection: close")
    elif version < (1, 1):
        lines.append(b"Connection: keep-alive")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def error_answer(status: int, message: str, rid: str, *, retry_after: bool = False,
                 extra: dict[str, Any] | None = None) -> Answer:
    """A JSON error answer carrying the request id (and `Retry-After: 1` when asked)."""
    body = {"error": message, "request_id": rid}
    if extra:
        body.update(extra)
    headers = [_JSON, (b"Retry-After", b"1")] if retry_after else [_JSON]
    return Answer(status, headers, rid, json.dumps(body).encode())


def json_answer(status: int, value: Any, rid: str) -> Answer:
    """An answer whose body is `value` as JSON (a BatchAPI job runner's)."""
    return Answer(status, [_JSON], rid, json.dumps(value).encode())


def raw_answer(status: int, message: str, rid: str, retry_after: bool = False) -> bytes:
    """A complete JSON error answer that closes the connection, as bytes (no request object exists)."""
    body = json.dumps({"error": message, "request_id": rid}).encode()
    return (b"HTTP/1.1 " + STATUS_LINES[status] + b"\r\nContent-Type: application/json; charset=utf-8"
            b"\r\nContent-Length: %d\r\nX-Request-Id: %b%b\r\nConnection: close\r\n\r\n%b"
            % (len(body), encode(rid), b"\r\nRetry-After: 1" if retry_after else b"", body))
