"""`cortexd build`'s pure parts: push progress lines, the refused-push message, the in-flight gauge."""

from __future__ import annotations

import os
import tempfile

from prometheus_client.parser import text_string_to_metric_families

from cortexd.errors import ExportError
from cortexd.kube.build import PushProgress, push
from predictor_runtime.inflight import METRIC, InFlight, remove_shared_gauge_file, shared_gauge_file
from predictor_runtime.standalone import server_argv


def test_push_progress_says_each_layer_once_per_status():
    lines: list[str] = []
    p = PushProgress(lines.append)
    chunks = [
        {"status": "The push refers to repository [127.0.0.1:5000/iris]"},
        {"status": "Preparing", "id": "a1"},
        {"status": "Pushing", "id": "a1", "progressDetail": {"current": 10, "total": 4096}},
        {"status": "Pushing", "id": "a1", "progressDetail": {"current": 20, "total": 4096}},
        {"status": "Pushing", "id": "a1", "progressDetail": {"current": 4096, "total": 4096}},
        {"status": "Pushed", "id": "a1"},
        {"status": "Layer already exists", "id": "b2"},
    ]
    assert all(p.feed(c) is None for c in chunks)
    assert lines == [
        "  The push refers to repository [127.0.0.1:5000/iris]",
        "  a1: Preparing",
        "  a1: Pushing 4.0 KiB: 0%",
        "  a1: Pushing 4.0 KiB: 100%",
        "  a1: Pushed",
        "  b2: Layer already exists",
    ]


class RefusingAPI:
    def push(self, repository, tag, stream, decode):
        assert (repository, tag, stream, decode) == ("127.0.0.1:5000/team/iris", "abc", True, True)
        yield {"status": "Preparing", "id": "a1"}
        yield {"errorDetail": {"message": "unauthorized: authentication required"},
               "error": "unauthorized: authentication required"}


class FakeClient:
    api = RefusingAPI()


def test_a_refused_push_names_the_registry_and_its_answer():
    lines: list[str] = []
    try:
        push(FakeClient(), "127.0.0.1:5000/team/iris:abc", lines.append)
    except ExportError as e:
        message = str(e)
    else:
        raise AssertionError("a refused push raised nothing")
    assert message == ("pushing 127.0.0.1:5000/team/iris:abc failed; the registry 127.0.0.1:5000 answered: "
                       "unauthorized: authentication required")


def test_in_flight_gauge_sums_the_workers_slots(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    try:
        path = shared_gauge_file(2)
    finally:
        tempfile.tempdir = None
    assert path.startswith(str(tmp_path)) and oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    a = InFlight.shared(path, 1, 2)
    b = InFlight.shared(path, 2, 2)
    a.enter()
    b.enter()
    b.enter()
    assert a.total() == b.total() == 3
    b.leave()
    assert a.total() == 2
    families = list(text_string_to_metric_families(a.exposition().decode()))
    assert [(f.name, f.type, [s.value for s in f.samples]) for f in families] == [(METRIC, "gauge", [2.0])]
    remove_shared_gauge_file(path)
    assert not os.path.exists(os.path.dirname(path))


def test_in_flight_gauge_without_its_file_counts_locally_and_never_follows_a_symlink(tmp_path):
    g = InFlight.shared(str(tmp_path / "missing"), 1, 2)
    g.enter()
    assert g.total() == 1
    (tmp_path / "target").write_bytes(b"\0" * 16)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    planted = InFlight.shared(str(tmp_path / "link"), 1, 2)
    planted.enter()
    assert planted.total() == 1 and (tmp_path / "target").read_bytes() == b"\0" * 16


def test_standalone_serves_the_baked_spec_on_port_8888_or_knatives_port():
    assert server_argv({}, []) == ["--spec", "/etc/cortexd/spec.json", "--host", "0.0.0.0", "--port", "8888"]
    assert server_argv({"PORT": "9000"}, [])[-1] == "9000"
