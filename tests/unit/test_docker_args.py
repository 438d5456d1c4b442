"""What the Docker backend asks the engine for, and how it reads back what runs (no engine needed).

container_create_args() is the whole of a replica's container definition:
these tests pin the security and resource settings a user relies on.
"""

from __future__ import annotations

import io
import json
import tarfile

import docker.errors
import pytest

from cortexd.backends.docker import (
    IMAGE_USER,
    SPEC_IN_CONTAINER,
    DockerBackend,
    bind_paths,
    container_create_args,
    container_user,
    instance_for_home,
    parse_docker_time,
    parse_dotenv,
    replica_from_attrs,
    spec_archive,
    translate,
)
from cortexd.errors import BackendError, BackendUnavailable
from cortexd.spec.model import (
    APISpec,
    AutoscalingSpec,
    ComputeSpec,
    ModelSpec,
    ModelsSpec,
    NetworkingSpec,
    PredictorSpec,
    UpdateStrategySpec,
)


def make_spec(
    *, cpu: float = 0.5, mem: int | None = None, gpu: int = 0, env=None, python_path="/proj",
    model_path=None, models=None,
) -> APISpec:
    return APISpec(
        name="iris", kind="RealtimeAPI",
        predictor=PredictorSpec(type="python", path="/proj/predictor.py", python_path=python_path,
                                model_path=model_path, models=models, env=env or {}),
        networking=NetworkingSpec(endpoint="/iris"),
        compute=ComputeSpec(cpu=cpu, gpu=gpu, mem=mem),
        autoscaling=AutoscalingSpec(), update_strategy=UpdateStrategySpec(), monitoring=None,
        project_dir="/proj", source_file="/proj/cortex.yaml", source_line=1,
        raw={"name": "iris", "cpu": cpu, "mem": mem, "gpu": gpu},
    )


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
    mounts = args_for(spec)["mounts"]
    assert sorted((m["Source"], m["Target"]) for m in mounts) == [
        ("/libs/shared", "/libs/shared"), ("/models/a", "/models/a"), ("/proj", "/proj"),
    ]
    assert all(m["Type"] == "bind" and m["ReadOnly"] is True for m in mounts)
    assert bind_paths(make_spec(python_path="/proj/src")) == ["/proj"]


def test_environment_layers_dotenv_then_api_env_then_runtime_needs():
    spec = make_spec(python_path="/proj/src", env={"MODE": "api", "PYTHONPATH": "/extra"})
    env = args_for(spec, dotenv={"MODE": "dotenv", "TOKEN": "t"})["environment"]
    assert env["MODE"] == "api" and env["TOKEN"] == "t"
    assert env["PYTHONPATH"] == "/proj/src:/proj:/extra"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/home/cortexd"
    assert args_for(spec, user="1000:1000")["environment"]["HOME"] == "/tmp"
    assert args_for(spec)["working_dir"] == "/proj"


def test_dotenv_parsing():
    text = "# comment\n\nexport A=1\nB = 'two words'\nC=\"x=y\"\nD=plain # trailing\nnot a pair\n"
    assert parse_dotenv(text) == {"A": "1", "B": "two words", "C": "x=y", "D": "plain"}


def test_runtime_spec_travels_inside_the_container():
    spec = make_spec()
    with tarfile.open(fileobj=io.BytesIO(spec_archive(spec))) as tar:
        member = tar.getmember(SPEC_IN_CONTAINER.lstrip("/"))
        assert member.mode == 0o444
        assert json.load(tar.extractfile(member)) == spec.runtime_spec()
    assert args_for(spec)["command"][:2] == ["--spec", SPEC_IN_CONTAINER]


def inspect_attrs(status="running", exit_code=0, oom=False, ports=True) -> dict:
    return {
        "Id": "0123456789abcdef", "Name": "/cortexd-inst-iris-1a2b", "Created": "2024-05-01T10:00:00.5Z",
        "Config": {"Image": "cortexd-python-cpu:abc", "Labels": {
            "cortexd.api": "iris", "cortexd.replica": "iris-1a2b", "cortexd.spec-hash": "h1",
            "cortexd.gpus": "0,2", "cortexd.managed": "true", "cortexd.instance": "inst"}},
        "State": {"Status": status, "ExitCode": exit_code, "OOMKilled": oom, "Error": "",
                  "StartedAt": "2024-05-01T10:00:01.250000000Z"},
        "NetworkSettings": {"Ports": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]} if ports else {}},
    }


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
