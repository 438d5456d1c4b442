"""What the Docker backend asks the engine for, and how it reads back what runs (no engine needed).

container_create_args() is the whole of a replica's container definition:
these tests pin the security and resource settings a user relies on.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile

import docker.errors
import pytest

from cortexd.backends.container_args import (
    IMAGE_USER,
    NETWORK_OPTIONS,
    SPEC_IN_CONTAINER,
    bind_paths,
    container_create_args,
    container_user,
    instance_for_home,
    spec_archive,
)
from cortexd.backends.container_state import (
    engine_reaches_containers,
    parse_docker_time,
    replica_from_attrs,
)
from cortexd.backends.docker import DockerBackend
from cortexd.backends.docker_engine import translate
from cortexd.backends.isolation import parse_dotenv, read_dotenv
from cortexd.errors import BackendError, BackendUnavailable
from cortexd.spec.model import (
    APISpec,
    ComputeSpec,
    ModelSpec,
    ModelsSpec,
)
from predictor_runtime.contract import RuntimeSpec
from tests.builders import api_spec


def make_spec(
    *, cpu: float = 0.5, mem: int | None = None, gpu: int = 0, env=None, python_path="/proj",
    model_path=None, models=None, project_dir="/proj",
) -> APISpec:
    return api_spec("iris", project_dir, raw={"name": "iris", "cpu": cpu, "mem": mem, "gpu": gpu},
                    python_path=python_path, model_path=model_path, models=models, env=env,
                    compute=ComputeSpec(cpu=cpu, gpu=gpu, mem=mem))


def args_for(spec: APISpec, gpu_ids=(), **kw) -> dict:
    return container_create_args(spec, "iris-1a2b", tuple(gpu_ids), "cortexd-python-cpu:abc", instance="inst", **kw)


def test_port_is_published_on_loopback_only_with_an_ephemeral_host_port():
    a = args_for(make_spec())
    assert a["ports"] == {"8888/tcp": ("127.0.0.1", None)}
    assert a["command"][-4:] == ["--host", "0.0.0.0", "--port", "8888"]  # inside the container's own netns


def test_container_is_unprivileged():
    a = args_for(make_spec())
    assert a["user"] == IMAGE_USER == "10001:10001"
    assert a["security_opt"] == ["no-new-privileges"]
    assert a["cap_drop"] == ["ALL"]
    assert "privileged" not in a and "cap_add" not in a
    assert args_for(make_spec(), user=container_user(1000, 1000))["user"] == "1000:1000"
    assert container_user(0, 0) == IMAGE_USER  # root is never passed through


def test_cpu_and_memory_are_hard_limits():
    a = args_for(make_spec(cpu=1.5, mem=512 * 2**20))
    assert a["nano_cpus"] == 1_500_000_000
    assert a["mem_limit"] == 512 * 2**20
    assert args_for(make_spec(cpu=0.2))["nano_cpus"] == 200_000_000
    assert "mem_limit" not in args_for(make_spec(mem=None))


def test_gpus_are_requested_by_explicit_device_ids():
    a = args_for(make_spec(gpu=2), gpu_ids=(1, 3))
    [req] = a["device_requests"]
    assert req["Driver"] == "nvidia"
    assert req["DeviceIDs"] == ["1", "3"]
    assert req["Capabilities"] == [["gpu"]]
    assert req["Count"] == 0  # never "all": only the ids placement chose
    assert a["labels"]["cortexd.gpus"] == "1,3"
    assert "device_requests" not in args_for(make_spec())


def test_labels_record_what_runs():
    spec = make_spec()
    a = args_for(spec)
    assert a["labels"] == {
        "cortexd.managed": "true", "cortexd.instance": "inst", "cortexd.api": "iris",
        "cortexd.replica": "iris-1a2b", "cortexd.spec-hash": spec.spec_hash, "cortexd.gpus": "",
    }
    assert a["name"] == "cortexd-inst-iris-1a2b"


def test_project_and_outside_paths_are_mounted_read_only_at_the_same_path():
    spec = make_spec(
        python_path="/libs/shared", model_path="/proj/model",
        models=ModelsSpec(paths=(ModelSpec("a", "/models/a"), ModelSpec("b", "s3://bucket/b"),
                                 ModelSpec("c", "/models/a/v2"))),
    )
    mounts = [m for m in args_for(spec)["mounts"] if m["Type"] == "bind"]
    assert sorted((m["Source"], m["Target"]) for m in mounts) == [
        ("/libs/shared", "/libs/shared"), ("/models/a", "/models/a"),
        ("/proj", "/mnt/project"),  # also where Cortex mounted it
        ("/proj", "/proj"),
    ]
    assert all(m["ReadOnly"] is True for m in mounts)
    assert bind_paths(make_spec(python_path="/proj/src")) == ["/proj"]


def test_the_project_is_at_mnt_project_unless_a_folder_is_in_the_way():
    def binds(spec: APISpec) -> list[tuple[str, str]]:
        return sorted((m["Source"], m["Target"]) for m in args_for(spec)["mounts"] if m["Type"] == "bind")

    # a project that is at /mnt/project on the host is mounted there once
    at_mount_point = make_spec(project_dir="/mnt/project", python_path="/mnt/project")
    assert binds(at_mount_point) == [("/mnt/project", "/mnt/project")]
    assert DockerBackend(instance="i", base_url="unix:///nonexistent/docker.sock").notices(at_mount_point) == []
    # a model folder under /mnt/project would be hidden by the mount: no /mnt/project, and `up` says why
    hidden = make_spec(model_path="/mnt/project/models")
    assert ("/proj", "/mnt/project") not in binds(hidden)
    (notice,) = DockerBackend(instance="i", base_url="unix:///nonexistent/docker.sock").notices(hidden)
    assert "not mounted at /mnt/project" in notice and "/mnt/project/models lies under /mnt/project" in notice
    # a project holding /mnt (the engine would create /mnt/project in it, on the host)
    assert ("/mnt", "/mnt/project") not in binds(make_spec(project_dir="/mnt", python_path="/mnt"))


def test_environment_layers_api_env_then_dotenv_then_runtime_needs():
    # Cortex sourced .env after the API's env: .env wins
    spec = make_spec(python_path="/proj/src", env={"MODE": "api", "PYTHONPATH": "/extra", "KEEP": "k"})
    env = args_for(spec, dotenv={"MODE": "dotenv", "TOKEN": "t"})["environment"]
    assert env["MODE"] == "dotenv" and env["TOKEN"] == "t" and env["KEEP"] == "k"
    assert env["PYTHONPATH"] == "/proj/src:/proj:/extra"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/home/cortexd"
    assert args_for(spec, user="1000:1000")["environment"]["HOME"] == "/tmp"
    assert args_for(spec)["working_dir"] == "/proj"


def test_dotenv_parsing():
    text = ("# comment\n\nexport A=1\nB = 'two words'\nC=\"x=y\"\nD=plain # trailing\nNOVALUE\n"
            "E=${HOME}\nF=\"two\nlines\"\n")
    # python-dotenv's syntax; ${VAR} is kept literally: the daemon's environment never leaks in
    assert parse_dotenv(text) == {"A": "1", "B": "two words", "C": "x=y", "D": "plain",
                                  "E": "${HOME}", "F": "two\nlines"}


def test_dotenv_file_overrides_api_env_in_the_container_args(tmp_path):
    (tmp_path / ".env").write_text("MODE=from-dotenv\n")
    spec = make_spec(env={"MODE": "from-env", "OTHER": "o"})
    env = args_for(spec, dotenv=read_dotenv(tmp_path, "iris"))["environment"]
    assert env["MODE"] == "from-dotenv" and env["OTHER"] == "o"
    assert read_dotenv(tmp_path / "missing", "iris") == {}


def test_unreadable_dotenv_is_a_backend_error_naming_it(tmp_path):
    (tmp_path / ".env").write_bytes(b"A=\xff\xfe\n")
    with pytest.raises(BackendError, match=r"api 'iris': cannot read .*\.env"):
        read_dotenv(tmp_path, "iris")


def test_root_filesystem_is_read_only_with_tmpfs_for_what_the_runtime_writes():
    a = args_for(make_spec())
    assert a["read_only"] is True
    assert set(a["tmpfs"]) == {"/tmp", "/home/cortexd"}
    assert "mode=1777" in a["tmpfs"]["/tmp"]
    assert "uid=10001" in a["tmpfs"]["/home/cortexd"] and a["environment"]["HOME"] == "/home/cortexd"
    # a host uid's HOME is /tmp, already writable
    assert set(args_for(make_spec(), user="1000:1000")["tmpfs"]) == {"/tmp"}
    [spec_volume] = [m for m in a["mounts"] if m["Type"] == "volume"]
    assert spec_volume["Target"] == "/etc/cortexd" and SPEC_IN_CONTAINER.startswith("/etc/cortexd/")


def _size(options: str) -> int:
    return int(dict(o.split("=", 1) for o in options.split(",") if "=" in o)["size"])


def test_tmpfs_mounts_are_bounded_in_proportion_to_compute_mem_else_one_gib():
    # Docker's default is half of the host's RAM for each: 2 GB went into RAM with no compute.mem
    a = args_for(make_spec())
    assert _size(a["tmpfs"]["/tmp"]) == _size(a["tmpfs"]["/home/cortexd"]) == 2**30
    a = args_for(make_spec(mem=4 * 2**30))
    assert _size(a["tmpfs"]["/tmp"]) == _size(a["tmpfs"]["/home/cortexd"]) == 2 * 2**30  # half of mem
    assert _size(args_for(make_spec(), user="1000:1000")["tmpfs"]["/tmp"]) == 2**30
    # configured (CORTEXD_TMPFS_SIZE) wins over both
    a = args_for(make_spec(mem=4 * 2**30), tmpfs_bytes=300 * 2**20)
    assert _size(a["tmpfs"]["/tmp"]) == _size(a["tmpfs"]["/home/cortexd"]) == 300 * 2**20


def test_the_tmpfs_size_setting_reads_compute_mems_syntax(monkeypatch):
    from cortexd.errors import CortexdError
    from cortexd.settings import DaemonSettings

    monkeypatch.delenv("CORTEXD_TMPFS_SIZE", raising=False)
    assert DaemonSettings().tmpfs_bytes is None
    monkeypatch.setenv("CORTEXD_TMPFS_SIZE", "512Mi")
    assert DaemonSettings().tmpfs_bytes == 512 * 2**20
    for wrong in ("2GB", "12", "-1"):
        monkeypatch.setenv("CORTEXD_TMPFS_SIZE", wrong)
        with pytest.raises(CortexdError, match="CORTEXD_TMPFS_SIZE=2Gi"):
            DaemonSettings()


def test_pids_limit_and_the_network_without_inter_container_traffic():
    a = args_for(make_spec())
    assert a["pids_limit"] == 512
    assert a["network"] == "cortexd"
    assert NETWORK_OPTIONS == {"com.docker.network.bridge.enable_icc": "false"}
    assert "mem_limit" not in a  # no compute.mem: no memory limit, as in Cortex (README)


def test_runtime_spec_travels_inside_the_container():
    spec = make_spec()
    with tarfile.open(fileobj=io.BytesIO(spec_archive(spec))) as tar:  # extracted in /etc/cortexd
        member = tar.getmember("spec.json")
        assert member.mode == 0o444
        baked = json.load(tar.extractfile(member))
        assert baked == spec.runtime_spec().to_json()
        assert RuntimeSpec.from_json(baked) == spec.runtime_spec()
    assert args_for(spec)["command"][:2] == ["--spec", SPEC_IN_CONTAINER]


def inspect_attrs(status="running", exit_code=0, oom=False, ports=True, network_ip=None) -> dict:
    return {
        "Id": "0123456789abcdef", "Name": "/cortexd-inst-iris-1a2b", "Created": "2024-05-01T10:00:00.5Z",
        "Config": {"Image": "cortexd-python-cpu:abc", "Labels": {
            "cortexd.api": "iris", "cortexd.replica": "iris-1a2b", "cortexd.spec-hash": "h1",
            "cortexd.gpus": "0,2", "cortexd.managed": "true", "cortexd.instance": "inst"}},
        "State": {"Status": status, "ExitCode": exit_code, "OOMKilled": oom, "Error": "",
                  "StartedAt": "2024-05-01T10:00:01.250000000Z"},
        "NetworkSettings": {
            "Ports": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]} if ports else {},
            "Networks": {"cortexd": {"IPAddress": network_ip}} if network_ip else {},
        },
    }


def test_a_running_replica_is_addressed_on_the_cortexd_network_where_the_host_reaches_it():
    # a dead container then refuses connections; docker-proxy's published port accepts and resets
    info = replica_from_attrs(inspect_attrs(network_ip="172.30.0.5"), direct=True)
    assert (info.host, info.port) == ("172.30.0.5", 8888)
    # adopted after a daemon restart: the same attrs give the same address
    assert replica_from_attrs(inspect_attrs(network_ip="172.30.0.5"), direct=True) == info
    # not on the network (made by an older cortexd), or not direct: the published loopback port
    legacy = replica_from_attrs(inspect_attrs(), direct=True)
    assert (legacy.host, legacy.port) == ("127.0.0.1", 49153)
    assert replica_from_attrs(inspect_attrs(network_ip="172.30.0.5")).port == 49153
    assert replica_from_attrs(inspect_attrs("exited", network_ip="172.30.0.5", ports=False), direct=True).port == 0


def test_direct_addressing_only_where_the_host_reaches_container_addresses():
    linux = {"OperatingSystem": "Debian GNU/Linux 12", "SecurityOptions": ["name=seccomp,profile=default"]}
    assert engine_reaches_containers(linux, "linux") is True
    assert engine_reaches_containers({**linux, "SecurityOptions": ["name=rootless"]}, "linux") is False
    assert engine_reaches_containers({"OperatingSystem": "Docker Desktop"}, "linux") is False
    assert engine_reaches_containers(linux, "darwin") is False


def test_running_container_reads_back_as_a_running_replica():
    info = replica_from_attrs(inspect_attrs())
    assert (info.api, info.replica_id, info.spec_hash, info.state) == ("iris", "iris-1a2b", "h1", "running")
    assert (info.host, info.port) == ("127.0.0.1", 49153)
    assert info.gpu_ids == (0, 2) and info.exit_code is None and not info.oom_killed
    assert info.started_at == pytest.approx(1714557601.25)
    assert info.extra["container"] == "0123456789ab"


def test_exited_and_oom_killed_containers_read_back_with_their_exit():
    info = replica_from_attrs(inspect_attrs("exited", exit_code=137, oom=True, ports=False))
    assert info.state == "exited" and info.exit_code == 137 and info.oom_killed is True and info.port == 0
    assert replica_from_attrs(inspect_attrs("created", ports=False)).state == "starting"


def test_docker_timestamps():
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("2024-05-01T10:00:01.123456789+02:00") == pytest.approx(1714550401.123456789)


def test_instances_are_per_daemon_home():
    assert instance_for_home("/home/a/.cortexd") == instance_for_home("/home/a/.cortexd")
    assert instance_for_home("/home/a/.cortexd") != instance_for_home("/home/b/.cortexd")


def test_no_engine_is_reported_with_the_remedy():
    reason = DockerBackend.probe("unix:///nonexistent/docker.sock")
    assert reason is not None
    assert reason.startswith("Couldn't connect to the Docker engine at unix:///nonexistent/docker.sock. Is it running?")
    assert "--backend process" in reason


async def test_backend_calls_without_an_engine_raise_backend_unavailable():
    backend = DockerBackend(instance="x", base_url="unix:///nonexistent/docker.sock")
    with pytest.raises(BackendUnavailable) as e:
        await backend.list()
    assert "Start it with `dockerd`" in str(e.value)
    await backend.close()


def test_missing_nvidia_runtime_is_translated_into_the_fix():
    err = docker.errors.APIError(
        "500 Server Error", explanation='could not select device driver "nvidia" with capabilities: [[gpu]]'
    )
    out = translate(err, "starting a replica of api 'bert'")
    assert isinstance(out, BackendError)
    assert str(out).startswith("starting a replica of api 'bert': Docker cannot give containers GPUs")
    assert "nvidia-container-toolkit" in str(out) and "restart dockerd" in str(out)


def test_a_workers_container_is_a_replicas_with_its_command_its_labels_and_the_socket_bound_in(tmp_path):
    from pathlib import Path

    from cortexd.backends.base import WorkerEndpoint, WorkerLaunch
    from cortexd.backends.container_args import (
        LABEL_REPLICA,
        LABEL_WORKER,
        WORKER_SOCKET,
        managed_filters,
        worker_create_args,
        worker_filters,
    )

    spec = make_spec(mem=2**30, gpu=1, env={"A": "1"})
    launch = WorkerLaunch("job1-worker-2", "predictor_runtime.batch_worker", spec.runtime_spec(),
                          {"CORTEXD_WORKER": "worker-2"},
                          WorkerEndpoint("http://127.0.0.1:9/jobs/job1", "/home/x/jobs.sock", "/jobs/job1"),
                          Path("/home/x/jobs/job1/worker-2.log"), gpu_ids=(1,))
    replica = args_for(spec, gpu_ids=(1,))
    worker = worker_create_args(spec, launch, "cortexd-python-cpu:abc", instance="inst")
    # what a replica has: user, limits, GPUs, hardening, network
    for key in ("user", "mem_limit", "nano_cpus", "pids_limit", "read_only", "cap_drop", "security_opt",
                "network", "tmpfs", "device_requests", "image"):
        assert worker[key] == replica[key], key
    assert "ports" not in worker  # nothing published: it calls the daemon, nobody calls it
    assert worker["entrypoint"] == ["python", "-m", "predictor_runtime.batch_worker"]
    assert worker["command"] == ["--spec", SPEC_IN_CONTAINER]
    assert worker["labels"][LABEL_WORKER] == "job1-worker-2" and LABEL_REPLICA not in worker["labels"]
    assert worker["environment"]["A"] == "1" and worker["environment"]["CORTEXD_WORKER"] == "worker-2"
    assert worker["environment"]["CORTEXD_JOB_SOCKET"] == WORKER_SOCKET
    assert worker["environment"]["CORTEXD_JOB_URL"] == "http://cortexd/jobs/job1"
    (bound,) = [m for m in worker["mounts"] if m["Target"] == WORKER_SOCKET]
    assert bound["Source"] == "/home/x/jobs.sock"
    # replicas are listed without workers, and workers found for cleanup
    assert LABEL_REPLICA in managed_filters("inst")["label"] and LABEL_WORKER in worker_filters("inst")["label"]


def test_a_workers_spec_archive_holds_its_own_runtime_spec():
    spec = make_spec()
    runtime = spec.runtime_spec()
    merged = dataclasses.replace(runtime, predictor=dataclasses.replace(runtime.predictor, config={"job": 1}))
    with tarfile.open(fileobj=io.BytesIO(spec_archive(merged))) as tar:
        member = tar.extractfile("spec.json")
        assert member is not None
        assert RuntimeSpec.loads(member.read().decode()).predictor.config == {"job": 1}
