"""Project environments, the pure parts: import scanning, Cortex 0.23's pre-installed packages,
requirements.txt lines, the digest, and pip's output turned into progress and failure messages."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from cortexd.backends.environment_build import installer_environment
from cortexd.backends.environment_plan import own_modules, project_pip_env, python_sources
from cortexd.backends.environments import ProjectEnvironments, environments_to_evict
from cortexd.core.preinstalled import (
    distribution_for_import,
    imported_modules,
    preinstalled_additions,
)
from cortexd.core.requirements import (
    PREINSTALLED_FILE,
    environment_digest,
    install_failure,
    pip_activity,
    requirement_lines,
    requirement_names,
)
from cortexd.spec.model import APISpec

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"

# -- import scanning --------------------------------------------------------------------


def test_imports_are_top_level_names_of_absolute_imports_anywhere_in_the_file():
    source = """
import os, numpy as np
import sklearn.linear_model
from cv2 import imread
from . import sibling
from .helpers import thing

class PythonPredictor:
    def __init__(self, config):
        import boto3
        try:
            from PIL import Image
        except ImportError:
            Image = None
"""
    assert imported_modules(source) == {"os", "numpy", "sklearn", "cv2", "boto3", "PIL"}


def test_a_file_that_does_not_parse_imports_nothing():
    assert imported_modules("import boto3\ndef broken(:\n") == set()


def test_nothing_is_executed_while_scanning(tmp_path):
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').write('x')\nimport dill\n"
    assert imported_modules(source) == {"dill"}
    assert not marker.exists()


@pytest.mark.parametrize("module,dist", [
    ("cv2", "opencv-python"), ("sklearn", "scikit-learn"), ("PIL", "Pillow"), ("yaml", "pyyaml"),
    ("skimage", "scikit-image"), ("boto3", "boto3"), ("tensorflow_hub", "tensorflow-hub"),
    ("keras", "Keras"), ("np_utils", "np-utils"), ("dill", "dill"),
])
def test_import_names_map_to_the_distributions_cortex_preinstalled(module, dist):
    assert distribution_for_import(module, "python") == dist


def test_the_lists_differ_per_predictor_type():
    assert distribution_for_import("torch", "python") == "torch"
    assert distribution_for_import("torch", "onnx") is None
    assert distribution_for_import("onnxruntime", "onnx") == "onnxruntime"
    assert distribution_for_import("tensorflow_serving", "tensorflow") == "tensorflow-serving-api"
    assert distribution_for_import("sklearn", "tensorflow") is None
    assert distribution_for_import("sklearn", "legacy") == "scikit-learn"
    assert distribution_for_import("flask", "python") is None  # never pre-installed


def _additions(imports, kind="python", required=(), runtime=(), own=()):
    return [(a.distribution, a.import_name) for a in preinstalled_additions(
        imports, kind, required, lambda m: m in runtime, own)]


def test_adds_what_neither_the_requirements_nor_the_runtime_provide():
    imports = {"predictor.py": {"boto3", "cv2", "numpy", "sklearn", "json", "utils", "requests"}}
    got = _additions(imports, required=["requests"], runtime={"numpy"}, own={"utils", "predictor"})
    assert got == [("boto3", "boto3"), ("opencv-python", "cv2"), ("scikit-learn", "sklearn")]


def test_stdlib_and_own_modules_are_not_packages():
    # a project module named like a pre-installed package is the project's own
    imports = {"predictor.py": {"os", "sys", "json", "sqlite3", "six"}, "six.py": set()}
    assert _additions(imports, own=own_modules(["predictor.py", "six.py"])) == []


def test_a_requirement_naming_another_distribution_of_the_same_module_counts():
    imports = {"predictor.py": {"cv2", "tensorflow", "PIL"}}
    got = _additions(imports, required=["opencv-python-headless", "tensorflow-cpu", "pillow"])
    assert got == []


def test_requirement_names_match_canonically():
    assert _additions({"p.py": {"sklearn", "yaml"}}, required=["Scikit_Learn", "PyYAML"]) == []


def test_the_notice_names_each_added_package():
    (addition,) = preinstalled_additions({"predictor.py": {"boto3"}}, "onnx", [], lambda m: False, [])
    assert addition.notice == "boto3: pre-installed on Cortex 0.23, added"
    assert addition.files == ("predictor.py",)


def test_own_modules_are_files_and_the_folders_above_them():
    assert own_modules(["predictor.py", "lib/helpers.py", "pkg/sub/mod.py"]) == {
        "predictor", "lib", "helpers", "pkg", "sub", "mod"}


def test_python_sources_skip_venvs_caches_and_hidden_folders(tmp_path):
    (tmp_path / "predictor.py").write_text("import dill\n")
    for folder in ("venv", ".git", "__pycache__", "lib"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.py").write_text("import boto3\n")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    assert sorted(python_sources(tmp_path)) == ["lib/x.py", "predictor.py"]


# -- requirements.txt and the digest ------------------------------------------------------


def test_requirement_lines_keep_their_line_numbers():
    text = ("# pinned for Cortex\nscikit-learn==0.21.3  # old\n\n-r more.txt\n"
            "numpy>=1.0 \\\n  ; python_version>'3'\n./local_pkg\nBoto3\n")
    lines = requirement_lines(text)
    assert [(r.line, r.text, r.name) for r in lines] == [
        (2, "scikit-learn==0.21.3", "scikit-learn"),
        (4, "-r more.txt", None),
        (5, "numpy>=1.0    ; python_version>'3'", "numpy"),
        (7, "./local_pkg", None),
        (8, "Boto3", "boto3"),
    ]
    assert requirement_names(lines) == {"scikit-learn", "numpy", "boto3"}


def test_digest_changes_with_any_input_and_not_with_order():
    base = {"requirements.txt": b"six==1.16.0\n", "runtime": "cortexd 0.1.0\npython 3.11", "preinstalled": ""}
    assert environment_digest(base) == environment_digest(dict(reversed(list(base.items()))))
    for key, value in [("requirements.txt", b"six==1.17.0\n"), ("runtime", "cortexd 0.2.0"),
                       ("preinstalled", "dill")]:
        assert environment_digest({**base, key: value}) != environment_digest(base)
    assert environment_digest({**base, "pip.conf": b"[global]\nindex-url = https://x/simple\n"}) != \
        environment_digest(base)


# -- pip's output ----------------------------------------------------------------------------


def test_progress_names_the_package_and_its_line():
    assert pip_activity("Collecting six==1.16.0 (from -r /p/requirements.txt (line 2))") == \
        "collecting six==1.16.0 (requirements.txt line 2)"
    assert pip_activity("Collecting tzdata>=2022.7 (from pandas->-r /p/requirements.txt (line 3))") == \
        "collecting tzdata>=2022.7 (needed by requirements.txt line 3)"
    assert pip_activity(f"Collecting dill (from -r /env/{PREINSTALLED_FILE} (line 1))") == \
        "collecting dill (pre-installed on Cortex 0.23, added by cortexd)"
    assert pip_activity("Installing collected packages: tomli-w, six") == "installing tomli-w, six"
    assert pip_activity("  Downloading six-1.16.0-py2.py3-none-any.whl (11 kB)") is None


REQS = requirement_lines("numpy\nscikit-learn==0.21.3\nsix==0.0.999\n")

NO_VERSION = """\
Collecting numpy (from -r /p/requirements.txt (line 1))
Collecting six==0.0.999 (from -r /p/requirements.txt (line 3))
ERROR: Could not find a version that satisfies the requirement six==0.0.999 (from versions: 0.9.0, 1.15.0, 1.17.0)
ERROR: No matching distribution found for six==0.0.999
""".splitlines()

OTHER_PYTHON = """\
Collecting scikit-learn==0.21.3 (from -r /p/requirements.txt (line 2))
ERROR: Ignored the following versions that require a different python version: 0.21.3 Requires-Python >=3.5,<3.8
ERROR: Could not find a version that satisfies the requirement scikit-learn==0.21.3 (from versions: 1.5.0, 1.6.1)
ERROR: No matching distribution found for scikit-learn==0.21.3
""".splitlines()

BUILD_FAILED = """\
Collecting numpy (from -r /p/requirements.txt (line 1))
Collecting scikit-learn==0.21.3 (from -r /p/requirements.txt (line 2))
  Downloading scikit-learn-0.21.3.tar.gz (12.2 MB)
  Preparing metadata (setup.py): started
  Preparing metadata (setup.py): finished with status 'error'
  error: subprocess-exited-with-error

  × python setup.py egg_info did not run successfully.
  │ exit code: 1
  ╰─> [3 lines of output]
      Partial import of sklearn during the build process.
      ImportError: Numerical Python (NumPy) is not installed.
      [end of output]

  note: This error originates from a subprocess, and is likely not a problem with pip.
error: metadata-generation-failed

× Encountered error while generating package metadata.
╰─> See above for output.
""".splitlines()


def test_a_missing_version_names_the_line_and_the_python():
    failure = install_failure(NO_VERSION, REQS, "3.11")
    assert failure.summary.startswith("six==0.0.999 (requirements.txt line 3) cannot be installed on Python 3.11: ")
    assert "1.17.0" in failure.summary  # what there is instead
    assert "No matching distribution found for six==0.0.999" in failure.detail
    assert (failure.requirement, failure.line, failure.deterministic) == ("six==0.0.999", 3, True)


def test_a_2020_pin_for_older_pythons_says_so():
    failure = install_failure(OTHER_PYTHON, REQS, "3.11")
    assert failure.summary.startswith(
        "scikit-learn==0.21.3 (requirements.txt line 2) cannot be installed on Python 3.11: ")
    assert "require another Python (0.21.3 Requires-Python >=3.5,<3.8)" in failure.summary


def test_a_failed_build_from_source_names_the_pin_it_was_building():
    failure = install_failure(BUILD_FAILED, REQS, "3.11")
    assert failure.summary.startswith(
        "scikit-learn==0.21.3 (requirements.txt line 2) cannot be installed on Python 3.11: ")
    assert "building it from source fails (Numerical Python (NumPy) is not installed." in failure.summary
    assert "NumPy) is not installed" in failure.detail
    assert failure.line == 2


def test_a_failing_dependency_names_the_line_that_needs_it():
    output = [
        "Collecting pandas==2.0 (from -r /p/requirements.txt (line 1))",
        "Collecting tzdata>=2022.1 (from pandas==2.0->-r /p/requirements.txt (line 1))",
        "ERROR: No matching distribution found for tzdata>=2022.1",
    ]
    failure = install_failure(output, requirement_lines("pandas==2.0\n"), "3.11")
    assert failure.summary.startswith(
        "tzdata>=2022.1 (needed by pandas==2.0, requirements.txt line 1) cannot be installed on Python 3.11")


def test_an_added_preinstalled_package_is_named_as_such():
    output = [f"Collecting dill (from -r /env/{PREINSTALLED_FILE} (line 1))",
              "ERROR: No matching distribution found for dill"]
    failure = install_failure(output, [], "3.11")
    assert failure.summary.startswith("dill (pre-installed on Cortex 0.23, added by cortexd) cannot be installed")


def test_an_invalid_line_and_conflicting_pins():
    invalid = install_failure(["ERROR: Invalid requirement: 'six=>1' (from line 2 of /p/requirements.txt)"],
                              [], "3.11")
    assert invalid.summary == "requirements.txt: invalid requirement 'six=>1' (requirements.txt line 2)"
    conflict = install_failure([
        ("ERROR: Cannot install six==1.16.0 and six==1.17.0 because these package versions have "
         "conflicting dependencies."), "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io"], [], "3.11")
    assert conflict.summary.startswith("the requirements in requirements.txt conflict: Cannot install six==1.16.0")


def test_an_unreachable_index_is_not_remembered_as_a_failure():
    failure = install_failure([
        "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(...)': /simple/six/",
        "ERROR: Could not find a version that satisfies the requirement six (from versions: none)",
        "ERROR: No matching distribution found for six"], requirement_lines("six\n"), "3.11")
    # pip words it like a missing release; "from versions: none" after connection errors is the index
    assert "six (requirements.txt line 1) cannot be installed" in failure.summary
    assert not failure.deterministic  # retried at the crash backoff's pace, not remembered
    offline = install_failure(["ERROR: Exception: Max retries exceeded with url: /simple/six/"], [], "3.11")
    assert "could not be reached" in offline.summary and not offline.deterministic


# -- reading a project -------------------------------------------------------------------------


def test_project_pip_conf_becomes_pip_variables_with_paths_from_the_project(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://pypi.example.com/simple\nextra-index-url =\n"
                    "    https://a/simple\n    https://b/simple\ncert = ca.pem\n[install]\ntrusted-host = a b\n")
    env, problem = project_pip_env(conf)
    assert problem is None
    assert env == {
        "PIP_INDEX_URL": "https://pypi.example.com/simple",
        "PIP_EXTRA_INDEX_URL": "https://a/simple https://b/simple",
        "PIP_CERT": str(tmp_path / "ca.pem"),
        "PIP_TRUSTED_HOST": "a b",
    }


def _spec(project: Path, kind: str = "python") -> APISpec:
    from cortexd.spec import load_config

    (project / "cortex.yaml").write_text(
        f"- name: api\n  kind: RealtimeAPI\n  predictor:\n    type: {kind}\n    path: predictor.py\n")
    return load_config([str(project)]).apis[0]


def test_plan_of_a_project_that_needs_nothing(tmp_path):
    (tmp_path / "predictor.py").write_text("import json, numpy\nclass PythonPredictor:\n    pass\n")
    plan = ProjectEnvironments(tmp_path / "envs").plan(_spec(tmp_path))
    assert not plan.needed and plan.notices == ()


def test_plan_adds_missing_preinstalled_packages(tmp_path):
    (tmp_path / "predictor.py").write_text(
        "import numpy\nimport a_package_nobody_has_9f3\nclass PythonPredictor:\n"
        "    def __init__(self, config):\n        import dill\n")
    plan = ProjectEnvironments(tmp_path / "envs").plan(_spec(tmp_path))
    if importlib.util.find_spec("dill") is None:  # the runtime lacks it: added, with a notice
        assert [a.distribution for a in plan.additions] == ["dill"] and plan.needed
        assert plan.notices == ("dill: pre-installed on Cortex 0.23, added",)
    else:
        assert plan.additions == () and not plan.needed
    (tmp_path / "requirements.txt").write_text("Dill>=0.3\n")  # listed: not added again
    assert ProjectEnvironments(tmp_path / "envs").plan(_spec(tmp_path)).additions == ()


def test_plan_skips_dependencies_sh_unless_opted_in(tmp_path):
    (tmp_path / "predictor.py").write_text("import numpy\nclass PythonPredictor:\n    pass\n")
    (tmp_path / "dependencies.sh").write_text("apt-get install -y libgomp1\n")
    envs = ProjectEnvironments(tmp_path / "envs")
    plan = envs.plan(_spec(tmp_path))
    assert plan.dependencies_sh is None and not plan.needed
    assert any("dependencies.sh" in n and "--run-dependencies-sh" in n for n in plan.notices)
    opted_in = ProjectEnvironments(tmp_path / "envs", run_dependencies_sh=True).plan(_spec(tmp_path))
    assert opted_in.needed and opted_in.digest != plan.digest


def test_plan_digest_follows_requirements_txt(tmp_path):
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    envs = ProjectEnvironments(tmp_path / "envs")
    first = envs.plan(_spec(tmp_path))
    assert first.needed
    assert envs.plan(_spec(tmp_path)).digest == first.digest
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    assert envs.plan(_spec(tmp_path)).digest != first.digest


def test_plan_reads_requirements_through_their_includes_and_local_paths(tmp_path):
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    def __init__(self, config):\n"
                                           "        import dill\n")
    (tmp_path / "reqs").mkdir()
    (tmp_path / "requirements.txt").write_text("-r reqs/base.txt\n-e ./localpkg\n")
    (tmp_path / "reqs" / "base.txt").write_text("-r common.txt\n")
    (tmp_path / "reqs" / "common.txt").write_text("dill==0.3.8\n")
    (tmp_path / "localpkg").mkdir()
    (tmp_path / "localpkg" / "setup.py").write_text("from setuptools import setup\nsetup(name='localpkg')\n")
    envs = ProjectEnvironments(tmp_path / "envs")
    first = envs.plan(_spec(tmp_path))
    assert first.additions == ()  # dill is named two includes down: never added with Cortex's pin
    (tmp_path / "reqs" / "common.txt").write_text("dill==0.3.9\n")
    second = envs.plan(_spec(tmp_path))
    assert second.digest != first.digest  # an edit two includes down builds a new environment
    (tmp_path / "localpkg" / "setup.py").write_text("from setuptools import setup\nsetup(name='localpkg', "
                                                   "version='2')\n")
    assert envs.plan(_spec(tmp_path)).digest != second.digest  # so does an edit of the local package


# -- uv ------------------------------------------------------------------------------------------


def test_pip_settings_become_uv_options():
    from cortexd.core.requirements import uv_options

    args, env = uv_options({
        "index-url": "https://mirror/simple", "extra-index-url": "file:///opt/a https://b/simple",
        "find-links": "/opt/wheels", "trusted-host": "mirror b", "cert": "/etc/ca.pem",
        "constraint": "/etc/pip/constraints.txt", "timeout": "180", "disable-pip-version-check": "1",
    })
    assert args == ["--index-strategy", "unsafe-best-match", "--index-url", "https://mirror/simple",
                    "--extra-index-url", "file:///opt/a", "--extra-index-url", "https://b/simple",
                    "--find-links", "/opt/wheels", "--allow-insecure-host", "mirror",
                    "--allow-insecure-host", "b", "--constraint", "/etc/pip/constraints.txt"]
    assert env == {"SSL_CERT_FILE": "/etc/ca.pem", "UV_HTTP_TIMEOUT": "180"}


def test_a_pip_setting_uv_cannot_honour_leaves_the_install_to_pip():
    from cortexd.core.requirements import uv_options

    assert uv_options({"client-cert": "/etc/me.pem"}) is None
    assert uv_options({"keyring-provider": "subprocess"}) is None


def test_uv_progress():
    from cortexd.core.requirements import uv_activity

    assert uv_activity("Resolved 3 packages in 156ms") == "resolved 3 packages (uv)"
    assert uv_activity("Downloading pandas (11.8MiB)") == "downloading pandas"
    assert uv_activity(" + six==1.16.0") == "installed six==1.16.0"
    assert uv_activity("Using Python 3.11.7 environment at: /x") is None


def test_uv_gets_only_the_lines_the_runtime_does_not_satisfy():
    from cortexd.core.requirements import unsatisfied

    lines = requirement_lines(
        "numpy>=1.20\nsix==1.16.0\nrequests[socks]\ntomli-w\n-r more.txt\nboto3; python_version < '3'\n"
        "./localpkg\n")
    installed = {"numpy": "2.4.6", "six": "1.17.0", "requests": "2.34.2", "boto3": "1.43.0"}
    assert unsatisfied(lines, installed, "/p") == [
        "six==1.16.0", "requests[socks]", "tomli-w", "-r /p/more.txt", "./localpkg"]


def test_every_project_file_is_scanned_not_only_the_predictor(tmp_path):
    # a predictor that unpickles a scikit-learn model never imports sklearn itself; the training
    # script beside it does, and Cortex's image had it: so the whole project counts
    (tmp_path / "predictor.py").write_text(
        "import pickle\nclass PythonPredictor:\n    def __init__(self, config):\n"
        "        self.model = pickle.load(open('model.pkl', 'rb'))\n")
    (tmp_path / "train.py").write_text("import dill\n")
    plan = ProjectEnvironments(tmp_path / "envs").plan(_spec(tmp_path))
    if importlib.util.find_spec("dill") is None:
        assert [(a.distribution, a.files) for a in plan.additions] == [("dill", ("train.py",))]
    else:
        assert plan.additions == ()


def test_where_environments_are_cached(tmp_path, monkeypatch):
    from cortexd.settings import SHARED_ENV_CACHE, DaemonSettings

    assert DaemonSettings(home=tmp_path, env_cache=tmp_path / "shared").environments_dir == tmp_path / "shared"
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert DaemonSettings(home=tmp_path).environments_dir == tmp_path / "envs"
    # a root daemon's replicas run as another user, who cannot enter its 0700 home
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert DaemonSettings(home=tmp_path).environments_dir == SHARED_ENV_CACHE
    assert DaemonSettings(home=tmp_path, replica_user="root").environments_dir == tmp_path / "envs"


# -- what `get` shows (the reconciler's snapshot, with a fake backend) ---------------------------


async def test_get_shows_the_install_in_progress_and_a_failed_install_at_once():
    from cortexd.daemon.events import EventLog
    from cortexd.daemon.reconciler import Reconciler
    from cortexd.errors import DependencyError
    from cortexd.settings import DaemonSettings
    from tests.builders import rollout_spec
    from tests.unit.reconciler_fakes import FakeBackend, FakeClock, FakeGateway, api_snapshot

    gate = asyncio.Event()

    class InstallingBackend(FakeBackend):  # like the process backend: environments, no image
        builds_images = False
        activity: tuple[str, str] | None = None
        failure: DependencyError | None = None

        async def ensure_image(self, spec):
            self.activity = ("installing requirements", "collecting six==1.16.0 (requirements.txt line 2)")
            await gate.wait()
            self.activity = None
            if self.failure:
                raise self.failure

        def preparing(self, api):
            return self.activity

    clock, backend = FakeClock(), InstallingBackend()
    rec = Reconciler(backend, FakeGateway(), DaemonSettings(crash_error_after=3), EventLog(clock),
                     clock=clock, probe=lambda info: asyncio.sleep(0, result=False))
    spec = rollout_spec()
    await rec.apply([spec])
    for _ in range(3):
        await rec.reconcile_once()
        await asyncio.sleep(0)
    snap = api_snapshot(rec, "api", wall_now=0.0, mono_now=clock())
    assert snap["status"] == "updating (installing requirements)"
    assert snap["replicas"]["pending_reason"] == \
        "installing requirements: collecting six==1.16.0 (requirements.txt line 2)"

    backend.failure = DependencyError(
        "six==0.0.999 (requirements.txt line 2) cannot be installed on Python 3.11: no release of it matches",
        detail="ERROR: No matching distribution found for six==0.0.999", deterministic=True)
    gate.set()
    for _ in range(3):
        await asyncio.sleep(0)
    await rec.reconcile_once()
    snap = api_snapshot(rec, "api", wall_now=0.0, mono_now=clock())
    assert snap["status"] == "error"  # at the first failure: the same files fail again
    first, *rest = snap["reason"].splitlines()
    assert first.startswith("six==0.0.999 (requirements.txt line 2) cannot be installed on Python 3.11")
    assert rest == ["ERROR: No matching distribution found for six==0.0.999"]
    assert not backend.replicas


def test_installers_get_the_replica_rules_plus_pips_own_settings_never_the_daemons():
    daemon = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "HOME": "/home/d", "CORTEXD_HOME": "/home/d/.cortexd",
              "CORTEXD_REPLICA_USER": "x", "AWS_SECRET_ACCESS_KEY": "s", "DATABASE_URL": "postgres://",
              "PIP_INDEX_URL": "https://idx", "PIP_TARGET": "/elsewhere", "https_proxy": "http://p:3128",
              "NO_PROXY": "localhost", "UV_INDEX_URL": "https://idx", "SSL_CERT_FILE": "/ca.pem"}
    env = installer_environment(daemon)
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "HOME": "/home/d", "PIP_INDEX_URL": "https://idx",
                   "https_proxy": "http://p:3128", "NO_PROXY": "localhost", "UV_INDEX_URL": "https://idx",
                   "SSL_CERT_FILE": "/ca.pem"}
    # as the replicas' user: a HOME of its own (the daemon's is closed to it)
    env = installer_environment({**daemon, "XDG_CACHE_HOME": "/home/d/.cache"}, home="/cache/.home")
    assert env["HOME"] == "/cache/.home"
    assert "XDG_CACHE_HOME" not in installer_environment({**daemon, "XDG_CACHE_HOME": "/x"}, home="/h")


def test_the_cache_keeps_what_deployed_apis_use_and_the_newest_unused_few():
    last_used = {"a": 10.0, "b": 50.0, "c": 40.0, "d": 30.0, "e": 20.0, "live": 1.0}
    assert environments_to_evict(last_used, in_use={"live"}, keep=3) == ["a", "e"]
    assert environments_to_evict(last_used, in_use={"live", "a"}, keep=3) == ["e"]
    assert environments_to_evict(last_used, in_use=set(last_used), keep=0) == []
    assert environments_to_evict({"x": 1.0}, in_use=set(), keep=3) == []


def test_s3_model_paths_add_boto3_which_the_runtime_reads_them_with(tmp_path):
    from cortexd.backends.environment_plan import project_imports
    from cortexd.spec.model import ModelSpec, ModelsSpec
    from tests.builders import api_spec

    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    local = api_spec(project=tmp_path, model_path=str(tmp_path / "model"))
    assert "boto3" not in {m for ms in project_imports(local)[0].values() for m in ms}
    for spec in (api_spec(project=tmp_path, model_path="s3://bucket/model"),
                 api_spec(project=tmp_path, models=ModelsSpec(paths=(ModelSpec("m", "s3://b/m"),))),
                 api_spec(project=tmp_path, models=ModelsSpec(dir="s3://b/models"))):
        imports, own = project_imports(spec)
        added = preinstalled_additions(imports, "python", [], lambda m: False, own)
        assert [(a.distribution, a.files) for a in added] == [("boto3", ("cortex.yaml (s3:// model paths)",))]
        assert added[0].notice == "boto3: pre-installed on Cortex 0.23, added"
