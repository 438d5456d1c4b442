"""The answers the gateway gives itself: JSON errors, and what a client is told about an API in error.

Every answer the gateway makes rather than relays is JSON {"error": ..., "request_id": ...}
with X-Request-Id (every answer, relayed or not, carries it), from `error_answer` when aiohttp
has a request object, and from `raw_answer`, as bytes, when a connection is refused before
any request exists (client_connection.py). Neither ever carries a replica's log lines: an
API in error is described to clients by the kind of its failure (`client_reason`), while
the daemon's sentence, which holds the last lines its predictor printed, stays in
`cortexd get`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

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


def error_answer(status: int, message: str, rid: str, *, retry_after: bool = False,
                 extra: dict[str, Any] | None = None) -> web.Response:
    """A JSON error answer carrying the request id (and `Retry-After: 1` when asked)."""
    headers = {"X-Request-Id": rid}
    if retry_after:
        headers["Retry-After"] = "1"
    body = {"error": message, "request_id": rid}
    if extra:
        body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


def raw_answer(status: int, message: str, rid: str, retry_after: bool = False) -> bytes:
    """A complete JSON error answer that closes the connection, as bytes (no request object exists)."""
    body = json.dumps({"error": message, "request_id": rid}).encode()
    return (b"HTTP/1.1 " + STATUS_LINES[status] + b"\r\nContent-Type: application/json; charset=utf-8"
            b"\r\nContent-Length: %d\r\nX-Request-Id: %b%b\r\nConnection: close\r\n\r\n%b"
            % (len(body), encode(rid), b"\r\nRetry-After: 1" if retry_after else b"", body))
