"""The CLI passes API names to the control socket as one quoted path segment."""

from __future__ import annotations

import pytest

from tests.builders import write_project
from tests.real_daemon import free_port

ECHO = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return payload
"""


@pytest.fixture
def api_a(cli, tmp_path):
    project = write_project(tmp_path / "a", f"""
- name: a
  kind: RealtimeAPI
  predictor:
    type: python
    path: echo.py
  networking:
    local_port: {free_port()}
""", {"echo.py": ECHO})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    return project


def test_delete_and_logs_quote_the_api_name(cli, api_a):
    # 'a?x=1' is not api a with a query string
    result = cli("delete", "a?x=1")
    assert result.code == 1 and "no api named 'a?x=1'" in result.err, result
    assert [a["name"] for a in cli.status()["apis"]] == ["a"]
    result = cli("delete", "a/../a")
    assert result.code == 1 and "no api named" in result.err, result

    # a name with a space is an unknown api, not an http.client.InvalidURL crash
    result = cli("logs", "a b")
    assert result.code == 1 and "no api named 'a b'" in result.err, result
    result = cli("logs", "a?tail=1")
    assert result.code == 1 and "no api named 'a?tail=1'" in result.err, result

    assert cli("logs", "a").code == 0
    assert cli("delete", "a", check=True).out.strip() == "api 'a' deleted"
    assert cli.status()["apis"] == []
