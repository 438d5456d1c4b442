"""One rule for a project's files: the watcher (hot reload) and the image (`cortexd build`) agree.

Also how the image side reads them: an unreadable .cortexignore or .env is a clear error,
and files are hashed and put into the build context in chunks, never held whole in memory.
"""

from __future__ import annotations

import hashlib
import tarfile
import tracemalloc

import pytest

from cortexd.backends.image_plans import tar_context
from cortexd.daemon.watcher import is_ignored
from cortexd.errors import ExportError
from cortexd.kube import layout
from cortexd.kube.bundle import read_image_files
from cortexd.project_files import HostFile, hash_file
from cortexd.spec import load_config

PATTERNS = ["data/", "logs/*.log", "scratch.py", "!keep.csv", "*.csv"]
CASES = [
    "predictor.py", "pkg/mod.py", "node_modules/lib/index.js", "venv/lib/site.py", "predictor.log",
    "state.db", "data", "data/x.csv", "sub/data/x", "logs/a.log", "keep.csv", "other.csv",
    "scratch.py", "sub/scratch.py", ".git/config", "pkg/__pycache__/m.pyc", "m.pyc", "sub/cortex.yaml",
]

YAML = "- name: api\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"


@pytest.mark.parametrize("rel", CASES)
def test_the_watcher_and_the_image_agree_on_every_project_file(rel):
    import pathspec

    ignored = pathspec.GitIgnoreSpec.from_lines(PATTERNS)
    in_image = layout.is_project_file(rel, {"cortex.yaml"}, ignored)
    watched = not is_ignored(rel, PATTERNS)
    assert in_image == watched, rel


def test_the_watcher_keeps_what_defines_a_version_the_image_leaves_out():
    # the only differences, by design: cortex.yaml and .env are read for the image, not copied
    assert not is_ignored("cortex.yaml", []) and not layout.is_project_file("cortex.yaml", {"cortex.yaml"})
    assert not is_ignored(".env", []) and not layout.is_project_file(".env", set())
    assert is_ignored("predictor.py~", []) and is_ignored("#predictor.py#", [])  # editor temp files


def project(tmp_path, files: dict[str, bytes]):
    for name, data in {"cortex.yaml": YAML.encode(), "predictor.py": b"class PythonPredictor: pass\n",
                       **files}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (spec,) = load_config([str(tmp_path)]).apis
    return spec


def test_an_unreadable_cortexignore_stops_the_build_with_its_name(tmp_path):
    spec = project(tmp_path, {".cortexignore": b"data/\n\xff\xfe\x80"})
    with pytest.raises(ExportError) as info:
        read_image_files(spec)
    assert str(info.value).startswith(f"api 'api': cannot read {tmp_path / '.cortexignore'}:")


def test_an_unreadable_env_is_an_export_error(tmp_path):
    spec = project(tmp_path, {".env": b"KEY=\xff\xfe\x80\n"})
    with pytest.raises(ExportError) as info:
        read_image_files(spec)
    assert f"cannot read {tmp_path / '.env'}" in str(info.value)


def test_env_is_read_by_the_backends_reader(tmp_path):
    spec = project(tmp_path, {".env": b"export A='x y'\nB=\"multi\nline\"\nC\n"})
    assert read_image_files(spec).dotenv == {"A": "x y", "B": "multi\nline"}


def test_a_file_is_hashed_and_put_into_the_context_in_chunks(tmp_path):
    big = tmp_path / "model.bin"
    with open(big, "wb") as f:
        f.writelines(bytes([i]) * (1 << 20) for i in range(48))  # 48 MiB of distinct chunks
    tracemalloc.start()
    try:
        entry = hash_file(big)
        context = tar_context({"Dockerfile": b"FROM x", "models/model.bin": entry})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with context:
        assert peak < 8 << 20, f"peak {peak} bytes for a 48 MiB file"
        assert entry.size == 48 << 20
        assert entry.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
        assert context.fileno() >= 0  # a temporary file on disk, not a BytesIO
        with tarfile.open(fileobj=context) as tar:
            member = tar.extractfile("models/model.bin")
            assert member is not None
            assert hashlib.sha256(member.read()).hexdigest() == entry.sha256


def test_image_files_are_digests_and_the_tag_is_the_one_bytes_give(tmp_path):
    spec = project(tmp_path, {"labels.txt": b"a\nb\n"})
    files = read_image_files(spec).files
    entry = files[str(tmp_path / "labels.txt")]
    assert isinstance(entry, HostFile) and entry.size == 4
    # the tag does not depend on how the content was read
    as_bytes = {"project/labels.txt": b"a\nb\n"}
    assert layout.image_name("r.example", spec, as_bytes) == layout.image_name(
        "r.example", spec, {"project/labels.txt": entry})
