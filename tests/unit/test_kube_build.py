"""`cortexd build`'s pure parts: push progress lines, the refused-push message, the in-flight gauge."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from cortexd.errors import ExportError
from cortexd.kube.build import PushProgress, push
from predictor_runtime.inflight import METRIC, InFlight
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


def test_in_flight_gauge_sums_the_workers_slots(tmp_path):
    a = InFlight.shared("g", 1, 2, folder=str(tmp_path))
    b = InFlight.shared("g", 2, 2, folder=str(tmp_path))
    a.enter()
    b.enter()
    b.enter()
    assert a.total() == b.total() == 3
    b.leave()
    assert a.total() == 2
    families = list(text_string_to_metric_families(a.exposition().decode()))
    assert [(f.name, f.type, [s.value for s in f.samples]) for f in families] == [(METRIC, "gauge", [2.0])]


def test_in_flight_gauge_without_a_writable_temp_dir_counts_locally(tmp_path):
    g = InFlight.shared("g", 1, 2, folder=str(tmp_path / "missing"))
    g.enter()
    assert g.total() == 1


def test_standalone_serves_the_baked_spec_on_port_8888_or_knatives_port():
    assert server_argv({}, []) == ["--spec", "/etc/cortexd/spec.json", "--host", "0.0.0.0", "--port", "8888"]
    assert server_argv({"PORT": "9000"}, [])[-1] == "9000"
