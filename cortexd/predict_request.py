"""`cortexd predict`'s request: the payload read and checked, sent to an API's URL, the answer.

The CLI side (layer of cli.py): it reads the status snapshot's values, never the daemon's
internals, and talks HTTP to the API's own URL, as any client would (through the gateway,
with its limits and 503s).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from cortexd.core.api_status import Failure
from cortexd.errors import RequestError
from cortexd.status import APIStatus


def not_serving(api: APIStatus) -> str | None:
    """Why a request to `api` cannot be served now, when nothing is on its way to serve it
    (no replica ready or starting: pending for a GPU, in crash backoff, installing requirements)."""
    replicas = api.replicas
    reason = replicas.pending_reason
    if replicas.ready or replicas.starting or api.status == "error" or not reason:
        return None
    name = api.name
    if api.failure == Failure.NO_GPU:  # placement's sentence: "pending: ..."
        return (f"api {name!r} is pending, no replica can start: {reason.removeprefix('pending: ')} "
                f"(`cortexd get {name}` shows it)")
    return f"api {name!r} is not serving yet: {reason}"


def read_payload(arg: str) -> str:
    """The JSON text given on the command line, or read from @file; RequestError when it is not JSON."""
    body = arg
    if body.startswith("@"):
        try:
            body = Path(body[1:]).read_text()
        except OSError as e:
            raise RequestError(f"cannot read {body[1:]}: {e.strerror}") from e
    try:
        json.loads(body)
    except ValueError as e:
        raise RequestError(f"the payload is not valid JSON: {e}") from e
    return body


def post_json(url: str, body: str, timeout: float) -> tuple[int | None, str]:
    """POST `body` to `url`: (None, the answer) when it was served, (the HTTP status, the answer)
    when the API answered an error; RequestError when it could not be reached."""
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return None, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        raise RequestError(f"could not reach {url}: {e}") from e
