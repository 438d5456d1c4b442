"""Carrying the host's pip settings into image builds, and what decides an image's tag.

pip_settings_for_build() is fed `pip config list` text and an environment, as
a user's host would produce them; the results are the pip.conf a build uses
and the notices a user reads.
"""

from __future__ import annotations

import io
import tarfile

from cortexd.backends.image_plans import (
    BuildPlan,
    build_failure,
    deps_plan,
    deps_repository,
    runtime_plan,
    tar_context,
)
from cortexd.backends.pip_settings import (
    CERT_IN_IMAGE,
    parse_pip_config_list,
    pip_context_files,
    pip_settings_for_build,
)
from tests.builders import conf_values

# what `pip config list` prints on this project's CI machine
THIS_HOST = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.disable-pip-version-check='1'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
"""


def test_parse_reads_sections_keys_and_quoted_values():
    parsed = parse_pip_config_list(THIS_HOST + "install.trusted-host='a.example b.example'\n")
    assert parsed["global"]["extra-index-url"] == "file:///opt/pypi/simple file:///opt/pypi-more/simple"
    assert parsed[":env:"]["timeout"] == "180"  # default-timeout is pip's alias of timeout
    assert parsed["install"]["trusted-host"] == "a.example b.example"


def test_this_hosts_settings_keep_the_cert_and_drop_local_indexes_with_notices():
    s = pip_settings_for_build(THIS_HOST, {"PIP_CERT": "/etc/ssl/certs/ca-certificates.crt"})
    conf = conf_values(s.conf)
    assert s.conf.startswith("[global]\n")
    assert s.cert_file == "/etc/ssl/certs/ca-certificates.crt"
    assert conf["cert"] == [CERT_IN_IMAGE]
    assert conf["timeout"] == ["180"]
    assert "extra-index-url" not in conf and "find-links" not in conf
    assert len(s.notices) == 3
    assert any("file:///opt/pypi/simple" in n and "does not exist inside image builds" in n for n in s.notices)
    assert any("/opt/wheels" in n for n in s.notices)


def test_remote_indexes_and_trusted_hosts_are_carried():
    text = (
        "global.index-url='https://mirror.corp/simple'\n"
        "global.extra-index-url='https://a.corp/simple https://b.corp/simple'\n"
        "global.trusted-host='a.corp b.corp'\n"
    )
    s = pip_settings_for_build(text, {})
    conf = conf_values(s.conf)
    assert conf["index-url"] == ["https://mirror.corp/simple"]
    assert conf["extra-index-url"] == ["https://a.corp/simple", "https://b.corp/simple"]
    assert conf["trusted-host"] == ["a.corp", "b.corp"]
    assert s.cert_file is None and "cert" not in conf
    assert s.notices == ()


def test_precedence_env_over_install_over_global():
    text = "global.index-url='https://global/simple'\ninstall.index-url='https://install/simple'\n"
    assert conf_values(pip_settings_for_build(text, {}).conf)["index-url"] == ["https://install/simple"]
    s = pip_settings_for_build(text, {"PIP_INDEX_URL": "https://env/simple"})
    assert conf_values(s.conf)["index-url"] == ["https://env/simple"]


def test_local_index_url_falls_back_to_pypi_with_a_notice():
    s = pip_settings_for_build("global.index-url='file:///srv/simple'\n", {})
    assert "index-url" not in conf_values(s.conf)
    assert any("pip's default index" in n for n in s.notices)


def test_proxy_variables_become_build_args_and_loopback_proxies_are_flagged():
    env = {"HTTPS_PROXY": "http://proxy.corp:3128", "no_proxy": "localhost", "PATH": "/bin"}
    s = pip_settings_for_build("", env)
    assert s.build_args == {"HTTPS_PROXY": "http://proxy.corp:3128", "no_proxy": "localhost"}
    assert s.notices == ()
    s = pip_settings_for_build("", {"HTTP_PROXY": "http://127.0.0.1:8080"})
    assert s.build_args == {"HTTP_PROXY": "http://127.0.0.1:8080"}
    assert any("loopback" in n for n in s.notices)


def test_unreadable_cert_is_left_out_of_the_context():
    s = pip_settings_for_build("global.cert='/nope.pem'\n", {})
    files = pip_context_files(s, cert=None)
    assert "cert" not in files["pip/pip.conf"].decode()
    assert "pip/cert.pem" not in files
    files = pip_context_files(s, cert=b"PEM")
    assert files["pip/cert.pem"] == b"PEM" and f"cert = {CERT_IN_IMAGE}" in files["pip/pip.conf"].decode()


def _runtime(**changes) -> BuildPlan:
    args = {
        "family": "python", "compute": "cpu", "base_image": "python:3.11-slim", "dockerfile": b"FROM x",
        "requirements": {"runtime.txt": b"aiohttp", "python-cpu.txt": b"", "onnx-cpu.txt": b"onnxruntime"},
        "runtime_files": {"__init__.py": b"", "server.py": b"v1"},
        "pip_files": {"pip/pip.conf": b"[global]\n"}, "pip_build_args": {},
    }
    args.update(changes)
    return runtime_plan(**args)


def test_runtime_image_tag_is_a_content_hash_of_what_goes_in():
    plan = _runtime()
    assert plan.tag.startswith("cortexd-python-cpu:")
    assert plan.tag == _runtime().tag
    assert plan.buildargs == {"BASE_IMAGE": "python:3.11-slim", "PREDICTOR_TYPE": "python", "COMPUTE": "cpu"}
    assert "predictor_runtime/server.py" in plan.files and "requirements/onnx-cpu.txt" not in plan.files
    # each input changes the tag; proxies (build args only) do not
    assert _runtime(runtime_files={"__init__.py": b"", "server.py": b"v2"}).tag != plan.tag
    assert _runtime(base_image="cortexd/base:bookworm").tag != plan.tag
    assert _runtime(pip_files={"pip/pip.conf": b"[global]\nindex-url = x\n"}).tag != plan.tag
    assert _runtime(pip_build_args={"HTTP_PROXY": "http://p:1"}).tag == plan.tag
    assert _runtime(family="onnx").tag.startswith("cortexd-onnx-cpu:")


CPU, CPU_ABC = "cortexd-python-cpu", "cortexd-python-cpu:abc"


def test_requirements_layer_is_keyed_by_the_projects_files():
    pip = {"pip/pip.conf": b"[global]\n"}
    assert deps_plan(CPU_ABC, CPU, b"FROM", {}, pip, {}) is None
    a = deps_plan(CPU_ABC, CPU, b"FROM", {"requirements.txt": b"numpy\n"}, pip, {})
    again = deps_plan(CPU_ABC, CPU, b"FROM", {"requirements.txt": b"numpy\n"}, pip, {})
    other = deps_plan(CPU_ABC, CPU, b"FROM", {"requirements.txt": b"scipy\n"}, pip, {})
    newer_base = deps_plan("cortexd-python-cpu:def", CPU, b"FROM", {"requirements.txt": b"numpy\n"}, pip, {})
    assert a is not None and again is not None and other is not None and newer_base is not None
    assert a.tag.startswith("cortexd-python-cpu-deps:") and a.tag == again.tag
    assert len({a.tag, other.tag, newer_base.tag}) == 3
    assert a.buildargs["RUNTIME_IMAGE"] == "cortexd-python-cpu:abc"
    assert a.files["deps/requirements.txt"] == b"numpy\n"


def test_deps_repository_names():
    assert deps_repository("cortexd-onnx-gpu:0123") == "cortexd-onnx-gpu"
    assert (deps_repository("registry.corp:5000/team/predictor:1.2")
            == "cortexd-custom-registry.corp-5000-team-predictor")
    assert deps_repository("ubuntu") == "cortexd-custom-ubuntu"


def test_context_files_are_readable_by_the_images_unprivileged_user():
    buf = tar_context({"Dockerfile": b"FROM x", "deps/dependencies.sh": b"apt-get install -y curl"})
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes == {"Dockerfile": 0o644, "deps/dependencies.sh": 0o755}


def test_build_failure_shows_the_failing_steps_output_only():
    plan = _runtime()
    log = [
        "Step 1/3 : FROM x", " ---> abc",
        "Step 3/3 : RUN pip install -r requirements.txt", " ---> Running in 123",
        "\x1b[91mERROR: No matching distribution found for nope==1\n\x1b[0m",
    ]
    msg = build_failure(plan, "iris", log, "The command '/bin/sh -c pip install' returned a non-zero code: 1")
    first, *rest = msg.splitlines()
    assert first.startswith("building the image of api 'iris' failed")
    assert first.endswith("at Step 3/3 : RUN pip install -r requirements.txt")
    assert "ERROR: No matching distribution found for nope==1" in rest
    assert "Step 1/3 : FROM x" not in msg and "\x1b" not in msg
    assert rest[-1].endswith("returned a non-zero code: 1")


def test_notices_never_carry_an_index_or_proxy_password():
    s = pip_settings_for_build("global.index-url='http://ci:TOKEN1@localhost:8080/simple'\n",
                               {"HTTPS_PROXY": "http://me:TOKEN2@127.0.0.1:3128"})
    said = "\n".join(s.notices)
    assert "ci:****@localhost:8080" in said and "me:****@127.0.0.1:3128" in said
    assert "TOKEN1" not in said and "TOKEN2" not in said
    assert s.build_args == {"HTTPS_PROXY": "http://me:TOKEN2@127.0.0.1:3128"}  # used, never said
