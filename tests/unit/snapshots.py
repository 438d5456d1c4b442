"""Status snapshots (the control API's /status model) for renderer tests."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from cortexd.status import Status
from cortexd.ui.view import status_view

NOW = 1_800_000_000.0


def api(name: str, status: str = "live", *, ready: int = 1, requested: int = 1, starting: int = 0,
        pending: str | None = None, reason: str | None = None, monitoring: dict | None = None,
        decision: str | None = None, replicas: list[dict] | None = None) -> dict:
    return {
        "name": name, "kind": "RealtimeAPI", "predictor_type": "python", "status": status,
        "reason": reason, "endpoint": f"/{name}", "local_port": 8888, "spec_hash": "abc123def456",
        "source": "/srv/project/cortex.yaml:1",
        "replicas": {"requested": requested, "ready": ready, "starting": starting,
                     "pending_reason": pending, "restarts": 2, "min": 1, "max": 4},
        "replica_list": replicas if replicas is not None else [
            {"id": f"{name}-r{i}", "state": "ready", "current": True, "address": f"127.0.0.1:4{i}000",
             "age_s": 75.0 + i, "in_flight": 1, "gpu_ids": [], "backend": {"pid": 100 + i}}
            for i in range(ready)
        ],
        "in_flight": 3,
        "requests": {"total": 1240, "2xx": 1200, "4xx": 30, "5xx": 10,
                     "codes": {"200": 1200, "404": 30, "500": 10}, "requests_per_s": 12.5,
                     "latency_window_s": 60, "p50_ms": 1.234, "p99_ms": 45.6, "in_flight": 3,
                     "monitoring": monitoring},
        "last_decision": decision,
        "url": f"http://127.0.0.1:8888/{name}",
    }


CLASSES = {"model_type": "classification", "key": None, "predictions": 1200, "unreadable": 3,
           "classes": [{"class": "setosa", "count": 600}, {"class": "versicolor", "count": 400},
                       {"class": "virginica", "count": 200}],
           "more_classes": 0, "other_predictions": 0}
REGRESSION = {"model_type": "regression", "key": "price", "predictions": 50, "unreadable": 0,
              "min": 1.5, "max": 99.25, "avg": 20.125, "p50": 18.0, "p99": 97.0, "recent": 50}


def snapshot(apis: list[dict], gpus: dict | None = None, events: list[dict] | None = None) -> dict:
    return {
        "daemon": {"version": "0.1.0", "pid": 4242, "backend": "process", "host": "127.0.0.1",
                   "uptime_s": 192.0, "config_files": [], "config_error": None, "notices": [],
                   "metrics_url": "http://127.0.0.1:8889/metrics"},
        "apis": apis,
        "events": events if events is not None else [
            {"at": NOW - 30, "level": "info", "message": "deploying 1 replica(s) at /iris", "api": "iris"},
            {"at": NOW - 3, "level": "info", "message": "replica iris-r0 ready", "api": "iris"},
        ],
        "gpus": gpus if gpus is not None else {"devices": [], "reason": "no NVIDIA driver found",
                                               "driver_version": None},
    }


GPUS = {"devices": [
    {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1", "utilization": 87,
     "memory_used": 40 * 2**30, "memory_total": 80 * 2**30},
    {"index": 1, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-2", "utilization": None,
     "memory_used": 512 * 2**20, "memory_total": 80 * 2**30},
], "reason": None, "driver_version": "550.54"}


def render(snap: dict, width: int) -> str:
    """The live view of `snap` at `now` NOW, as plain text `width` columns wide (checked)."""
    console = Console(file=StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(status_view(Status.from_json(snap), NOW))
    text = console.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    return text


# a BatchAPI with one running job and one that ended (the live view, the console, get)
def job(job_id: str, status: str = "status_running", ended: float | None = None, **counts) -> dict:
    return {"job_id": job_id, "status": status, "created": NOW - 65, "ended": ended, "workers": 2,
            "workers_running": 0 if ended else 2, "queued": 50, "running": 2, "succeeded": 45, "failed": 3,
            "items_succeeded": 450, "avg_batch_s": 0.5, **counts}


BATCH = {"name": "sum", "url": "http://127.0.0.1:8888/sum", "jobs": 4, "running": 2,
         "job_list": [job("3f2a9c0d1e2f3a4b"),
                      job("9d01b7c2e4f6a8b0", "status_succeeded", NOW - 5, queued=0, running=0, failed=0,
                          succeeded=100)],
         "jobs_by_status": {"status_running": 2, "status_succeeded": 1, "status_stopped": 1},
         "batches_succeeded": 345, "batches_failed": 3, "items_succeeded": 3450, "workers_running": 4}
