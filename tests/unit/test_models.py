"""ModelStore: versions, layouts, LRU limits, live reload, S3 through a fake client, clear errors."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from predictor_runtime.contract import RuntimePredictor
from predictor_runtime.model_layout import layout_problem
from predictor_runtime.model_s3 import S3Access, S3Source
from predictor_runtime.model_sources import LocalSource, ModelSourceError
from predictor_runtime.models import (
    DEFAULT_MODEL,
    ModelNotFound,
    ModelStore,
    make_source,
    store_from_spec,
)
from tests.unit.s3_fakes import FakeS3

pytestmark = pytest.mark.timeout(30)


class Loads:
    """A loader that records what it loaded and how many models were in memory meanwhile."""

    def __init__(self):
        self.paths: list[str] = []
        self.store: ModelStore | None = None
        self.peak = 0

    def __call__(self, path, entry, version):
        self.paths.append(path)
        if self.store is not None:
            self.peak = max(self.peak, len(self.store.loaded()) + 1)  # the one being loaded counts
        return f"{entry.name}@{version}"


def store_for(kind: str, models: dict, loads: Loads | None = None, **kw) -> ModelStore:
    loads = loads or Loads()
    store = ModelStore(kind, {n: (p, None) for n, p in models.items()}, loader=loads,
                       poll_interval=60, settle=0.01, **kw)
    loads.store = store
    return store


def make_version(root: Path, version: int | None, files: dict[str, bytes]) -> Path:
    folder = root / str(version) if version is not None else root
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


# ---- layouts (pure) ----------------------------------------------------------------

@pytest.mark.parametrize("kind, files, problem", [
    ("onnx", ["m.onnx"], None),
    ("onnx", ["m.onnx", "readme.txt"], None),
    ("onnx", [], "expected exactly one .onnx file; found nothing"),
    ("onnx", ["a.onnx", "b.onnx"], "expected exactly one .onnx file; found 2 .onnx files (a.onnx, b.onnx)"),
    ("tensorflow", ["saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00001"],
     None),
    ("tensorflow", ["saved_model.pb"], None),
    ("tensorflow", ["saved_model.pb", "variables/variables.data-00000-of-00001"],
     "expected variables/variables.index next to saved_model.pb (the SavedModel is incomplete)"),
    ("tensorflow", ["model.h5"], "expected a TensorFlow SavedModel (saved_model.pb); found model.h5"),
    ("python", [], None),
    ("python", ["anything.bin"], None),
])
def test_layout_problem(kind, files, problem):
    assert layout_problem(kind, files) == problem


def test_only_local_paths_and_s3_urls():
    with pytest.raises(ModelSourceError, match="only local paths and s3:// URLs are supported"):
        make_source("gs://bucket/model")
    assert isinstance(make_source("/some/where"), LocalSource)
    assert isinstance(make_source("s3://bucket/model"), S3Source)


# ---- versions ---------------------------------------------------------------------------

def test_unversioned_model_is_version_1_and_latest_is_the_highest(tmp_path):
    plain = make_version(tmp_path / "plain", None, {"m.onnx": b"x"})
    versioned = tmp_path / "versioned"
    for v in (1, 2, 10):
        make_version(versioned, v, {"m.onnx": b"x"})
    loads = Loads()
    store = store_for("onnx", {"plain": str(plain), "versioned": str(versioned)}, loads)
    store.start()
    assert store.resolve("plain")[1] == 1
    assert store.resolve("versioned")[1] == 10
    assert store.get("versioned", "2") == "versioned@2"
    assert store.describe()["models"]["versioned"]["versions"] == [1, 2, 10]
    # without cache_size every version is loaded at start-up, each once
    assert len(store.loaded()) == 4
    assert len(loads.paths) == 4


def test_unknown_names_and_versions_are_404_with_what_exists(tmp_path):
    store = store_for("python", {"a": str(make_version(tmp_path / "a", 1, {"f": b"x"}).parent)})
    store.start()
    with pytest.raises(ModelNotFound) as info:
        store.get("b")
    assert info.value.status == 404
    assert str(info.value) == "no model named 'b'; available models: a"
    with pytest.raises(ModelNotFound, match="model 'a' has no version 3; available versions: 1"):
        store.get("a", "3")
    with pytest.raises(ModelNotFound, match="model_version must be 'latest' or an integer; found 'newest'"):
        store.get("a", "newest")
    with pytest.raises(ModelNotFound, match=r"a model_name is needed: this API serves several models \(a\)"):
        store.get(None)


def test_single_model_path_is_described_as_model(tmp_path):
    model = make_version(tmp_path / "m", None, {"f": b"x"})
    predictor = RuntimePredictor(type="python", path="/p/predictor.py", model_path=str(model))
    store = store_from_spec("python", predictor, loader=Loads(), poll_interval=60)
    store.start()
    described = store.describe()
    assert described["model"]["versions"] == [1]
    assert described["model_cache"]["in_memory"] == [[DEFAULT_MODEL, 1]]
    with pytest.raises(ModelNotFound, match="this API serves a single model"):
        store.get("other")


def test_a_model_with_no_usable_version_fails_start_up_with_the_layout(tmp_path):
    folder = tmp_path / "m"
    make_version(folder, 1, {"a.onnx": b"x", "b.onnx": b"y"})
    store = store_for("onnx", {"m": str(folder)})
    with pytest.raises(ModelSourceError) as info:
        store.start()
    assert "model 'm' at" in str(info.value)
    assert "1: expected exactly one .onnx file; found 2 .onnx files (a.onnx, b.onnx)" in str(info.value)


def test_missing_model_path_fails_start_up(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        store_for("onnx", {"m": str(tmp_path / "nope")}).start()


# ---- LRU -------------------------------------------------------------------------------------

def test_memory_cache_evicts_lru_before_loading_and_never_exceeds(tmp_path):
    root = tmp_path / "models"
    for name in ("a", "b", "c"):
        make_version(root / name, 1, {"f": b"x"})
    loads = Loads()
    store = ModelStore("python", {}, models_dir=str(root), cache_size=2, disk_cache_size=2, loader=loads,
                       poll_interval=60, settle=0.01)
    loads.store = store
    store.start()
    assert store.loaded() == []  # with cache_size, models load on first use
    store.get("a")
    store.get("b")
    store.get("a")  # a is now the most recently used
    store.get("c")  # evicts b
    assert store.loaded() == [("a", 1), ("c", 1)]
    store.get("b")  # evicts a
    assert store.loaded() == [("c", 1), ("b", 1)]
    assert loads.peak <= 2
    assert store.describe()["model_cache"]["in_memory"] == [["c", 1], ["b", 1]]


def test_concurrent_gets_load_each_model_once(tmp_path):
    model = make_version(tmp_path / "m", None, {"f": b"x"})
    loads = Loads()
    store = store_for("python", {"m": str(model)}, loads, cache_size=1, disk_cache_size=1)
    store.start()
    threads = [threading.Thread(target=store.get, args=("m",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads.paths == [str(model)]


# ---- live versions ---------------------------------------------------------------------

def test_refresh_serves_new_versions_and_drops_removed_ones(tmp_path):
    folder = tmp_path / "m"
    make_version(folder, 1, {"m.onnx": b"one"})
    store = store_for("onnx", {"m": str(folder)})
    store.start()
    make_version(folder, 2, {"m.onnx": b"two"})
    store.refresh()
    assert store.resolve("m")[1] == 2
    assert ("m", 2) in store.loaded()  # loaded before it became latest
    import shutil
    shutil.rmtree(folder / "1")
    store.refresh()
    assert store.describe()["models"]["m"]["versions"] == [2]
    assert ("m", 1) not in store.loaded()
    with pytest.raises(ModelNotFound):
        store.get("m", "1")


def test_a_version_without_a_valid_layout_is_not_served_until_complete(tmp_path):
    folder = tmp_path / "m"
    make_version(folder, 1, {"m.onnx": b"one"})
    store = store_for("onnx", {"m": str(folder)})
    store.start()
    (folder / "2").mkdir()  # being copied: no .onnx file yet
    store.refresh()
    assert store.resolve("m")[1] == 1
    assert "2" in store.describe()["models"]["m"]["not_served"]
    (folder / "2" / "m.onnx").write_bytes(b"two")
    store.refresh()
    assert store.resolve("m")[1] == 2
    assert "not_served" not in store.describe()["models"]["m"]


def test_a_version_that_fails_to_load_is_not_served_and_retried_when_it_changes(tmp_path):
    folder = tmp_path / "m"
    make_version(folder, 1, {"m.onnx": b"good"})
    attempts = []

    def loader(path, entry, version):
        attempts.append(version)
        if Path(path).read_bytes() == b"half":
            raise ValueError("truncated protobuf")
        return version

    store = ModelStore("onnx", {"m": (str(folder), None)}, loader=loader, poll_interval=60, settle=0.01)
    store.start()
    make_version(folder, 2, {"m.onnx": b"half"})
    store.refresh()
    store.refresh()  # same files: not tried again
    assert store.resolve("m")[1] == 1
    assert attempts == [1, 2]
    (folder / "2" / "m.onnx").write_bytes(b"complete")
    store.refresh()
    assert store.resolve("m")[1] == 2
    assert store.get("m") == 2


def test_new_models_in_models_dir_are_served(tmp_path):
    root = tmp_path / "models"
    make_version(root / "a", None, {"f": b"x"})
    store = ModelStore("python", {}, models_dir=str(root), loader=Loads(), poll_interval=60, settle=0.01)
    store.start()
    make_version(root / "b", None, {"f": b"y"})
    store.refresh()
    assert store.get("b") == "b@1"
    import shutil
    shutil.rmtree(root / "a")
    store.refresh()
    with pytest.raises(ModelNotFound, match="available models: b"):
        store.get("a")


def test_poll_interval_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEXD_MODEL_POLL_INTERVAL", "0.25")
    assert ModelStore("python", {}).poll_interval == 0.25
    monkeypatch.setenv("CORTEXD_MODEL_POLL_INTERVAL", "soon")
    with pytest.raises(ModelSourceError, match="CORTEXD_MODEL_POLL_INTERVAL='soon': expected a number of seconds"):
        ModelStore("python", {})


# ---- S3 ---------------------------------------------------------------------------------------

def test_s3_models_are_listed_downloaded_and_disk_cache_is_lru(tmp_path):
    fake = FakeS3({
        "models/a/1/m.onnx": b"a1", "models/a/2/m.onnx": b"a2",
        "models/b/m.onnx": b"b", "models/c/3/m.onnx": b"c3",
    })
    loaded = []

    def loader(path, entry, version):
        loaded.append(Path(path).read_bytes())
        return entry.name

    store = ModelStore("onnx", {}, models_dir="s3://bucket/models", cache_size=1, disk_cache_size=2,
                       loader=loader, poll_interval=60, settle=0.01, disk_root=str(tmp_path / "cache"))
    store._dir._access = S3Access(fake)  # the seam: S3Source takes its client
    store.start()
    assert {n: sorted(e.versions) for n, e in store.entries.items()} == {"a": [1, 2], "b": [1], "c": [3]}
    store.get("a")
    store.get("b")
    store.get("c")
    assert loaded == [b"a2", b"b", b"c3"]
    described = store.describe()["model_cache"]
    assert described["on_disk"] == [["b", 1], ["c", 3]]  # a's download was removed first
    assert described["in_memory"] == [["c", 3]]
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_s3_without_boto3_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    store = ModelStore("onnx", {"m": ("s3://bucket/model", None)}, loader=Loads(), poll_interval=60)
    with pytest.raises(ModelSourceError) as info:
        store.start()
    assert "s3:// model paths need boto3" in str(info.value)
    assert "pip install 'cortexd[s3]'" in str(info.value)


def incomplete_saved_model(root: Path) -> Path:
    """A SavedModel whose variables were copied without their index (TensorFlow cannot restore it)."""
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"")
    return root


def test_validate_and_the_runtime_refuse_the_same_incomplete_saved_model(tmp_path):
    from cortexd.errors import ConfigError
    from cortexd.spec.load import load_documents

    (tmp_path / "predictor.py").write_text("class TensorFlowPredictor:\n    pass\n")
    incomplete_saved_model(tmp_path / "flat")
    incomplete_saved_model(tmp_path / "versioned" / "1")
    text = ("- name: flat\n  kind: RealtimeAPI\n  predictor:\n    type: tensorflow\n    path: predictor.py\n"
            "    model_path: flat\n"
            "- name: versioned\n  kind: RealtimeAPI\n  predictor:\n    type: tensorflow\n    path: predictor.py\n"
            "    model_path: versioned\n")
    with pytest.raises(ConfigError) as info:
        load_documents(text, "cortex.yaml", str(tmp_path))
    why = "expected variables/variables.index next to saved_model.pb (the SavedModel is incomplete)"
    assert [str(p) for p in info.value.problems] == [
        (f"cortex.yaml:6:17: api 'flat': predictor.model_path: {why}; found variables.data-00000-of-00001 in "
         f"{tmp_path / 'flat' / 'variables'}"),
        (f"cortex.yaml:12:17: api 'versioned': predictor.model_path: {why}; version folder 1/variables/ holds "
         "variables.data-00000-of-00001"),
    ]
    for name in ("flat", "versioned"):
        store = ModelStore("tensorflow", {DEFAULT_MODEL: (str(tmp_path / name), None)}, loader=lambda *a: "m",
                           poll_interval=60, settle=0.01, disk_root=str(tmp_path / "cache"))
        with pytest.raises(ModelSourceError, match=r"has no usable version .*variables/variables\.index"):
            store.start()
    (tmp_path / "flat" / "variables" / "variables.index").write_bytes(b"")  # as tf.saved_model.save writes it
    (tmp_path / "versioned" / "1" / "variables" / "variables.index").write_bytes(b"")
    assert len(load_documents(text, "cortex.yaml", str(tmp_path)).apis) == 2
