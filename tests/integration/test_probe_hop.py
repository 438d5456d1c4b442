"""The daemon's readiness and liveness probe (cortexd/daemon/probe.py) asks on the hop the
gateway's requests take: a process replica's unix socket (--unix-fd) as well as its port."""

from __future__ import annotations

import socket
import time

from cortexd.backends.base import ReplicaInfo
from cortexd.daemon.probe import ReplicaProbe

SERVING = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return "ok"
"""



def info(port: int, sock: str) -> ReplicaInfo:
    return ReplicaInfo(api="a", replica_id="a-1", spec_hash="h", state="running", host="127.0.0.1",
                       port=port, started_at=time.time(), socket=sock)


async def test_a_replica_whose_unix_socket_takes_no_connection_is_not_healthy(runtime, short_dir):
    path = f"{short_dir}/sock"
    rt = runtime(SERVING, unix=path)
    rt.wait_ready()
    probe = ReplicaProbe(5.0)
    try:
        assert await probe.healthy(info(rt.port, path))
        # what the gateway meets once the replica's listener is closed while its port serves on
        # (its predictor closed the inherited descriptor): a socket file nobody listens on
        dead = f"{short_dir}/dead"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
            bound.bind(dead)
            assert not await probe.healthy(info(rt.port, dead))
        assert not await probe.healthy(info(rt.port, f"{short_dir}/missing"))
        assert await probe.healthy(info(rt.port, ""))  # a replica without one: its port alone
    finally:
        await probe.close()
