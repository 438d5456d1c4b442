"""Renderers of the status snapshot: the live view (rich) and `cortexd get` (plain text).

Each view is rendered to a fixed-width StringIO console, as rich's own tests do,
and the text a user would read is asserted.
"""

from __future__ import annotations

import pytest

from cortexd.status import APIStatus, Status
from cortexd.ui.logs import log_line, replica_colour
from cortexd.ui.text import api_detail, api_table
from tests.unit.snapshots import CLASSES, GPUS, NOW, REGRESSION, api, render, snapshot

WIDTHS = [80, 120]


def flat(text: str) -> str:
    """The text with line breaks and runs of spaces folded (wrapping differs per width)."""
    return " ".join(text.split())


@pytest.mark.parametrize("width", WIDTHS)
def test_live_api(width):
    snap = snapshot([api("iris-classifier", monitoring=CLASSES,
                         decision="keeping 1 replica(s): avg in-flight 0.20 / target 1")])
    text = render(snap, width)
    row = next(line for line in text.splitlines() if line.startswith("iris-classifier "))
    assert row.split() == ["iris-classifier", "live", "1/1", "3", "12.5", "1.2ms", "46ms", "1200/30/10"]
    for header in ("API", "STATUS", "READY", "IN-FL", "REQ/S", "P50", "P99", "2XX/4XX/5XX"):
        assert header in text
    f = flat(text)
    assert "iris-classifier · http://127.0.0.1:8888/iris-classifier" in f
    assert "autoscaler keeping 1 replica(s): avg in-flight 0.20 / target 1" in f
    assert "monitoring classification: setosa 600 · versicolor 400 · virginica 200 · 3 unreadable" in f
    assert "cortexd 0.1.0 · backend process · pid 4242 · up 3m12s" in f
    assert "no GPU: no NVIDIA driver found" in f
    assert "3s iris replica iris-r0 ready" in f and "30s iris deploying 1 replica(s) at /iris" in f


@pytest.mark.parametrize("width", WIDTHS)
def test_updating_api_with_a_pending_replica(width):
    snap = snapshot([api("sentiment", "updating", ready=1, requested=3, starting=1, monitoring=REGRESSION,
                         pending="pending: api 'sentiment' needs 1 GPU(s), 0 of 1 free")])
    text = render(snap, width)
    row = next(line for line in text.splitlines() if line.startswith("sentiment "))
    assert row.split()[:3] == ["sentiment", "updating", "1/3+1"]
    f = flat(text)
    assert "pending pending: api 'sentiment' needs 1 GPU(s), 0 of 1 free" in f
    # [price] is shown as written, not eaten as rich markup
    assert "regression [price]: min 1.5 · max 99.25 · avg 20.12 · p50 18 · p99 97" in f


@pytest.mark.parametrize("width", WIDTHS)
def test_api_in_error_shows_the_reason(width):
    reason = ("predictor __init__ failed; last log lines:\nTraceback (most recent call last):\n"
              '  File "predictor.py", line 3, in __init__\nRuntimeError: weights not found [models/w.bin]')
    snap = snapshot([api("broken", "error", ready=0, requested=1, reason=reason, replicas=[])])
    text = render(snap, width)
    row = next(line for line in text.splitlines() if line.startswith("broken "))
    assert row.split()[:3] == ["broken", "error", "0/1"]
    f = flat(text)
    assert "error predictor __init__ failed; last log lines:" in f
    assert "RuntimeError: weights not found [models/w.bin]" in f


@pytest.mark.parametrize("width", WIDTHS)
def test_gpus_present(width):
    text = render(snapshot([api("gpu-api")], gpus=GPUS), width)
    lines = text.splitlines()
    gpu0 = next(line for line in lines if line.startswith("0 "))
    assert "NVIDIA H100" in gpu0 and "87%" in gpu0 and "40.0GiB/80.0GiB 50%" in gpu0
    gpu1 = next(line for line in lines if line.startswith("1 "))
    assert " - " in gpu1 and "512MiB/80.0GiB 1%" in gpu1  # utilization unsupported: "-"
    assert "no GPU" not in text


@pytest.mark.parametrize("width", WIDTHS)
def test_gpus_absent_and_no_apis(width):
    snap = snapshot([], gpus={"devices": [], "reason": "nvidia-ml-py is not installed",
                              "driver_version": None}, events=[])
    f = flat(render(snap, width))
    assert "no apis deployed" in f
    assert "GPUs no GPU: nvidia-ml-py is not installed" in f
    assert "events none yet" in f


def test_gpu_reason_with_its_own_parentheses_is_not_wrapped_in_more():
    snap = snapshot([], gpus={"devices": [], "driver_version": None,
                              "reason": "no NVIDIA driver found (NVML: NVML Shared Library Not Found)"})
    f = flat(render(snap, 100))
    assert "GPUs no GPU: no NVIDIA driver found (NVML: NVML Shared Library Not Found)" in f
    assert "))" not in f


def test_long_api_names_still_fit_80_columns():
    snap = snapshot([api("a-very-long-api-name-that-goes-on-and-on-and-on", monitoring=CLASSES)])
    render(snap, 80)  # the width assertion is inside render()


def test_config_error_and_event_levels():
    snap = snapshot([api("iris")], events=[
        {"at": NOW - 5, "level": "error", "api": None,
         "message": "configuration rejected; the previous version keeps serving. cortex.yaml:3:5 ..."},
    ])
    snap["daemon"]["config_error"] = "cortex.yaml:3:5: api 'iris': predictor.type: expected one of ..."
    f = flat(render(snap, 80))
    assert "configuration rejected (the previous one keeps serving): cortex.yaml:3:5" in f
    assert "5s configuration rejected; the previous version keeps serving." in f


def test_get_detail_has_replicas_latency_codes_and_monitoring():
    many = dict(CLASSES, classes=[{"class": f"c{i}", "count": 100 - i} for i in range(20)],
                more_classes=7, other_predictions=12)
    text = api_detail(APIStatus.from_json(api("iris", monitoring=many, ready=2, requested=2)))
    assert "replicas:   2 ready / 2 requested (min 1, max 4, restarts 2)" in text
    assert "requests:   2xx/4xx/5xx 1200/30/10 (200: 1200, 404: 30, 500: 10)" in text
    assert "latency:    p50 1.2ms, p99 46ms (last 60s); 12.5 req/s" in text
    replica_rows = [line.split() for line in text.splitlines() if line.startswith("iris-r")]
    assert replica_rows[0][:4] == ["iris-r0", "ready", "127.0.0.1:40000", "1m15s"]
    assert "CLASS" in text and "c19" in text and "and 7 more (12 predictions)" in text
    regression = api_detail(APIStatus.from_json(api("price", monitoring=REGRESSION)))
    assert regression.splitlines()[-2].split() == ["MIN", "MAX", "AVG", "P50", "P99"]
    assert regression.splitlines()[-1].split() == ["1.5", "99.25", "20.12", "18", "97"]


def test_get_table_has_rate_and_latency():
    table = api_table(Status.from_json(snapshot([api("iris")])))
    assert table.splitlines()[1].split()[:7] == ["iris", "live", "1/1", "3", "12.5", "1.2ms/46ms", "1200/30/10"]


def test_log_lines_colour_the_replica_prefix():
    text = log_line("iris-3f2a | hello | world")
    assert text.plain == "iris-3f2a | hello | world"
    assert text.spans[0].style == replica_colour("iris-3f2a")
    assert replica_colour("iris-3f2a") == replica_colour("iris-3f2a")
    assert log_line("a plain line | with a bar").spans == []


NOT_ISOLATED = {"runs_as": "root (not isolated from other APIs)", "isolated": False,
                "notice": "api 'iris': replicas run as root, not isolated from other APIs: a uid of their "
                          "own (uid 70001) could not run them, because the Python interpreter "
                          "/root/.pyenv/bin/python is not reachable by other users (/root)",
                "limits": {"memory": "not limited (compute.mem is not set)",
                           "pids": "512 processes and threads (cgroup v1)"}}


@pytest.mark.parametrize("width", WIDTHS)
def test_an_api_a_root_daemon_could_not_isolate_says_so_in_the_live_view(width):
    snap = snapshot([dict(api("iris"), isolation=NOT_ISOLATED), dict(api("other"), isolation=None)])
    f = flat(render(snap, width))
    assert f.count("isolation api 'iris': replicas run as root, not isolated") == 1
    assert "(/root)" in f


def test_get_detail_says_who_replicas_run_as_and_which_limits_hold():
    text = api_detail(APIStatus.from_json(dict(api("iris"), isolation=NOT_ISOLATED)))
    assert "runs as:    root (not isolated from other APIs)" in text
    assert ("limits:     memory not limited (compute.mem is not set); "
            "pids 512 processes and threads (cgroup v1)") in text
    assert "isolation:  api 'iris': replicas run as root" in text
    plain = api_detail(APIStatus.from_json(api("iris")))  # before its first replica: nothing said
    assert "runs as:" not in plain and "isolation:" not in plain


PINS = ["scikit-learn==0.21.3 -> 1.1.3: 0.21.3 has no build for Python 3.11",
        "transformers==2.9.* -> 4.30.0: it needs tokenizers==0.7.0: 0.7.0 has no build for Python 3.11"]


@pytest.mark.parametrize("width", WIDTHS)
def test_the_nearest_pins_an_api_runs_with_are_said_in_the_live_view(width):
    f = flat(render(snapshot([dict(api("iris"), pins=PINS), api("other")]), width))
    assert f.count("pins scikit-learn==0.21.3 -> 1.1.3: 0.21.3 has no build for Python 3.11") == 1
    assert "transformers==2.9.* -> 4.30.0: it needs tokenizers==0.7.0" in f


def test_get_detail_says_each_nearest_pin():
    lines = api_detail(APIStatus.from_json(dict(api("iris"), pins=PINS))).splitlines()
    at = lines.index(f"pins:       {PINS[0]}")
    assert lines[at + 1] == f"            {PINS[1]}"
    assert "pins:" not in api_detail(APIStatus.from_json(api("iris")))  # a snapshot without the field
@pytest.mark.parametrize("width", WIDTHS)
def test_an_api_whose_replicas_lack_mnt_project_says_so_in_the_live_view(width):
    missing = {**NOT_ISOLATED, "notice": None, "project_mount_available": False,
               "project_mount": "not available: this host has no /mnt folder; use the Docker backend"}
    there = {**missing, "project_mount_available": True, "project_mount": "the project, read-only"}
    f = flat(render(snapshot([dict(api("iris"), isolation=missing), dict(api("other"), isolation=there)]), width))
    assert f.count("/mnt/project not available: this host has no /mnt folder") == 1
    assert "the project, read-only" not in f  # only what is missing is worth a line there


@pytest.mark.parametrize("width", WIDTHS)
def test_an_api_with_recent_traffic_shows_its_trend(width):
    busy = {**api("iris"), "trend": [0.0, 2.0, 4.0, 8.0]}
    quiet = {**api("idle"), "trend": [0.0, 0.0]}
    text = render(snapshot([busy, quiet]), width)
    assert "▁▃▅█ req/s, last 2 min (max 8.0)" in text
    assert text.count("trend") == 1  # an API without traffic has no trend line
