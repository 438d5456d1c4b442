"""What a newcomer trips on, through the real CLI: a closed stdout, a failed `up`, an API
on a host without a GPU, why Docker was not used, the GPU line. Real daemon, loopback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from cortexd.nvml import read_inventory
from tests.builders import OK_PREDICTOR, write_project
from tests.real_daemon import REPO, free_port


def project(tmp_path, name="hello", port=None, gpu=0):
    port = port or free_port()
    compute = f"\n  compute:\n    gpu: {gpu}" if gpu else ""
    yaml_text = (f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                 f"    path: predictor.py\n  networking:\n    local_port: {port}{compute}\n")
    return write_project(tmp_path / name, yaml_text, {"predictor.py": OK_PREDICTOR}), port


def into_closed_pipe(cli, *args: str) -> tuple[int, str]:
    """Run `cortexd ARGS` with its stdout a pipe whose reader has gone (`cortexd get | head`)."""
    read_end, write_end = socket.socketpair()  # like a pipe; closed before the command writes
    read_end.close()
    p = subprocess.run([sys.executable, "-m", "cortexd", *args], env=cli.env, cwd=str(REPO),
                       stdout=write_end.fileno(), stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    write_end.close()
    return p.returncode, p.stderr


def test_a_closed_stdout_ends_quietly_for_every_command(cli, tmp_path):
    path, _ = project(tmp_path)
    code, err = into_closed_pipe(cli, "validate", str(path))
    assert (code, err) == (141, ""), err  # 128 + SIGPIPE, as `cat` ends; no traceback
    cli("up", "-d", "--backend", "process", "--wait", "60", str(path), check=True)
    for args in (["get"], ["get", "-o", "json"], ["get", "hello"], ["status", "--once"],
                 ["logs", "hello"], ["version"]):
        code, err = into_closed_pipe(cli, *args)
        assert (code, err) == (141, ""), (args, err)


def test_a_failed_up_shows_only_the_lines_of_this_start(cli, tmp_path):
    cli.home.mkdir(parents=True, exist_ok=True)
    stale = ("2026-11-30 10:00:00 ERROR Traceback (most recent call last):\n"
             "2026-11-30 10:00:00 ERROR OtherProjectError: from another project, days ago\n")
    (cli.home / "daemon.log").write_text(stale * 30)
    with socket.socket() as taken:  # the API's port is taken: this start fails
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        path, port = project(tmp_path, port=taken.getsockname()[1])
        up = cli("up", "-d", "--backend", "process", str(path))
    assert up.code == 1, up
    assert "the daemon exited during start-up" in up.err
    assert str(port) in up.err, up.err  # this start's own reason
    assert "OtherProjectError" not in up.err, up.err


def test_predict_against_a_gpu_api_on_a_host_without_a_gpu_says_so_at_once(cli, tmp_path):
    if read_inventory().devices:
        pytest.skip("this host has GPUs: the API gets one")
    path, _ = project(tmp_path, name="gpu-api", gpu=1)
    cli("up", "-d", "--backend", "process", str(path), check=True)
    cli.wait_for(lambda s: s["apis"][0]["failure"] == "no_gpu_on_host", what="the API in error for a GPU")
    pred = cli("predict", "gpu-api", "{}", timeout=20)  # at once, not after the gateway's wait
    assert pred.code == 1, pred
    assert "HTTP 503" in pred.err and "this host has no GPU" in pred.err, pred.err
    assert "starting" not in pred.err and "waiting for a free GPU" not in pred.err, pred.err


def test_up_says_why_docker_was_not_used(cli, tmp_path):
    path, _ = project(tmp_path)
    cli.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"  # auto finds no engine
    up = cli("up", "-d", str(path), check=True)
    (line,) = [x for x in up.out.splitlines() if x.startswith("backend process:")]
    assert "Docker was not used" in line and "no-engine.sock" in line, line  # the reason
    assert "cortexd up -d" in line and "dockerd" in line, line  # and the remedy
    cli("down", check=True)
    chosen = cli("up", "-d", "--backend", "process", str(path), check=True)
    assert "Docker was not used" not in chosen.out  # chosen: nothing to explain


def test_the_gpu_line_has_one_pair_of_parentheses(cli, tmp_path):
    path, _ = project(tmp_path)
    cli("up", "-d", "--backend", "process", str(path), check=True)
    view = cli("status", "--once", check=True).out
    (line,) = [x for x in view.splitlines() if x.startswith("GPUs")]
    if "no GPU" not in line:
        pytest.skip("this host has GPUs: the line lists them")
    assert "no GPU: " in line and "))" not in line, line
