"""HTTP over a unix socket with the standard library's http.client.

Used where a process talks to the daemon through a socket file: a BatchAPI worker in a container
(the daemon's socket for workers, bound in: batch_worker.py) and the CLI's control API client
(cortexd/control_client.py, which may import this package; this package never imports cortexd).
"""

from __future__ import annotations

import http.client
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose socket is the unix socket at `path` (the Host header says "cortexd")."""

    def __init__(self, path: str, timeout: float):
        super().__init__("cortexd", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock
