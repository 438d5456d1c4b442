"""`cortexd export kubernetes` and `cortexd build` from the command line: what they write, bad input.

Bad input (an unknown flavor, no registry, a model folder that is missing) is
a clear message on stderr and exit 1, and DIR is left exactly as it was: no
half-written manifests, no temporary folder beside it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from cortexd.errors import ExportError
from cortexd.kube.export import export_kubernetes
from cortexd.kube.manifests import ExportOptions
from cortexd.spec import load_config
from tests.builders import write_project

PREDICTOR = """\
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return 1
"""
ONNX_PREDICTOR = """\
class ONNXPredictor:
    def __init__(self, onnx_client, config):
        pass

    def predict(self, payload):
        return 1
"""
TWO_APIS = """\
- name: first
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
- name: second
  kind: RealtimeAPI
  predictor:
    type: onnx
    path: onnx_predictor.py
    model_path: model/
"""


def two_api_project(root: Path) -> Path:
    project = write_project(root, TWO_APIS, {"predictor.py": PREDICTOR, "onnx_predictor.py": ONNX_PREDICTOR})
    (project / "model").mkdir()
    (project / "model" / "net.onnx").write_bytes(b"\0" * 3000)
    return project


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_writes_one_file_per_api_and_a_report(cli, tmp_path):
    project = two_api_project(tmp_path / "proj")
    out = tmp_path / "k8s"
    r = cli("export", "kubernetes", str(project), "--registry", "127.0.0.1:5000", "-o", str(out))
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["cortexd-report.txt", "first.yaml", "second.yaml"]
    kinds = [d["kind"] for d in yaml.safe_load_all((out / "second.yaml").read_text())]
    assert kinds == ["Deployment", "Service", "Ingress", "HorizontalPodAutoscaler"]
    assert "api 'second': wrote second.yaml" in r.out
    assert "model " in r.out and "2.9 KiB" in r.out  # the local model folder and its size
    assert "upscale_tolerance" in r.out and "Prometheus adapter" in r.out
    assert f"kubectl apply -f {out}" in r.out
    assert (out / "cortexd-report.txt").read_text().count("api '") == 2


def test_unknown_flavor_is_exit_1_and_writes_nothing(cli, tmp_path):
    project = two_api_project(tmp_path / "proj")
    out = tmp_path / "k8s"
    r = cli("export", "kubernetes", str(project), "--registry", "r.example", "--flavor", "helm", "-o", str(out))
    assert r.code == 1
    assert "unknown flavor 'helm': choose one of deployment, knative" in r.err
    assert "Traceback" not in r.err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_missing_registry_says_why_it_is_needed(cli, tmp_path):
    project = two_api_project(tmp_path / "proj")
    r = cli("export", "kubernetes", str(project), "-o", str(tmp_path / "k8s"))
    assert r.code == 1
    assert "--registry is required" in r.err and "cortexd build --registry REG --push" in r.err
    assert not (tmp_path / "k8s").exists()


def test_malformed_registry_is_exit_1(cli, tmp_path):
    project = two_api_project(tmp_path / "proj")
    r = cli("export", "kubernetes", str(project), "--registry", "My Registry", "-o", str(tmp_path / "k8s"))
    assert r.code == 1 and "is not a registry name" in r.err


def test_missing_model_folder_leaves_an_existing_dir_as_it_was(cli, tmp_path):
    project = two_api_project(tmp_path / "proj")
    out = tmp_path / "k8s"
    assert cli("export", "kubernetes", str(project), "--registry", "r.example", "-o", str(out)).code == 0
    (out / "mine.txt").write_text("the user's own file")
    before = snapshot(out)
    shutil.rmtree(project / "model")
    (project / "predictor.py").write_text(PREDICTOR + "# changed\n")  # first.yaml would change
    r = cli("export", "kubernetes", str(project), "--registry", "r.example", "-o", str(out))
    assert r.code == 1
    assert "model_path" in r.err and str(project / "model") in r.err
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k8s", "proj"]


def test_model_folder_gone_after_validation_is_an_export_error(tmp_path):
    """The folder vanishes between loading the config and reading the files: same rule, nothing written."""
    project = two_api_project(tmp_path / "proj")
    apis = list(load_config([str(project)]).apis)
    shutil.rmtree(project / "model")
    out = tmp_path / "k8s"
    try:
        export_kubernetes(apis, "r.example", ExportOptions(), out)
    except ExportError as e:
        message = str(e)
    else:
        raise AssertionError("export succeeded without the model folder")
    assert "api 'second': the model folder" in message and "is missing" in message
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_output_path_that_is_a_file_is_exit_1(cli, tmp_path):
    project = two_api_project(tmp_path / "proj")
    (tmp_path / "k8s").write_text("not a folder")
    r = cli("export", "kubernetes", str(project), "--registry", "r.example", "-o", str(tmp_path / "k8s"))
    assert r.code == 1 and "is not a folder" in r.err
    assert (tmp_path / "k8s").read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k8s", "proj"]


def test_a_config_path_outside_the_project_is_reported(cli, tmp_path):
    """Locally `../shared/labels.json` opens; in the image it does not exist: the report says so."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "labels.json").write_text("[]")
    config = ("- name: api\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
              "    config:\n      labels: ../shared/labels.json\n      local: here.json\n"
              "      ignored: data/big.csv\n      text: not a path\n")
    project = write_project(tmp_path / "proj", config, {"predictor.py": PREDICTOR, "here.json": "[]",
                                                        ".cortexignore": "data/\n"})
    (project / "data").mkdir()
    (project / "data" / "big.csv").write_text("1,2\n")
    r = cli("export", "kubernetes", str(project), "--registry", "r.example", "-o", str(tmp_path / "k8s"))
    assert r.code == 0, r.err
    notes = [ln for ln in r.out.splitlines() if "which the image does not carry" in ln]
    assert len(notes) == 2, r.out
    assert "predictor.config.labels = '../shared/labels.json'" in notes[0]
    assert "predictor.config.ignored = 'data/big.csv'" in notes[1]


def test_build_without_a_docker_engine_is_exit_1_with_the_remedy(cli, tmp_path):
    project = two_api_project(tmp_path / "proj")
    cli.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    r = cli("build", str(project), "--registry", "r.example")
    assert r.code == 1
    assert "cortexd build needs the Docker engine" in r.err and "dockerd" in r.err
    assert "--backend process" not in r.err and "Traceback" not in r.err


def test_build_without_registry_or_with_a_missing_model_is_exit_1(cli, tmp_path):
    project = two_api_project(tmp_path / "proj")
    r = cli("build", str(project))
    assert r.code == 1 and "--registry is required" in r.err
    apis_dir = project / "model"
    shutil.rmtree(apis_dir)
    r = cli("build", str(project), "--registry", "r.example")
    assert r.code == 1 and str(apis_dir) in r.err


def test_a_link_out_of_the_project_is_refused_with_its_name(cli, tmp_path):
    # another project's .env (0600), linked in: it must not end up in an image about to be pushed
    other = tmp_path / "other-project"
    other.mkdir()
    (other / ".env").write_text("OTHER_TOKEN=theirs\n")
    (other / ".env").chmod(0o600)
    project = write_project(tmp_path / "proj", TWO_APIS.split("- name: second")[0],
                            {"predictor.py": PREDICTOR})
    (project / "settings.env").symlink_to(other / ".env")
    for args in (["build", str(project), "--registry", "r.example"],
                 ["export", "kubernetes", str(project), "--registry", "r.example", "-o", str(tmp_path / "k8s")]):
        r = cli(*args)
        assert r.code == 1, r
        assert f"{project / 'settings.env'} is a symbolic link to {other / '.env'}" in r.err, r.err
        assert ".cortexignore" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "k8s").exists()


def test_the_dotenv_secret_is_0600_in_an_existing_folder(cli, tmp_path):
    project = two_api_project(tmp_path / "proj")
    (project / ".env").write_text("API_TOKEN=s3cret\n")
    (project / ".env").chmod(0o600)
    out = tmp_path / "k8s"
    out.mkdir(mode=0o755)  # a folder every user can read, as `-o EXISTING_DIR` often is
    (out / "first.secret.yaml").write_text("old\n")
    (out / "first.secret.yaml").chmod(0o644)
    r = cli("export", "kubernetes", str(project), "--registry", "127.0.0.1:5000", "-o", str(out))
    assert r.code == 0, r.err
    for name in ("first.secret.yaml", "second.secret.yaml"):
        assert "s3cret" in (out / name).read_text()
        assert (out / name).stat().st_mode & 0o777 == 0o600, name
    assert "s3cret" not in (out / "first.yaml").read_text()
