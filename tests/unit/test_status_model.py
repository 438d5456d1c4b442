"""The typed status model (cortexd/status.py): one builder, one serialisation.

The JSON pinned here is what `/status` and `cortexd get -o json` answered before the
model existed (a dict built in daemon/running.py and daemon/reconciler.py): the same
keys, in the same order, with the same values.
"""

from __future__ import annotations

import asyncio
import json

from cortexd.daemon.events import Event, EventLog
from cortexd.daemon.reconciler import Reconciler
from cortexd.settings import DaemonSettings
from cortexd.status import DaemonStatus, GPUDevice, GPUStatus, Status, build_status
from tests.builders import rollout_spec
from tests.unit.reconciler_fakes import FakeBackend, FakeClock, FakeGateway


def _world():
    clock = FakeClock()
    backend, gateway = FakeBackend(), FakeGateway()
    ready: set[str] = set()

    async def probe(info):
        return info.replica_id in ready

    rec = Reconciler(backend, gateway, DaemonSettings(), EventLog(clock), clock=clock, probe=probe)
    return rec, backend, gateway, clock, ready


async def _two_apis():
    rec, backend, gateway, clock, ready = _world()
    await rec.apply([rollout_spec("iris", replicas=2), rollout_spec("bert")])
    for _ in range(3):
        await rec.reconcile_once()
        await asyncio.sleep(0)
    first, *_ = sorted(r for r in backend.replicas if r.startswith("iris"))
    ready.add(first)
    await rec.reconcile_once()
    gateway.in_flight[first] = 2
    rec.replica_out_of_rotation("iris", first, "3 connection failures in a row", replace=False,
                                until=clock.now + 10)
    rec.set_desired("iris", 2, "keeping 2 replica(s)")
    return rec


DAEMON = DaemonStatus("0.4.0", 41, "process", None, "127.0.0.1", 192.0, ("/p/cortex.yaml",), None,
                      ("a notice",), "http://127.0.0.1:8889/metrics")
GPUS = GPUStatus((GPUDevice(0, "H100", "GPU-1", 87, 40, 80),), None, "550.54")


def _status(rec) -> Status:
    return build_status(
        DAEMON, rec.api_facts(), rec.replica_facts(), {n: rec.traffic(n) for n in rec.apis},
        [Event(5.0, "info", "replica ready", "iris")], GPUS,
        urls={n: f"http://127.0.0.1:8888/{n}" for n in rec.apis},
        preparing={n: rec.preparing(n) for n in rec.apis}, wall_now=100.0, mono_now=rec.clock())


def test_status_json_is_the_json_status_served_before_the_model():
    rec = asyncio.run(_two_apis())
    got = _status(rec).to_json()
    ids = sorted(r for r in rec.observed if r.startswith("iris"))
    bert = next(r for r in rec.observed if r.startswith("bert"))
    port = {rid: info.port for rid, info in rec.observed.items()}
    spec_hash = {n: s.spec.spec_hash for n, s in rec.apis.items()}

    def replica(rid, state, in_flight=0, health=None):
        return {"id": rid, "state": state, "current": True, "address": f"127.0.0.1:{port[rid]}",
                "age_s": 100.0, "in_flight": in_flight, "gpu_ids": [], "health": health, "backend": {}}

    def api(name, requested, ready, starting, replicas, decision=None):
        return {"name": name, "kind": "RealtimeAPI", "predictor_type": "python", "status": "updating",
                "reason": "preparing the replica image", "endpoint": f"/{name}", "local_port": 8888,
                "spec_hash": spec_hash[name],
                "source": "/p/cortex.yaml:1",
                "replicas": {"requested": requested, "ready": ready, "starting": starting,
                             "pending_reason": None, "restarts": 0, "min": 1, "max": 10},
                "replica_list": replicas, "in_flight": 0, "requests": FakeGateway.COUNTERS,
                "last_decision": decision, "url": f"http://127.0.0.1:8888/{name}",
                "isolation": None, "failure": None,  # (issue 15: who replicas run as; issue 16: the failure's kind)
                "gpu_note": None,  # (issue 17: compute.gpu served on the CPU)
                "pins": [],  # (issue 17: the nearest pins its environment installed)
                "trend": []}  # (issue 19: requests/s over the last 2 minutes, from the console's history)

    expected = {
        "daemon": {"version": "0.4.0", "pid": 41, "backend": "process", "backend_reason": None,
                   "host": "127.0.0.1", "uptime_s": 192.0, "config_files": ["/p/cortex.yaml"],
                   "config_error": None, "notices": ["a notice"],
                   "metrics_url": "http://127.0.0.1:8889/metrics"},
        "apis": [
            api("bert", 1, 0, 1, [replica(bert, "starting")]),
            api("iris", 2, 1, 1, [
                replica(ids[0], "ready", 2, "out of rotation: 3 connection failures in a row"),
                replica(ids[1], "starting")], decision="keeping 2 replica(s)"),
        ],
        "events": [{"at": 5.0, "level": "info", "message": "replica ready", "api": "iris",
                    "kind": None}],  # (issue 19: what it marks on the console's charts)
        "gpus": {"devices": [{"index": 0, "name": "H100", "uuid": "GPU-1", "utilization": 87,
                              "memory_used": 40, "memory_total": 80}],
                 "reason": None, "driver_version": "550.54"},
        "splitters": [],  # (issue 18: traffic splitters)
        "batch_apis": [],  # (issue 18: BatchAPIs)
    }
    assert json.dumps(got) == json.dumps(expected)  # key order too: `-o json` prints it as it comes


def test_status_reads_back_from_its_json_unchanged():
    status = _status(asyncio.run(_two_apis()))
    assert Status.from_json(json.loads(json.dumps(status.to_json()))) == status


def test_gpu_status_is_the_inventory_json_served_before():
    from cortexd.nvml import GPUDevice as Device
    from cortexd.nvml import GPUInventory

    def inventory_json(inventory: GPUInventory) -> dict:  # as the snapshot carried it before the model
        return {"devices": [{"index": d.index, "name": d.name, "uuid": d.uuid, "utilization": d.utilization,
                             "memory_used": d.memory_used, "memory_total": d.memory_total}
                            for d in inventory.devices],
                "reason": inventory.reason, "driver_version": inventory.driver_version}

    inventory = GPUInventory((Device(0, "GPU-1", "H200", 141 * 2**30, 2**30, 12),
                              Device(1, "GPU-2", "H200", 141 * 2**30, 0, None)), None, "560.35")
    assert json.dumps(GPUStatus.of(inventory).to_json()) == json.dumps(inventory_json(inventory))
    none = GPUInventory((), "no NVIDIA driver found", None)
    assert GPUStatus.of(none).to_json() == inventory_json(none)
