"""A process replica's files (issue 9.7): HOME persists per API across replica starts (its
~/.cache is downloaded once), TMPDIR is the replica's own, and the in-flight gauge of a
multi-process replica lives in a private folder that is gone once the replica stops."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from tests.builders import write_project
from tests.real_daemon import free_port, post_json

PREDICTOR = textwrap.dedent('''
    import os

    class PythonPredictor:
        def __init__(self, config):
            pass

        def predict(self, payload):
            cache = os.path.join(os.environ["HOME"], ".cache", "model.bin")
            had = os.path.exists(cache)
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            with open(cache, "w") as f:
                f.write("weights")
            with open("/proc/self/maps") as f:
                gauges = sorted({line.split()[-1] for line in f if "in-flight" in line})
            return {"home": os.environ["HOME"], "tmpdir": os.environ.get("TMPDIR"),
                    "cache_was_there": had, "gauges": gauges}
''')

YAML = """
- name: files
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    processes_per_replica: 2
  networking:
    local_port: {port}
"""


def ask(port: int) -> dict:
    status, _, body = post_json(f"http://127.0.0.1:{port}/files", {}, timeout=60)
    assert status == 200, body
    return json.loads(body)


def test_home_persists_across_replica_starts_and_the_gauge_goes_with_the_replica(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "p", YAML.format(port=port), {"predictor.py": PREDICTOR})
    cli.env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")  # where a non-root daemon keeps the HOMEs
    cli("up", "-d", "--backend", "process", "--wait", "90", str(project), check=True)
    first = ask(port)
    tmpdir = first["tmpdir"]
    assert first["home"] != os.environ.get("HOME") and not first["home"].startswith(str(cli.home))
    assert tmpdir and Path(tmpdir).is_dir() and not first["home"].startswith(tmpdir)
    # the gauge of the two workers: in a folder of the replica's own TMPDIR, not /tmp
    assert len(first["gauges"]) == 1 and first["gauges"][0].startswith(tmpdir + "/"), first
    gauge = Path(first["gauges"][0])
    assert gauge.exists()

    cli("down", check=True)
    assert not gauge.exists() and not gauge.parent.exists()
    assert not Path(tmpdir).exists()  # the replica's private folder went with it

    cli("up", "-d", "--backend", "process", "--wait", "90", str(project), check=True)
    second = ask(port)
    assert second["home"] == first["home"] and second["cache_was_there"], second
    assert second["tmpdir"] != tmpdir
    cli("down", check=True)
