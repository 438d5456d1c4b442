"""The Docker backend's requirements layer: what goes into it and what its tag depends on.

Parity with the process backend's environments (issue 10.1-2): the same import scan adds
Cortex 0.23's pre-installed packages the project imports and that neither its requirements
nor the family image provide (asked of the image once, here a fake engine), with the same
notices; a project pip.conf is layered over the host's pip settings; conda-packages.txt is
refused with the file named. The layer's tag covers the added packages and the pip settings,
so an unchanged project finds its layer built.
"""

from __future__ import annotations

import json

import pytest

from cortexd.backends.image_plans import deps_plan
from cortexd.backends.images import ImageBuilder
from cortexd.backends.pip_settings import (
    FIND_LINKS_IN_IMAGE,
    PipSettings,
    pip_settings_for_build,
)
from cortexd.core.preinstalled import Addition
from cortexd.errors import DependencyError
from cortexd.spec import load_config
from tests.builders import conf_values

IMAGE = "cortexd-python-cpu:0123456789abcdef"
HOST = "global.index-url='https://mirror.example/simple'\nglobal.timeout='30'\n"

PREDICTOR = """\
import numpy
import helpers


class PythonPredictor:
    def __init__(self, config):
        import dill
        self.dill = dill

    def predict(self, payload):
        return {"ok": True}
"""


class FakeContainer:
    def __init__(self, engine: FakeEngine, modules: list[str]):
        self.engine, self.modules = engine, modules

    def start(self):
        pass

    def wait(self, timeout=None):
        return {"StatusCode": 0}

    def logs(self, stdout=True, stderr=True):
        return (json.dumps([m for m in self.modules if m in self.engine.has]) + "\n").encode()

    def remove(self, force=False):
        pass


class FakeEngine:
    """A docker client whose images have `has` (top-level modules); counts the probes."""

    def __init__(self, has=("numpy", "aiohttp")):
        self.has = set(has)
        self.probes: list[tuple[str, list[str]]] = []
        self.containers = self

    def create(self, image, entrypoint, **kwargs):
        assert kwargs.get("network_disabled") is True
        modules = entrypoint[3:]  # python -c PROBE modules...
        self.probes.append((image, modules))
        return FakeContainer(self, modules)


def project(tmp_path, files: dict[str, str]):
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "cortex.yaml").write_text("- name: deps\n  kind: RealtimeAPI\n  predictor:\n"
                                      "    type: python\n    path: predictor.py\n")
    (root / "helpers.py").write_text("import os\n")
    for name, text in {"predictor.py": PREDICTOR, **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def spec_of(root):
    return load_config([str(root)]).apis[0]


@pytest.fixture(autouse=True)
def no_host_pip_variables(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)


def builder(engine, notices=None):
    return ImageBuilder(engine, base_image="base:1", pip_config_list=HOST,
                        notify=(lambda m, api: notices.append((api, m))) if notices is not None else None)


# -- deps_plan (pure) ------------------------------------------------------------------------


def plan_with(additions=(), pip_conf=b"[global]\n", files=None):
    return deps_plan(IMAGE, "cortexd-python-cpu", b"FROM x\n",
                     {"requirements.txt": b"six\n"} if files is None else files,
                     {"pip/pip.conf": pip_conf}, {}, additions)


def test_added_packages_are_a_requirements_file_of_the_layer_and_part_of_its_tag():
    dill = Addition("dill", "dill", ("predictor.py",))
    boto3 = Addition("boto3", "boto3", ("predictor.py",))
    plan = plan_with([dill, boto3])
    assert plan.files["deps/cortex-preinstalled.txt"] == b"boto3\ndill\n"
    assert "pre-installed: boto3, dill" in plan.description
    assert plan.tag == plan_with([boto3, dill]).tag  # order does not matter
    assert plan.tag != plan_with([dill]).tag != plan_with().tag
    # nothing added: no extra file, the tag a project had before additions existed
    assert "deps/cortex-preinstalled.txt" not in plan_with().files


def test_a_project_that_needs_only_added_packages_gets_a_layer_and_one_that_needs_nothing_none():
    only = plan_with([Addition("dill", "dill", ("p.py",))], files={})
    assert only is not None and set(only.files) == {"Dockerfile", "deps/cortex-preinstalled.txt", "pip/pip.conf"}
    assert plan_with(files={}) is None


def test_the_layer_tag_follows_the_pip_settings():
    assert plan_with(pip_conf=b"[global]\nindex-url = https://a/simple\n").tag != plan_with().tag


# -- a project pip.conf over the host's settings (pure) -------------------------------------------


def test_a_project_pip_conf_ranks_above_the_host_and_its_find_links_folder_is_carried(tmp_path):
    root = str(tmp_path / "proj")
    project = {"PIP_INDEX_URL": "https://private.example/simple",
               "PIP_FIND_LINKS": f"{root}/wheels {root}/index.html /elsewhere/wheels",
               "PIP_EXTRA_INDEX_URL": "https://extra.example/simple"}
    s = pip_settings_for_build(HOST, {"PIP_TIMEOUT": "45"}, project, root)
    values = conf_values(s.conf)
    assert values["index-url"] == ["https://private.example/simple"]  # the project's wins
    assert values["extra-index-url"] == ["https://extra.example/simple"]
    assert values["timeout"] == ["45"]  # the host's settings stay under it
    assert values["find-links"] == [f"{FIND_LINKS_IN_IMAGE}/0", f"{FIND_LINKS_IN_IMAGE}/1/index.html"]
    assert s.find_links == ((f"{root}/wheels", "pip/find-links/0"), (f"{root}/index.html", "pip/find-links/1"))
    assert any("/elsewhere/wheels is a path on this host" in n for n in s.notices)


def test_no_index_counts_when_the_project_sets_it_not_when_the_host_does(tmp_path):
    root = str(tmp_path)
    mine = pip_settings_for_build("", {}, {"PIP_NO_INDEX": "true", "PIP_FIND_LINKS": f"{root}/w"}, root)
    assert conf_values(mine.conf)["no-index"] == ["true"]
    hosts = pip_settings_for_build("global.no-index='true'\n", {})
    assert "no-index" not in conf_values(hosts.conf)
    assert any("no-index is set on this host" in n for n in hosts.notices)


# -- the builder's plan of a project (fake engine) ---------------------------------------------------


def test_missing_pre_installed_imports_are_added_once_with_the_process_backends_notice(tmp_path):
    engine, notices = FakeEngine(has={"numpy"}), []
    b = builder(engine, notices)
    spec = spec_of(project(tmp_path, {"requirements.txt": "six==1.16.0\n"}))
    plan = b.plan_deps(spec, IMAGE)
    # numpy: the image has it; helpers: the project's own; dill: added
    assert plan.files["deps/cortex-preinstalled.txt"] == b"dill\n"
    assert plan.files["deps/requirements.txt"] == b"six==1.16.0\n"
    assert notices == [("deps", "dill: pre-installed on Cortex 0.23, added")]
    assert engine.probes == [(IMAGE, ["dill", "numpy"])]
    again = b.plan_deps(spec, IMAGE)
    assert again.tag == plan.tag  # unchanged project: the same layer, found built
    assert len(engine.probes) == 1 and len(notices) == 1  # asked and said once


def test_a_package_the_requirements_or_the_image_provide_is_not_added(tmp_path):
    engine = FakeEngine(has={"numpy", "dill"})
    spec = spec_of(project(tmp_path, {"requirements.txt": "six\n"}))
    plan = builder(engine, []).plan_deps(spec, IMAGE)
    assert "deps/cortex-preinstalled.txt" not in plan.files
    listed = spec_of(project(tmp_path, {"requirements.txt": "Dill>=0.3\nnumpy\n"}))
    b = builder(FakeEngine(has=()), [])
    assert "deps/cortex-preinstalled.txt" not in b.plan_deps(listed, IMAGE).files


def test_a_project_without_files_that_imports_a_missing_package_gets_a_layer(tmp_path):
    plan = builder(FakeEngine(has={"numpy"}), []).plan_deps(spec_of(project(tmp_path, {})), IMAGE)
    assert plan is not None and plan.files["deps/cortex-preinstalled.txt"] == b"dill\n"
    assert plan.tag.startswith("cortexd-python-cpu-deps:")


def test_the_project_pip_conf_goes_into_the_layer_and_its_tag(tmp_path):
    engine = FakeEngine(has={"numpy", "dill"})
    root = project(tmp_path, {"requirements.txt": "private-pkg==1.0\n"})
    before = builder(engine).plan_deps(spec_of(root), IMAGE)
    assert conf_values(before.files["pip/pip.conf"].decode())["index-url"] == ["https://mirror.example/simple"]
    (root / "wheels").mkdir()
    (root / "wheels" / "private_pkg-1.0-py3-none-any.whl").write_bytes(b"PK wheel")
    (root / "pip.conf").write_text("[global]\nindex-url = https://private.example/simple\nfind-links = wheels\n")
    after = builder(engine).plan_deps(spec_of(root), IMAGE)
    values = conf_values(after.files["pip/pip.conf"].decode())
    assert values["index-url"] == ["https://private.example/simple"]
    assert values["timeout"] == ["30"]  # the host's, under the project's
    assert values["find-links"] == [f"{FIND_LINKS_IN_IMAGE}/0"]
    assert after.files["pip/find-links/0/private_pkg-1.0-py3-none-any.whl"] == b"PK wheel"
    assert after.tag != before.tag
    (root / "wheels" / "private_pkg-1.0-py3-none-any.whl").write_bytes(b"PK wheel, rebuilt")
    assert builder(engine).plan_deps(spec_of(root), IMAGE).tag != after.tag
    assert builder(engine).plan_deps(spec_of(root), IMAGE).tag == builder(engine).plan_deps(spec_of(root), IMAGE).tag


def test_conda_packages_are_refused_on_docker_naming_the_file(tmp_path):
    root = project(tmp_path, {"conda-packages.txt": "conda-forge::rdkit\n"})
    with pytest.raises(DependencyError) as e:
        builder(FakeEngine()).plan_deps(spec_of(root), IMAGE)
    assert str(root / "conda-packages.txt") in str(e.value) and "no conda" in str(e.value)
    assert e.value.deterministic  # the API shows `error` at once


def test_without_notify_the_notice_goes_to_the_build_progress(tmp_path):
    lines = []
    b = ImageBuilder(FakeEngine(has={"numpy"}), base_image="base:1", progress=lines.append,
                     pip=PipSettings(conf="[global]\n"), pip_config_list="")
    b.plan_deps(spec_of(project(tmp_path, {})), IMAGE)
    assert "notice: dill: pre-installed on Cortex 0.23, added (api 'deps')" in lines


def test_an_image_that_cannot_be_asked_gets_the_packages_added_and_is_asked_again(tmp_path):
    import docker.errors

    class Refusing(FakeEngine):
        def create(self, image, entrypoint, **kwargs):
            self.probes.append((image, entrypoint[3:]))
            raise docker.errors.APIError("engine busy")

    engine, lines = Refusing(), []
    b = ImageBuilder(engine, base_image="base:1", progress=lines.append, pip_config_list="", notify=lambda m, a: None)
    spec = spec_of(project(tmp_path, {}))
    plan = b.plan_deps(spec, IMAGE)
    assert plan.files["deps/cortex-preinstalled.txt"] == b"dill\nnumpy\n"  # unknown: added (pip skips what is there)
    assert any(line.startswith(f"notice: could not ask {IMAGE}") for line in lines)
    b.plan_deps(spec, IMAGE)
    assert len(engine.probes) == 2  # no answer was remembered


# -- what requirements.txt brings in: -r / -c includes and local paths ----------------------------


def test_includes_and_local_paths_go_into_the_layer_at_their_project_places(tmp_path):
    root = project(tmp_path, {
        "requirements.txt": "-r reqs/base.txt\n--constraint=reqs/pins.txt\n./wheels/probe-1.0-py3-none-any.whl\n"
                            "-e ./localpkg\n",
        "reqs/base.txt": "-r common.txt\nsix==1.16.0\n",
        "reqs/common.txt": "dill==0.3.8\n",
        "reqs/pins.txt": "six<2\n",
        "wheels/probe-1.0-py3-none-any.whl": "a wheel",
        "localpkg/setup.py": "from setuptools import setup\nsetup(name='localpkg')\n",
        "localpkg/localpkg/__init__.py": "",
        "localpkg/localpkg/__pycache__/x.cpython-311.pyc": "bytecode",
    })
    plan = builder(FakeEngine(has={"numpy"}), []).plan_deps(spec_of(root), IMAGE)
    names = {n for n in plan.files if n.startswith("deps/")}
    assert names == {"deps/requirements.txt", "deps/reqs/base.txt", "deps/reqs/common.txt", "deps/reqs/pins.txt",
                     "deps/wheels/probe-1.0-py3-none-any.whl", "deps/localpkg/setup.py",
                     "deps/localpkg/localpkg/__init__.py"}
    # dill is named in an included file: not added again (Cortex's pin would conflict with it)
    assert "deps/cortex-preinstalled.txt" not in plan.files
    assert "requirements.txt, 6 files they bring in" in plan.description

    before = plan.tag
    (root / "reqs" / "common.txt").write_text("dill==0.3.9\n")  # an edit two includes down
    assert builder(FakeEngine(has={"numpy"}), []).plan_deps(spec_of(root), IMAGE).tag != before
    (root / "reqs" / "common.txt").write_text("dill==0.3.8\n")
    assert builder(FakeEngine(has={"numpy"}), []).plan_deps(spec_of(root), IMAGE).tag == before
    (root / "localpkg" / "localpkg" / "__init__.py").write_text("VERSION = 2\n")  # the local package's code
    assert builder(FakeEngine(has={"numpy"}), []).plan_deps(spec_of(root), IMAGE).tag != before


@pytest.mark.parametrize(("text", "said"), [
    ("-r ../outside.txt\n", "requirements.txt line 1 includes ../outside.txt, which is outside the project folder"),
    ("six\n-r missing.txt\n", "requirements.txt line 2 includes missing.txt, which is not a file in the "
                             "project folder"),
    ("-r https://example.com/r.txt\n", "requirements.txt line 1 includes https://example.com/r.txt, a URL"),
    ("/opt/wheels/x-1.0-py3-none-any.whl\n", "requirements.txt line 1 installs from /opt/wheels/x-1.0-py3-none-any"
                                             ".whl, which is outside the project folder"),
    ("./vendor/gone-1.0.tar.gz\n", "requirements.txt installs from vendor/gone-1.0.tar.gz, which is not in the "
                                   "project folder"),
])
def test_what_the_image_build_cannot_see_is_refused_saying_where(tmp_path, text, said):
    spec = spec_of(project(tmp_path, {"requirements.txt": text}))
    with pytest.raises(DependencyError) as e:
        builder(FakeEngine(), []).plan_deps(spec, IMAGE)
    assert said in str(e.value) and e.value.deterministic


def test_a_symlinked_include_that_leaves_the_project_is_refused(tmp_path):
    (tmp_path / "secret.txt").write_text("six\n")
    root = project(tmp_path, {"requirements.txt": "-r base.txt\n"})
    (root / "base.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(DependencyError) as e:
        builder(FakeEngine(), []).plan_deps(spec_of(root), IMAGE)
    assert "line 1 includes base.txt, which is not a file in the project folder" in str(e.value)
