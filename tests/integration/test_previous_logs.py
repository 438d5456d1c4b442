"""A restarted daemon keeps the previous run's replica logs: `cortexd logs API --previous`.

A replica that crashed with a traceback, then `down` and `up` again: the traceback is what a
user looks for, and `up` used to delete the logs folder with it.
"""

from __future__ import annotations

from tests.builders import realtime_yaml, write_project
from tests.real_daemon import free_port

PREDICTOR = """\
from pathlib import Path


class PythonPredictor:
    def __init__(self, config):
        if (Path(__file__).parent / "crash").exists():
            raise RuntimeError("weights missing in run one")
        print("loaded in run two", flush=True)

    def predict(self, payload):
        return 1
"""


def test_the_previous_runs_traceback_survives_a_restart(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "proj", realtime_yaml("flaky", port), {"predictor.py": PREDICTOR, "crash": ""})
    up = cli("up", "-d", "--backend", "process", "--wait", "60", str(project))
    assert up.code == 1, up  # not serving: the predictor fails in __init__
    cli.wait_for(lambda s: s["apis"][0]["status"] == "error", timeout=60, what="error status")
    assert "RuntimeError: weights missing in run one" in cli("logs", "flaky", check=True).out
    assert cli("logs", "flaky", "--previous").code == 1  # the first run has no previous one
    assert cli("down", check=True).code == 0

    (project / "crash").unlink()
    up = cli("up", "-d", "--backend", "process", "--wait", "60", str(project))
    assert up.code == 0, (up, cli.daemon_log())
    assert "RuntimeError" not in cli("logs", "flaky", check=True).out  # this run's logs are its own
    previous = cli("logs", "flaky", "--previous", check=True).out
    assert "RuntimeError: weights missing in run one" in previous, previous
    assert "loaded in run two" not in previous
    assert "weights missing" in cli("logs", "flaky", "-p", "--tail", "3", check=True).out

    follow = cli("logs", "flaky", "--previous", "-f")
    assert follow.code == 2 and "drop -f" in follow.err, follow
    unknown = cli("logs", "nosuch", "--previous")
    assert unknown.code == 1 and "no api named 'nosuch'" in unknown.err, unknown
    # an API the previous run served but this one does not: its logs are still there
    (cli.home / "logs.previous" / "gone").mkdir()
    (cli.home / "logs.previous" / "gone" / "gone-abc-123.log").write_text("last words\n")
    assert cli("logs", "gone", "--previous", check=True).out == "last words\n"
