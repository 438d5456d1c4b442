"""A project environment's install log (cortexd-install.log) holds no index credentials and is 0600.

A project pip.conf names a private index with its token in the URL; uv gets the URL on its command
line, which the log records (`$ uv pip install ... --extra-index-url https://user:TOKEN@...`).
The pure masking: tests/unit/test_credentials.py.
"""

from __future__ import annotations

import asyncio
import http.server
import stat
import threading

from cortexd.backends.environments import ProjectEnvironments
from cortexd.spec import load_config
from tests.builders import write_project
from tests.integration.test_environments import PLAIN, _wheel, yaml_for


class _NoPackages(http.server.BaseHTTPRequestHandler):
    """A private index that has none of the packages asked for (404, as PEP 503 indexes answer)."""

    def do_GET(self):
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_the_install_log_masks_the_index_token_and_is_private(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoPackages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = f"http://ci-user:SECRET-TOKEN-123@127.0.0.1:{server.server_address[1]}/simple"
    try:
        project = write_project(tmp_path / "proj", yaml_for("private"), {
            "predictor.py": PLAIN, "requirements.txt": "cortexd-private-probe==1.0\n",
            "pip.conf": f"[global]\nfind-links = wheels\nextra-index-url = {index}\n",
        })
        _wheel(project / "wheels", "cortexd-private-probe", "1.0", "WHERE = 'wheels'\n")
        spec = load_config([str(project)]).apis[0]
        envs = ProjectEnvironments(tmp_path / "envs", use_uv=True)
        env = asyncio.run(envs.ensure(envs.plan(spec), "private"))
    finally:
        server.shutdown()
        server.server_close()
    log = env.path / "cortexd-install.log"
    text = log.read_text()
    assert "SECRET-TOKEN-123" not in text, text
    assert f"ci-user:****@127.0.0.1:{server.server_address[1]}" in text, text  # the command, masked
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
