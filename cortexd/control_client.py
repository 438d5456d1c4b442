"""The control API's client: JSON over HTTP on the daemon's unix socket.

The CLI's side of cortexd/daemon/control.py. A socket nobody answers on is
DaemonUnavailable (with the remedy); an answer of 4xx/5xx becomes the error class
the one table of cortexd/errors.py (CONTROL_API_ANSWERS) names for its status.
Blocking (http.client): the CLI has no event loop.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

from cortexd.errors import DaemonUnavailable, error_from_http
from cortexd.settings import DaemonSettings
from cortexd.status import Status
from predictor_runtime.unix_http import UnixHTTPConnection


class ControlClient:
    """Requests to the daemon whose control socket `settings` names."""

    def __init__(self, settings: DaemonSettings, timeout: float = 30.0):
        self.path = str(settings.socket_path)
        self.timeout = timeout

    def _open(self, method: str, url: str, body: Any = None) -> tuple[UnixHTTPConnection, http.client.HTTPResponse]:
        conn = UnixHTTPConnection(self.path, self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, url, body=payload, headers=headers)
            return conn, conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            conn.close()
            raise DaemonUnavailable(
                f"no cortexd daemon is running (control socket {self.path}: {e.strerror}); "
                "start one with `cortexd up -d`"
            ) from e
        except OSError as e:
            conn.close()
            raise DaemonUnavailable(f"the cortexd daemon did not answer on {self.path}: {e}") from e

    def call(self, method: str, url: str, body: Any = None) -> Any:
        """The daemon's JSON answer to one request; a refusal raised as its error class."""
        conn, resp = self._open(method, url, body)
        try:
            data = resp.read()
        finally:
            conn.close()
        doc = _json_body(data)
        if resp.status >= 400:
            raise error_from_http(resp.status, doc.get("error"))
        return doc

    def status(self) -> Status:
        """The daemon's status snapshot (GET /status)."""
        return Status.from_json(self.call("GET", "/status"))

    def stream(self, url: str) -> Iterator[str]:
        """The lines of a streamed answer (GET): the answer's head within the timeout, then its
        lines without one (`logs -f` waits for new lines as long as they take)."""
        conn, resp = self._open("GET", url)
        try:
            if conn.sock is not None:
                conn.sock.settimeout(None)
            if resp.status >= 400:
                raise error_from_http(resp.status, _json_body(resp.read()).get("error"))
            while True:
                line = resp.readline()
                if not line:
                    return
                yield line.decode("utf-8", "replace").rstrip("\n")
        finally:
            conn.close()


def _json_body(data: bytes) -> Any:
    """An answer's JSON; text that is not JSON as the error it says."""
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {"error": data.decode("utf-8", "replace")}
