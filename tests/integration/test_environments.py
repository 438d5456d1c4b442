"""Project environments on the process backend, through the real CLI and daemon.

The environments are built once per test session in a shared cache (CORTEXD_ENV_CACHE),
so the suite pays for each pip run once. The packages come from the host's index (PyPI
through this host's pip settings): six (the runtime has 1.17; the project pins 1.16),
tomli-w and dill (a Cortex 0.23 pre-installed package), all tiny and pure Python.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.builders import write_project
from tests.real_daemon import free_port, post_json

PREDICTOR = """\
import six
import tomli_w


class PythonPredictor:
    def __init__(self, config):
        import dill  # pre-installed on Cortex 0.23: not in requirements.txt
        self.dill = dill.__name__

    def predict(self, payload):
        return {"six": six.__version__, "six_file": six.__file__,
                "toml": tomli_w.dumps({"a": 1}), "dill": self.dill}
"""

PLAIN = """\
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"ok": True}
"""


def yaml_for(name: str) -> str:
    return f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("envs")


@pytest.fixture
def env_cli(cli, env_cache):
    cli.env["CORTEXD_ENV_CACHE"] = str(env_cache)
    return cli


def _api(snap: dict, name: str) -> dict:
    return next(a for a in snap["apis"] if a["name"] == name)


def _notices(snap: dict, api: str) -> list[str]:
    return [e["message"] for e in snap["events"] if e.get("api") == api and e["level"] == "warning"]


def _wait_for_api(cli, name: str, statuses: tuple[str, ...], timeout: float = 240):
    seen: list[tuple[str, str | None]] = []

    def settled(snap):
        a = _api(snap, name)
        seen.append((a["status"], a["replicas"].get("pending_reason")))
        return a["status"] in statuses

    snap = cli.wait_for(settled, timeout=timeout, what=f"api {name} {statuses}")
    return snap, seen


@pytest.mark.exclusive  # `get` polled by a CLI must catch the install while it runs: a starved CPU misses it
def test_requirements_pin_wins_and_the_environment_is_reused(env_cli, tmp_path, env_cache):
    for module in ("tomli_w", "dill"):
        if importlib.util.find_spec(module) is not None:
            pytest.skip(f"this test needs a Python without {module} (the project installs it)")
    port = free_port()
    project = write_project(tmp_path / "proj", yaml_for("pinned"), {
        "predictor.py": PREDICTOR,
        "requirements.txt": "# six: the runtime has 1.17\nsix==1.16.0\ntomli-w\n",
    })
    env_cli("up", "-d", "--backend", "process", "--port", str(port), "--metrics-port", "0",
            str(project), check=True)
    snap, seen = _wait_for_api(env_cli, "pinned", ("live", "error"))
    assert _api(snap, "pinned")["status"] == "live", _api(snap, "pinned")["reason"]
    # the install showed in `get` while it ran, with the package pip was on
    installing = [p for s, p in seen if s == "updating (installing requirements)"]
    assert installing, seen
    assert any(p and p.startswith("installing requirements: ") for p in installing), installing
    assert "dill: pre-installed on Cortex 0.23, added" in _notices(snap, "pinned")

    code, _, body = post_json(f"http://127.0.0.1:{port}/pinned", {})
    assert code == 200, body
    answer = json.loads(body)
    assert answer["six"] == "1.16.0"  # the project's pin, not the runtime's 1.17
    assert answer["six_file"].startswith(str(env_cache))
    assert answer["toml"] == "a = 1\n" and answer["dill"] == "dill"

    # a second `up` with the same requirements: the same environment, no pip run
    built = {p.name: p.stat().st_mtime_ns for p in env_cache.iterdir()}
    env_cli("down", check=True, timeout=90)
    env_cli("up", "-d", "--backend", "process", "--port", str(port), "--metrics-port", "0",
            str(project), check=True)
    snap, seen = _wait_for_api(env_cli, "pinned", ("live", "error"), timeout=60)
    assert _api(snap, "pinned")["status"] == "live"
    # no install showed and the cache was not touched: no pip run (outcomes, not a timing)
    assert not [s for s, _ in seen if s == "updating (installing requirements)"], seen
    assert {p.name: p.stat().st_mtime_ns for p in env_cache.iterdir()} == built
    code, _, body = post_json(f"http://127.0.0.1:{port}/pinned", {})
    assert code == 200 and json.loads(body)["six"] == "1.16.0"


def test_a_failing_requirement_errors_its_api_and_the_others_keep_serving(env_cli, tmp_path):
    port = free_port()
    good = write_project(tmp_path / "good", yaml_for("good"), {"predictor.py": PLAIN})
    bad = write_project(tmp_path / "bad", yaml_for("badpin"), {
        "predictor.py": "import dill  # added as pre-installed: pip gets it too when uv gives up\n" + PLAIN,
        "requirements.txt": "tomli-w\nsix==0.0.999\n",
    })
    conda = write_project(tmp_path / "conda", yaml_for("condaapi"), {
        "predictor.py": PLAIN, "conda-packages.txt": "libgomp\n",
    })
    no_conda = not any(shutil.which(t) for t in ("conda", "micromamba", "mamba"))
    env_cli("up", "-d", "--backend", "process", "--port", str(port), "--metrics-port", "0",
            str(good), str(bad), str(conda), check=True)
    snap = env_cli.wait_for(
        lambda s: _api(s, "good")["status"] == "live" and _api(s, "badpin")["status"] == "error"
        and (not no_conda or _api(s, "condaapi")["status"] == "error"),
        timeout=180, what="good live, badpin and condaapi in error")
    reason = _api(snap, "badpin")["reason"]
    first = reason.splitlines()[0]
    # every line checked alone (issue 17): tomli-w installs; six has no release 0.0.999 for this Python
    assert first.startswith("six==0.0.999 (requirements.txt line 2) cannot be installed here: 0.0.999 is not "
                            "available for Python 3."), reason
    assert "No matching distribution found for six==0.0.999" in reason  # pip's own last lines
    if no_conda:
        conda_reason = _api(snap, "condaapi")["reason"]
        assert "conda-packages.txt" in conda_reason and "neither conda nor micromamba" in conda_reason
    code, _, body = post_json(f"http://127.0.0.1:{port}/good", {})
    assert code == 200 and json.loads(body) == {"ok": True}
    # `get API` says the same, in words
    detail = env_cli("get", "badpin")
    assert "six==0.0.999 (requirements.txt line 2) cannot be installed" in detail.out


def test_dependencies_sh_runs_only_when_opted_in(env_cli, tmp_path):
    port = free_port()
    marker = tmp_path / "dependencies-ran"
    project = write_project(tmp_path / "deps", yaml_for("deps"), {
        "predictor.py": PLAIN, "dependencies.sh": f"echo ran > {marker}\n",
    })
    env_cli("up", "-d", "--backend", "process", "--port", str(port), "--metrics-port", "0",
            str(project), check=True)
    snap, _ = _wait_for_api(env_cli, "deps", ("live", "error"), timeout=60)
    assert _api(snap, "deps")["status"] == "live"
    assert not marker.exists()
    assert any("dependencies.sh" in n and "--run-dependencies-sh" in n for n in _notices(snap, "deps"))
    env_cli("down", check=True, timeout=90)

    env_cli("up", "-d", "--backend", "process", "--port", str(port), "--metrics-port", "0",
            "--run-dependencies-sh", str(project), check=True)
    snap, _ = _wait_for_api(env_cli, "deps", ("live", "error"), timeout=60)
    assert _api(snap, "deps")["status"] == "live", _api(snap, "deps")["reason"]
    assert marker.read_text() == "ran\n"


def test_pip_builds_it_without_uv_and_concurrent_builds_share_one(tmp_path):
    """Two daemons (two ProjectEnvironments on one cache) building one digest at once: one build,
    one environment; a half-built leftover is removed, never used; the runtime still imports."""
    import asyncio
    import subprocess
    import sys

    from cortexd.backends.environments import DONE_FILE, ProjectEnvironments
    from cortexd.spec import load_config
    from tests.real_daemon import REPO

    counter = tmp_path / "builds"
    project = write_project(tmp_path / "proj", yaml_for("shared"), {
        "predictor.py": PLAIN, "requirements.txt": "six==1.16.0\n",
        "dependencies.sh": f"echo built >> {counter}\n",
    })
    spec = load_config([str(project)]).apis[0]
    cache = tmp_path / "envs"
    first = ProjectEnvironments(cache, run_dependencies_sh=True, use_uv=False)
    second = ProjectEnvironments(cache, run_dependencies_sh=True, use_uv=False)
    plan = first.plan(spec)
    leftover = cache / f"{plan.digest}-deadbeef"  # a build that was killed half-way
    (leftover / "lib").mkdir(parents=True)

    async def both():
        return await asyncio.gather(first.ensure(plan, "shared"), second.ensure(second.plan(spec), "shared"))

    a, b = asyncio.run(both())
    assert a.path == b.path and (a.path / DONE_FILE).is_file()
    assert counter.read_text() == "built\n"  # dependencies.sh (and pip) ran once
    assert not leftover.exists()
    assert json.loads((a.path / DONE_FILE).read_text())["installer"] == "pip"
    check = subprocess.run(
        [a.python, "-c", "import six, aiohttp, predictor_runtime; print(six.__version__, six.__file__)"],
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]}, timeout=60,
        check=False)
    assert check.returncode == 0, check.stderr
    version, where = check.stdout.split()
    assert version == "1.16.0" and where.startswith(str(a.path))
    assert sys.executable != a.python


def _wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A minimal pure-Python wheel (what a private index would serve), made without build tools."""
    import base64
    import hashlib
    import zipfile

    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: cortexd-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()) + f"{dist}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr(f"{dist}/RECORD", record)
    return wheel


@pytest.mark.parametrize("use_uv", [True, False], ids=["uv", "pip"])
def test_a_project_pip_conf_is_honoured(tmp_path, use_uv):
    """Cortex's way to a private index: pip.conf in the project folder. Here it points pip at the
    project's own wheels folder, the only place that has this package."""
    import asyncio
    import subprocess

    from cortexd.backends.environments import DONE_FILE, ProjectEnvironments
    from cortexd.spec import load_config

    project = write_project(tmp_path / "proj", yaml_for("private"), {
        "predictor.py": PLAIN, "requirements.txt": "cortexd-private-probe==1.0\n",
        "pip.conf": "[global]\nfind-links = wheels\n",
    })
    _wheel(project / "wheels", "cortexd-private-probe", "1.0", "WHERE = 'the project pip.conf'\n")
    spec = load_config([str(project)]).apis[0]
    envs = ProjectEnvironments(tmp_path / "envs", use_uv=use_uv)
    env = asyncio.run(envs.ensure(envs.plan(spec), "private"))
    assert json.loads((env.path / DONE_FILE).read_text())["installer"] == ("uv" if use_uv else "pip")
    out = subprocess.run([env.python, "-c", "import cortexd_private_probe as p; print(p.WHERE)"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout.strip() == "the project pip.conf", out.stderr


@pytest.mark.parametrize("use_uv", [True, False], ids=["uv", "pip"])
def test_the_hosts_pip_settings_are_honoured(tmp_path, monkeypatch, use_uv):
    """The daemon's PIP_* settings reach the installer (uv reads none of pip's: they are
    translated); here PIP_FIND_LINKS names the only folder that has the package."""
    import asyncio
    import subprocess

    from cortexd.backends.environments import DONE_FILE, ProjectEnvironments
    from cortexd.spec import load_config

    wheels = tmp_path / "host-wheels"
    _wheel(wheels, "cortexd-host-probe", "2.0", "WHERE = 'the host settings'\n")
    monkeypatch.setenv("PIP_FIND_LINKS", f"{os.environ.get('PIP_FIND_LINKS', '')} {wheels}".strip())
    project = write_project(tmp_path / "proj", yaml_for("hostpip"), {
        "predictor.py": PLAIN, "requirements.txt": "cortexd-host-probe==2.0\n"})
    spec = load_config([str(project)]).apis[0]
    envs = ProjectEnvironments(tmp_path / "envs", use_uv=use_uv)
    env = asyncio.run(envs.ensure(envs.plan(spec), "hostpip"))
    assert json.loads((env.path / DONE_FILE).read_text())["installer"] == ("uv" if use_uv else "pip")
    out = subprocess.run([env.python, "-c", "import cortexd_host_probe as p; print(p.WHERE)"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout.strip() == "the host settings", out.stderr


def test_a_build_runs_project_code_without_the_daemons_environment(tmp_path, monkeypatch):
    """A local package's setup.py is project code that pip runs: it sees neither CORTEXD_HOME
    nor anything else only the daemon holds (the replica's rules, plus pip's own settings)."""
    import asyncio

    from cortexd.backends.environments import ProjectEnvironments
    from cortexd.spec import load_config

    seen = tmp_path / "seen.json"
    monkeypatch.setenv("CORTEXD_HOME", str(tmp_path / "daemon-home"))
    monkeypatch.setenv("DAEMON_ONLY_SECRET", "daemon-secret")
    setup_py = (
        "import json, os\n"
        "from setuptools import setup\n"
        f"with open({str(seen)!r}, 'w') as f:\n"
        "    json.dump({'uid': os.getuid(), 'cortexd_home': 'CORTEXD_HOME' in os.environ,\n"
        "               'secret': os.environ.get('DAEMON_ONLY_SECRET'),\n"
        "               'cortexd': sorted(k for k in os.environ if k.startswith('CORTEXD_'))}, f)\n"
        "setup(name='localpkg', version='1.0', py_modules=['localpkg'])\n"
    )
    (tmp_path / "proj" / "localpkg").mkdir(parents=True)
    project = write_project(tmp_path / "proj", yaml_for("local"), {
        "predictor.py": PLAIN, "requirements.txt": "./localpkg\n",
        "localpkg/setup.py": setup_py, "localpkg/localpkg.py": "WHERE = 'local'\n",
    })
    spec = load_config([str(project)]).apis[0]
    envs = ProjectEnvironments(tmp_path / "envs", use_uv=False)
    asyncio.run(envs.ensure(envs.plan(spec), "local"))
    recorded = json.loads(seen.read_text())
    assert recorded["cortexd_home"] is False and recorded["cortexd"] == [], recorded
    assert recorded["secret"] is None
    assert recorded["uid"] == os.getuid()  # a daemon without a replica user to drop to builds as itself


def test_the_cache_removes_environments_no_api_uses_but_the_newest_few(tmp_path):
    import asyncio

    from cortexd.backends.environments import KEEP_UNUSED, ProjectEnvironments

    cache = tmp_path / "envs"
    cache.mkdir()
    digests = [f"d{i}" for i in range(KEEP_UNUSED + 3)]
    for age, digest in enumerate(digests):  # d0 used last
        (cache / f"{digest}-abcd" / "lib").mkdir(parents=True)
        (cache / digest).symlink_to(f"{digest}-abcd")
        (cache / f"{digest}.lock").write_text("")
        os.utime(cache / digest, (1000 - age, 1000 - age), follow_symlinks=False)
    envs = ProjectEnvironments(cache)
    envs._by_api["deployed"] = ("hash", digests[-1], "python")  # the oldest, but in use
    other_daemon = ProjectEnvironments(cache)  # sharing the cache, running replicas on one
    other_daemon._hold(digests[KEEP_UNUSED])
    removed = asyncio.run(envs.collect_garbage())
    assert removed == digests[KEEP_UNUSED + 1:-1]
    left = sorted(p.name for p in cache.iterdir())
    kept = [*digests[:KEEP_UNUSED + 1], digests[-1]]
    assert left == sorted([*kept, *(f"{d}-abcd" for d in kept), *(f"{d}.lock" for d in kept)])


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root daemon runs builds as another user")
def test_a_root_daemons_build_runs_as_a_uid_of_its_own_and_ends_sealed(tmp_path, monkeypatch):
    """dependencies.sh (project code, like a setup.py) runs as a uid leased for that build alone,
    with a HOME of its own (pip's and uv's caches) that goes with it and none of the daemon's
    variables; what it leaves running is killed and the environment ends root-owned and
    read-only to everyone else (issue 15: a poisoned cache or a planted .pth reached other APIs)."""
    import asyncio
    import tempfile

    from cortexd.backends.environments import ProjectEnvironments
    from cortexd.backends.isolation import ReplicaUser, RunAs
    from cortexd.backends.process import ProcessBackend
    from cortexd.backends.replica_uids import UidRegistry
    from cortexd.procfs import processes_of
    from cortexd.spec import load_config

    monkeypatch.setenv("CORTEXD_HOME", str(tmp_path / "daemon-home"))
    shared = Path(tempfile.mkdtemp(prefix="cxd-envs-"))  # tmp_path's parents are 0700
    try:
        shared.chmod(0o755)
        out = shared / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        project = write_project(shared / "proj", yaml_for("dropped"), {
            "predictor.py": PLAIN,
            "dependencies.sh": f'echo "$(id -u) ${{CORTEXD_HOME:-none}} $HOME $TMPDIR" > {out}/seen\n'
                               f'touch "$HOME/cache-entry"\n'
                               f'setsid sleep 300 < /dev/null > /dev/null 2>&1 &\n',
        })
        for p in [project, *project.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        envs = ProjectEnvironments(shared / "envs", run_dependencies_sh=True)
        uids = UidRegistry(owner=str(tmp_path), path=shared / "uids.json")
        backend = ProcessBackend(tmp_path / "run", tmp_path / "logs", environments=envs, uids=uids)
        # the interpreter here may be one other users cannot run (pyenv under /root): the API is
        # taken as isolated, which is what leases the build a uid of its own (bash runs
        # dependencies.sh; pip and uv with real requirements: tests/faults/test_isolation_attack.py)
        monkeypatch.setattr(backend, "run_as", lambda spec, interpreter=None: RunAs(ReplicaUser.dynamic(1), True))
        spec = load_config([str(project)]).apis[0]
        env = asyncio.run(envs.ensure(envs.plan(spec), "dropped", spec))
        uid, cortexd_home, home, tmpdir = (out / "seen").read_text().split()
        assert int(uid) >= 70000 and cortexd_home == "none"
        assert home.startswith(str(shared / "envs" / ".builds")) and tmpdir.startswith(home)
        assert not Path(home).exists()  # the build's caches went with it
        assert processes_of(int(uid)) == []  # what it left running was killed
        assert int(uid) not in uids.owned()  # and its uid given back
        # sealed: the daemon's, nothing writable by group or others, in every part of the venv
        for path in [env.path, *env.path.rglob("*")]:
            st = path.lstat()
            assert st.st_uid == 0, path
            if not path.is_symlink():
                assert st.st_mode & 0o7022 == 0, (path, oct(st.st_mode))
        site = next(env.path.glob("lib/python*/site-packages"))
        assert (site / "_cortexd_runtime.pth").is_file()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
