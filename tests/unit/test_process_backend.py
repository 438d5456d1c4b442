"""The process backend without replicas running predictors: environment, start errors, leftovers.

Reaping real leftover processes: tests/integration/test_process_leftovers.py."""

from __future__ import annotations

import os

import pytest

from cortexd.backends.process import ProcessBackend
from cortexd.backends.replica_launch import replica_environment
from cortexd.errors import BackendError
from tests.builders import make_spec


def test_replica_environment_numbers_gpus_in_pci_bus_order_like_nvml(tmp_path):
    spec = make_spec(tmp_path, env={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    env = replica_environment(spec, (2, 0), {"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,0"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    env = replica_environment(make_spec(tmp_path), (), {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_replica_environment_takes_nothing_of_the_daemons_but_what_the_runtime_needs(tmp_path):
    daemon = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC", "CUDA_HOME": "/cuda",
              "CORTEXD_HOME": "/root/.cortexd", "AWS_SECRET_ACCESS_KEY": "s", "PYTHONPATH": "/daemon",
              "HOME": "/root", "PIP_INDEX_URL": "https://idx", "VIRTUAL_ENV": "/venv"}
    spec = make_spec(tmp_path, env={"MODE": "env", "ONLY_ENV": "1"})
    env = replica_environment(spec, (), daemon, dotenv={"MODE": "dotenv", "TOKEN": "t"},
                              home="/tmp/private/home", user="nobody")
    assert {k: env[k] for k in ("PATH", "LANG", "LC_ALL", "TZ", "CUDA_HOME")} == {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC", "CUDA_HOME": "/cuda"}
    for leaked in ("CORTEXD_HOME", "AWS_SECRET_ACCESS_KEY", "PIP_INDEX_URL", "VIRTUAL_ENV"):
        assert leaked not in env
    assert env["HOME"] == "/tmp/private/home" and env["USER"] == "nobody"
    assert (env["MODE"], env["ONLY_ENV"], env["TOKEN"]) == ("dotenv", "1", "t")  # .env wins, as in Cortex
    assert "/daemon" not in env["PYTHONPATH"].split(os.pathsep)
    assert replica_environment(spec, (), {})["PATH"] == os.defpath


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

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("cortexd.backends.replica_launch.write_private", full)
    backend = ProcessBackend(tmp_path / "run", tmp_path / "logs")
    with pytest.raises(BackendError, match=r"api 'echo'.*No space left on device.*echo-1\.json"):
        await backend.start(make_spec(tmp_path), "echo-1")


def test_reap_leftovers_without_run_dir_does_nothing(tmp_path):
    assert ProcessBackend(tmp_path / "missing", tmp_path / "logs").reap_leftovers() == []


def test_replica_user_setting(monkeypatch):
    from cortexd.backends.isolation import resolve_replica_user

    assert resolve_replica_user("", daemon_uid=0) is None  # a root daemon's default: a uid per API
    assert resolve_replica_user("root", daemon_uid=0).uid == 0  # the explicit opt-out
    assert resolve_replica_user("nobody", daemon_uid=0).drops(0)
    with pytest.raises(BackendError, match=r"replica user 'no-such-user-x' does not exist.*--replica-user"):
        resolve_replica_user("no-such-user-x", daemon_uid=0)
    with pytest.raises(BackendError, match=r"only a root daemon can run replicas as another user"):
        resolve_replica_user("nobody", daemon_uid=1234)
    if os.getuid() != 0:  # a non-root daemon's replicas run as its own user
        assert resolve_replica_user("", daemon_uid=os.getuid()).uid == os.getuid()
