"""The process backend without replicas running predictors: environment, start errors, leftovers."""

from __future__ import annotations

import os

import pytest

from cortexd.backends.process import ProcessBackend, replica_environment
from cortexd.errors import BackendError
from tests.docker.conftest import make_spec


def test_replica_environment_numbers_gpus_in_pci_bus_order_like_nvml(tmp_path):
    spec = make_spec(tmp_path, env={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    env = replica_environment(spec, (2, 0), {"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,0"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    env = replica_environment(make_spec(tmp_path), (), {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
async def test_start_with_unwritable_run_dir_is_a_backend_error(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        backend = ProcessBackend(readonly / "run", tmp_path / "logs")
        with pytest.raises(BackendError, match=r"api 'echo'.*cannot write its files.*Permission denied"):
            await backend.start(make_spec(tmp_path), "echo-1")
        assert await backend.list() == []
    finally:
        readonly.chmod(0o700)


async def test_start_with_a_file_where_the_log_dir_goes_is_a_backend_error(tmp_path):
    # works as root too: mkdir below a regular file fails for everyone (ENOTDIR)
    (tmp_path / "logs").write_text("not a folder")
    backend = ProcessBackend(tmp_path / "run", tmp_path / "logs")
    with pytest.raises(BackendError, match=r"api 'echo'.*cannot write its files.*logs"):
        await backend.start(make_spec(tmp_path), "echo-1")
    assert await backend.list() == []


async def test_start_on_a_full_disk_is_a_backend_error(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    backend = ProcessBackend(tmp_path / "run", tmp_path / "logs")
    with pytest.raises(BackendError, match=r"api 'echo'.*No space left on device.*echo-1\.json"):
        await backend.start(make_spec(tmp_path), "echo-1")
