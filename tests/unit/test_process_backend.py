"""The process backend without replicas running predictors: environment, start errors, leftovers."""

from __future__ import annotations

from cortexd.backends.process import replica_environment
from tests.docker.conftest import make_spec


def test_replica_environment_numbers_gpus_in_pci_bus_order_like_nvml(tmp_path):
    spec = make_spec(tmp_path, env={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    env = replica_environment(spec, (2, 0), {"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,0"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    env = replica_environment(make_spec(tmp_path), (), {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
