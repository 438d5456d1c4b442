"""What `cortexd build` packs from disk (cortexd/kube/bundle.py): links never leave the folder
being packed, and files keep their modes in the image (image_plans.image_mode).

From the command line (`cortexd build` / `export kubernetes` refusing a link): tests/integration/test_export_cli.py.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from cortexd.backends.image_plans import write_context
from cortexd.errors import ExportError
from cortexd.kube import layout
from cortexd.kube.bundle import read_image_files
from cortexd.project_files import image_mode
from cortexd.spec import load_config
from tests.builders import write_project

PREDICTOR = "class PythonPredictor:\n    def __init__(self, config):\n        pass\n\n" \
            "    def predict(self, payload):\n        return 1\n"
API = "- name: api\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"


def spec_of(project):
    (spec,) = load_config([str(project)]).apis
    return spec


def test_a_folder_link_out_of_the_project_is_refused_with_its_name(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "vocab.txt").write_text("a b c")
    project = write_project(tmp_path / "proj", API, {"predictor.py": PREDICTOR})
    (project / "vocab").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ExportError) as e:
        read_image_files(spec_of(project))
    assert f"{project / 'vocab'} is a symbolic link to {tmp_path / 'elsewhere'}, outside {project}" in str(e.value)
    (project / ".cortexignore").write_text("vocab\n")  # the remedy the message names
    assert not any("vocab" in p for p in read_image_files(spec_of(project)).files)


def test_a_file_link_to_another_projects_dotenv_is_refused(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".env").write_text("TOKEN=theirs\n")
    project = write_project(tmp_path / "proj", API, {"predictor.py": PREDICTOR})
    (project / "config.env").symlink_to(tmp_path / "other" / ".env")
    with pytest.raises(ExportError, match=r"config\.env is a symbolic link to .*other/\.env, outside"):
        read_image_files(spec_of(project))


def test_a_link_inside_the_project_stays_a_link_and_an_excluded_target_is_refused(tmp_path):
    project = write_project(tmp_path / "proj", API, {"predictor.py": PREDICTOR})
    (project / "data").mkdir()
    (project / "data" / "labels.txt").write_text("x")
    (project / "labels").symlink_to(project / "data")
    (project / "data" / "loop").symlink_to(project)  # back to the project itself
    (project / "data" / "current.txt").symlink_to("labels.txt")
    (project / "gone").symlink_to(project / "missing")  # dangling: nothing to pack
    spec = spec_of(project)
    files = read_image_files(spec).files
    assert files[str(project / "labels")].link == "data"
    assert files[str(project / "data" / "loop")].link == ".."
    assert files[str(project / "data" / "current.txt")].link == "labels.txt"
    assert str(project / "data" / "labels.txt") in files and str(project / "gone") not in files
    assert sum(1 for p in files if p.endswith("predictor.py")) == 1
    buf = io.BytesIO()
    write_context(layout.bundle_files(spec, files, b"{}"), buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        link = tar.getmember("project/labels")
        assert link.issym() and link.linkname == "data"
    (project / ".env").write_text("TOKEN=mine\n")
    (project / "settings.txt").symlink_to(project / ".env")  # the project's own .env, under a kept name
    with pytest.raises(ExportError, match=r"settings\.txt is a symbolic link to .*/\.env, which the image leaves out"):
        read_image_files(spec_of(project))


def test_a_model_folder_cortex_yaml_names_may_be_a_link_but_may_not_link_out(tmp_path):
    models = tmp_path / "store" / "iris"
    (models / "1").mkdir(parents=True)
    (models / "1" / "model.onnx").write_bytes(b"onnx")
    project = write_project(tmp_path / "proj", API + "    model_path: model/\n", {"predictor.py": PREDICTOR})
    (project / "model").symlink_to(models)
    files = read_image_files(spec_of(project)).files
    assert str(project / "model" / "1" / "model.onnx") in files  # named in cortex.yaml: packed
    (tmp_path / "secret").write_text("not a model")
    (models / "1" / "extra").symlink_to(tmp_path / "secret")
    outside = r"model/1/extra is a symbolic link to .*/secret, outside .*/model \(that is .*store/iris\)"
    with pytest.raises(ExportError, match=outside):
        read_image_files(spec_of(project))


@pytest.mark.parametrize(("host", "image"), [
    (0o644, 0o644), (0o600, 0o640), (0o755, 0o755), (0o700, 0o750), (0o666, 0o644), (0o400, 0o440),
    (0o4755, 0o755),
])
def test_a_files_image_mode_follows_its_host_mode_readable_by_the_predictors_group(host, image):
    assert image_mode(host) == image
    assert not image_mode(host) & 0o7022  # never writable but by root, never set-id


def test_files_keep_their_modes_in_the_build_context_and_a_chmod_is_a_new_tag(tmp_path):
    project = write_project(tmp_path / "proj", API, {"predictor.py": PREDICTOR, "run.sh": "echo\n",
                                                      "tool": "#!/bin/sh\n", "secret.json": "{}"})
    (project / "tool").chmod(0o755)
    (project / "run.sh").chmod(0o644)
    (project / "secret.json").chmod(0o600)
    spec = spec_of(project)
    files = read_image_files(spec).files
    context = layout.bundle_files(spec, files, b"{}")
    buf = io.BytesIO()
    write_context(context, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["project/tool"] == 0o755  # executable in the image too
    assert modes["project/secret.json"] == 0o640  # not world-readable
    assert modes["project/run.sh"] == 0o644  # as on the host, whatever the name
    assert modes["spec.json"] == 0o644  # generated files: as before
    assert "COPY --chown=0:10001 project/" in context["Dockerfile"].decode()
    tag = layout.image_name("r.example", spec, context)
    (project / "tool").chmod(0o644)
    assert layout.image_name("r.example", spec, layout.bundle_files(spec, read_image_files(spec).files, b"{}")) != tag


def test_a_config_path_through_a_kept_link_is_carried(tmp_path):
    project = write_project(tmp_path / "proj", API + "    config:\n      labels: labels/labels.txt\n",
                            {"predictor.py": PREDICTOR})
    (project / "data").mkdir()
    (project / "data" / "labels.txt").write_text("x")
    (project / "labels").symlink_to("data")
    assert read_image_files(spec_of(project)).warnings == ()
