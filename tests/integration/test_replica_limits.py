"""The daemon's request limits reach its replicas: the runtime enforces the same decoded-body
limit and request timeout as the gateway (DaemonSettings.replica_limits), on the process backend."""

from __future__ import annotations

import gzip
import json

from tests.builders import realtime_yaml, write_project
from tests.real_daemon import free_port, http, post_json

ENV_PREDICTOR = '''
import os


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {k: os.environ.get(k) for k in ("CORTEXD_MAX_BODY_SIZE", "CORTEXD_REQUEST_TIMEOUT")}
'''


def test_replicas_get_the_daemons_body_limit_and_request_timeout(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "limits", realtime_yaml("limits", port), {"predictor.py": ENV_PREDICTOR})
    cli.env["CORTEXD_UPSTREAM_TIMEOUT"] = "7"
    cli("up", "-d", "--wait", "60", "--backend", "process", str(project), check=True)
    url = f"http://127.0.0.1:{port}/limits"
    code, _, body = post_json(url, {})
    assert code == 200, body
    assert json.loads(body) == {"CORTEXD_MAX_BODY_SIZE": str(32 * 2**20), "CORTEXD_REQUEST_TIMEOUT": "7"}

    # and the runtime holds the limit on the decoded body: 1 KiB on the wire, 33 MiB inflated
    bomb = gzip.compress(b"0" * (33 * 2**20))
    code, _, body = http("POST", url, bomb, {"Content-Type": "application/octet-stream",
                                             "Content-Encoding": "gzip"})
    assert code == 413, body
