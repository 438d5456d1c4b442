"""The model store: versions, the memory LRU and live reload, what every model client sits on.

A `ModelStore` holds the models of one predictor (a single `model_path`, the
named `models.paths`, or every folder of `models.dir`) and answers
`get(name, version)` with a loaded model, loading it with the client's loader
on first use. The clients (clients/python.py, onnx.py, tensorflow.py) only
convert inputs and outputs; everything about where models are and which of
them are in memory is decided here, on top of model_layout.py (which files
form a model), model_sources.py (local folders), model_s3.py (s3:// prefixes)
and model_disk_cache.py (S3 downloads on disk).

Sources. A model location is a local path (folder, or a single .onnx file) or
an `s3://bucket/prefix` URL (boto3, the `s3` extra; read without signing when
no AWS credentials are found, as Cortex did: model_s3.py). Integer subfolders
are versions; a location whose own files already form a model is unversioned
and is version 1; "latest" is the highest version.

Layout first. A version is served only once its files form a model of the
predictor's type (ONNX: exactly one .onnx file; TensorFlow: saved_model.pb,
and variables/variables.index when variables/ exists; python: any folder) and,
when it appeared while serving, its files stayed unchanged for a short settle
delay: a version being copied in is skipped and looked at again at the next
poll. Without cache_size, a new version is also loaded in the poll thread
before it becomes "latest", so a corrupt or half-written file is never served
and requests for "latest" never wait for a load.

Live versions. A daemon thread re-lists every source each poll interval
(env CORTEXD_MODEL_POLL_INTERVAL, seconds, default 10): new versions (and new
folders of models.dir) are served, removed ones stop being served and leave
the caches.

Caches. `cache_size` bounds models in memory, `disk_cache_size` models
downloaded from S3 on disk (local models already are on disk and are not
counted). Both are LRU and evict at insert time, before loading the new entry,
so the limits are never exceeded, not even while a load is running. Loads are
serialised (one at a time per process), which is what keeps that promise.

Errors a client can cause (an unknown model name or version) raise
`ModelNotFound`, an aiohttp 404 that the server returns as it is.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from predictor_runtime.contract import ModelsSpec, RuntimePredictor
from predictor_runtime.model_disk_cache import DiskCache, Key, default_root
from predictor_runtime.model_layout import describe_files, onnx_files
from predictor_runtime.model_s3 import S3Source
from predictor_runtime.model_sources import Listing, LocalSource, ModelSourceError

log = logging.getLogger("predictor_runtime")

DEFAULT_MODEL = "_cortex_default"  # Cortex's name for the single `model_path` model
POLL_INTERVAL_ENV = "CORTEXD_MODEL_POLL_INTERVAL"
SETTLE_ENV = "CORTEXD_MODEL_SETTLE"
DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_SETTLE = 0.5


class ModelNotFound(web.HTTPNotFound):
    """An unknown model name or version was asked for: the request gets 404 with this message."""

    def __init__(self, message: str):
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")
        self.message = message

    def __str__(self) -> str:
        return self.message


def env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ModelSourceError(f"environment variable {name}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ModelSourceError(f"environment variable {name}={raw!r}: expected a number of seconds > 0")
    return value


# ---- the store --------------------------------------------------------------------

@dataclass
class ModelEntry:
    name: str
    source: LocalSource | S3Source
    signature_key: str | None = None
    versioned: bool = False
    versions: dict[int, tuple[frozenset[str], tuple[Any, ...]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # folder -> why it is not served (logged once)
    failed: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # version -> files that failed to load

    def latest(self) -> int | None:
        return max(self.versions) if self.versions else None


Loader = Callable[[str, "ModelEntry", int], Any]  # (local path, entry, version) -> loaded model


class ModelStore:
    """The models of one predictor: discovery, versions, LRU caches, polling (see the module docstring).

    `loader(local_path, entry, version)` builds the in-memory model;
    `describe_model(model)` (optional) returns what GET shows about a loaded
    model (e.g. its input signature).
    """

    def __init__(self, kind: str, models: dict[str, tuple[str, str | None]], models_dir: str | None = None,
                 dir_signature_key: str | None = None, cache_size: int | None = None,
                 disk_cache_size: int | None = None, loader: Loader | None = None,
                 describe_model: Callable[[Any], dict[str, Any]] | None = None,
                 poll_interval: float | None = None, settle: float | None = None,
                 disk_root: str | None = None):
        self.kind = kind
        self.loader = loader
        self.describe_model = describe_model
        self.cache_size = cache_size
        self.disk_cache_size = disk_cache_size
        self.poll_interval = poll_interval if poll_interval is not None else env_seconds(
            POLL_INTERVAL_ENV, DEFAULT_POLL_INTERVAL)
        self.settle = settle if settle is not None else env_seconds(SETTLE_ENV, DEFAULT_SETTLE)
        self._fixed = {name: (make_source(loc), key) for name, (loc, key) in models.items()}
        self._dir = make_source(models_dir) if models_dir else None
        self._dir_key = dir_signature_key
        self.entries: dict[str, ModelEntry] = {}
        self._memory: OrderedDict[Key, Any] = OrderedDict()
        self._described: dict[Key, dict[str, Any]] = {}
        self.disk = DiskCache(disk_root or default_root(), disk_cache_size)
        self._lock = threading.Lock()        # entries, _memory, _described
        self._load_lock = threading.Lock()   # one load (and disk download) at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._list_error: str | None = None  # the last listing failure logged while polling

    # -- discovery -------------------------------------------------------------

    def _sources(self) -> dict[str, tuple[LocalSource | S3Source, str | None]]:
        found = dict(self._fixed)
        d = self._dir
        if isinstance(d, LocalSource):
            if not os.path.isdir(d.location):
                raise ModelSourceError(f"models.dir {d.location} is not a folder")
            for n in sorted(os.listdir(d.location)):
                if not n.startswith(".") and os.path.isdir(os.path.join(d.location, n)):
                    found[n] = (LocalSource(os.path.join(d.location, n)), self._dir_key)
        elif isinstance(d, S3Source):
            for n in d.folders():
                found[n] = (d.child(n), self._dir_key)
        return found

    def start(self) -> None:
        """discover() then preload()."""
        self.discover()
        self.preload()

    def discover(self) -> None:
        """First listing of every source; ModelSourceError when a model has nothing to serve."""
        for source, _ in self._fixed.values():
            source.check()
        if self._dir is not None:
            self._dir.check()
        self.refresh(initial=True)
        if not self.entries:
            raise ModelSourceError("no models found" + (f" in models.dir {self._dir}" if self._dir else ""))
        empty = [e for e in self.entries.values() if not e.versions]
        if empty:
            e = empty[0]
            why = "; ".join(f"{k}: {v}" for k, v in e.skipped.items()) or "nothing there"
            raise ModelSourceError(f"model {self.display_name(e.name)} at {e.source} has no usable version "
                                   f"({why})")

    def preload(self) -> None:
        """Without cache_size, load every model version now (readiness includes them)."""
        if self.cache_size is None:  # Cortex's default: every model and version in memory
            for e in list(self.entries.values()):
                for v in sorted(e.versions, reverse=True):
                    self.get(e.name, v)

    def display_name(self, name: str) -> str:
        return "(model_path)" if name == DEFAULT_MODEL else repr(name)

    def refresh(self, initial: bool = False) -> None:
        """Re-list every source: admit new settled versions, drop removed ones."""
        try:
            sources = self._sources()
        except (ModelSourceError, OSError) as e:
            if initial:
                raise ModelSourceError(str(e)) from None
            if str(e) != self._list_error:  # once per problem, not every poll
                log.error("error: cannot list models (serving what was found before): %s", e)
            self._list_error = str(e)
            return
        self._list_error = None
        for name in [n for n in self.entries if n not in sources]:
            log.info("model %s was removed from %s; no longer serving it", name, self._dir)
            self._drop(name, None)
        for name, (source, sig_key) in sources.items():
            try:
                listing = source.listing(self.kind)
            except (ModelSourceError, OSError) as e:
                if initial:
                    raise ModelSourceError(str(e)) from None
                continue
            entry = self.entries.get(name)
            if entry is None:
                entry = ModelEntry(name, source, sig_key)
                if initial:
                    entry.versioned = listing.versioned
                    entry.versions = dict(listing.versions)
                    entry.skipped = dict(listing.problems)
                    with self._lock:
                        self.entries[name] = entry
                    self._log_skipped(entry, listing.problems, initial)
                    continue
                with self._lock:
                    self.entries[name] = entry
            self._update(entry, listing, initial)

    def _log_skipped(self, entry: ModelEntry, problems: dict[str, str], initial: bool) -> None:
        for folder, why in problems.items():
            where = entry.source if folder == "." else f"{entry.source}/{folder}"
            log.info("model %s: not serving %s yet: %s", self.display_name(entry.name), where, why)

    def _update(self, entry: ModelEntry, listing: Listing, initial: bool) -> None:
        new_problems = {k: v for k, v in listing.problems.items() if entry.skipped.get(k) != v}
        entry.skipped = dict(listing.problems)
        self._log_skipped(entry, new_problems, initial)
        if listing.versioned != entry.versioned and entry.versions:
            # unversioned <-> versioned: the old version 1 is another folder now
            self._drop(entry.name, None, keep_entry=True)
        entry.versioned = listing.versioned
        for v in [v for v in entry.versions if v not in listing.versions]:
            log.info("model %s version %d was removed; no longer serving it", self.display_name(entry.name), v)
            self._drop(entry.name, v)
        for v, (files, marks) in sorted(listing.versions.items()):
            known = entry.versions.get(v)
            if known is not None and known[1] == marks:
                continue
            if entry.failed.get(v) == marks:
                continue  # the same files failed to load before: wait until they change
            if known is None and not initial and not self._settled(entry, v, marks):
                continue
            if known is not None:  # files changed under a served version: serve the new files
                self._drop(entry.name, v, keep_entry=True)
            if self.cache_size is None and self.loader is not None:
                # load before announcing, so "latest" never points at a model that fails to load
                try:
                    self._load((entry.name, v), entry, v, files)
                except Exception as e:
                    log.error("error: model %s version %d failed to load; not serving it (tried again when "
                              "its files change): %s", self.display_name(entry.name), v, e)
                    entry.failed[v] = marks
                    continue
            entry.failed.pop(v, None)
            with self._lock:
                entry.versions[v] = (files, marks)
            if not initial:
                log.info("model %s: serving version %d", self.display_name(entry.name), v)

    def _settled(self, entry: ModelEntry, version: int, marks: tuple[Any, ...]) -> bool:
        """True when a newly seen version's files did not change during the settle delay."""
        if self._stop.wait(self.settle):
            return False
        try:
            again = entry.source.listing(self.kind).versions.get(version)
        except (ModelSourceError, OSError):
            return False
        return again is not None and again[1] == marks

    def _drop(self, name: str, version: int | None, keep_entry: bool = False) -> None:
        with self._lock:
            entry = self.entries.get(name)
            if entry is None:
                return
            versions = list(entry.versions) if version is None else [version]
            for v in versions:
                entry.versions.pop(v, None)
                self._memory.pop((name, v), None)
                self._described.pop((name, v), None)
            if version is None and not keep_entry:
                del self.entries[name]
        for v in versions:
            self.disk.discard((name, v))

    # -- lookups ---------------------------------------------------------------

    def resolve(self, model_name: str | None, model_version: Any = "latest") -> tuple[ModelEntry, int]:
        """The entry and integer version a (name, version) request means; ModelNotFound otherwise."""
        name = DEFAULT_MODEL if model_name is None else str(model_name)
        with self._lock:
            entry = self.entries.get(name)
            names = sorted(n for n in self.entries if n != DEFAULT_MODEL)
            single = DEFAULT_MODEL in self.entries
            versions = sorted(entry.versions) if entry is not None else []
        if entry is None:
            if model_name is None:
                raise ModelNotFound("a model_name is needed: this API serves several models "
                                    f"({', '.join(names)})")
            if single and not names:
                raise ModelNotFound(f"no model named {model_name!r}: this API serves a single model "
                                    "(predictor.model_path); leave model_name out")
            raise ModelNotFound(f"no model named {model_name!r}; available models: {', '.join(names) or 'none'}")
        if model_version is None or model_version == "latest":
            if not versions:
                raise ModelNotFound(f"model {self.display_name(name)} has no version available right now")
            return entry, versions[-1]
        try:
            version = int(model_version)
        except (TypeError, ValueError):
            raise ModelNotFound(f"model_version must be 'latest' or an integer; found {model_version!r}") from None
        if version not in versions:
            raise ModelNotFound(f"model {self.display_name(name)} has no version {version}; available versions: "
                                f"{', '.join(map(str, versions)) or 'none'}")
        return entry, version

    def get(self, model_name: str | None, model_version: Any = "latest") -> Any:
        """The loaded model (LRU in memory); loads it (evicting first) when absent."""
        entry, version = self.resolve(model_name, model_version)
        key = (entry.name, version)
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        return self._load(key, entry, version)

    def get_with_key(self, model_name: str | None, model_version: Any = "latest") -> tuple[Key, Any]:
        entry, version = self.resolve(model_name, model_version)
        return (entry.name, version), self.get(entry.name, version)

    def _load(self, key: Key, entry: ModelEntry, version: int, files: frozenset[str] | None = None) -> Any:
        if self.loader is None:
            raise RuntimeError("the model loader is not set yet")
        with self._load_lock:
            with self._lock:
                if key in self._memory:
                    self._memory.move_to_end(key)
                    return self._memory[key]
                if self.cache_size is not None:
                    while len(self._memory) >= self.cache_size:
                        old, _ = self._memory.popitem(last=False)
                        log.info("memory cache full (%d): unloading model %s version %d",
                                 self.cache_size, self.display_name(old[0]), old[1])
            path = self._local_path(entry, version, files)
            started = time.monotonic()
            model = self.loader(path, entry, version)
            described = self.describe_model(model) if self.describe_model else None
            with self._lock:
                if self.entries.get(entry.name) is entry:  # not removed meanwhile
                    self._memory[key] = model
                    if described is not None:
                        self._described[key] = described
            log.info("loaded model %s version %d in %.2fs", self.display_name(entry.name), version,
                     time.monotonic() - started)
            return model

    def _local_path(self, entry: ModelEntry, version: int, files: frozenset[str] | None = None) -> str:
        source = entry.source
        if isinstance(source, LocalSource):
            path = source.local_path(version, entry.versioned)
        else:
            key = (entry.name, version)
            cached = self.disk.get(key)
            if cached is None:
                if files is None:
                    files = (entry.versions.get(version) or (frozenset(), ()))[0]
                wanted = files
                cached = self.disk.put(key, lambda dest: source.download(version, entry.versioned, wanted, dest))
            path = cached
        if self.kind == "onnx" and os.path.isdir(path):
            onnx = onnx_files(os.listdir(path))
            if len(onnx) != 1:
                raise ModelSourceError(f"{path}: expected exactly one .onnx file; found {describe_files(onnx)}")
            path = os.path.join(path, onnx[0])
        return path

    # -- what GET shows --------------------------------------------------------

    def loaded(self) -> list[Key]:
        with self._lock:
            return list(self._memory)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            models = {}
            for name, e in sorted(self.entries.items()):
                versions = sorted(e.versions)
                info: dict[str, Any] = {
                    "path": str(e.source),
                    "versions": versions,
                    "latest": versions[-1] if versions else None,
                    "loaded_versions": sorted(v for (n, v) in self._memory if n == name),
                }
                sigs = {str(v): self._described[(name, v)] for v in versions if (name, v) in self._described}
                if sigs:
                    info["signatures"] = sigs
                if e.skipped:
                    info["not_served"] = dict(e.skipped)
                models[name] = info
            cache = {
                "cache_size": self.cache_size,
                "disk_cache_size": self.disk_cache_size,
                "in_memory": [[n, v] for n, v in self._memory],
                "on_disk": [[n, v] for n, v in self.disk.cached()],
            }
        out: dict[str, Any] = {}
        if list(models) == [DEFAULT_MODEL] and self._dir is None:
            out["model"] = models[DEFAULT_MODEL]
        else:
            out["models"] = models
        out["model_cache"] = cache
        out["model_poll_interval"] = self.poll_interval
        return out

    # -- polling ---------------------------------------------------------------

    def start_polling(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
            except Exception:
                log.exception("error: polling the model sources failed; trying again in %gs", self.poll_interval)

    def stop(self) -> None:
        self._stop.set()


def make_source(location: str) -> LocalSource | S3Source:
    """The source of a model location: a local path or an s3:// URL."""
    if location.startswith("s3://"):
        return S3Source(location)
    if "://" in location:
        raise ModelSourceError(f"model path {location!r}: only local paths and s3:// URLs are supported")
    return LocalSource(location)


def store_from_spec(kind: str, predictor: RuntimePredictor, **kw: Any) -> ModelStore:
    """The ModelStore of a runtime spec's `predictor` section (contract.py)."""
    models: dict[str, tuple[str, str | None]] = {}
    if predictor.model_path:
        models[DEFAULT_MODEL] = (predictor.model_path, predictor.signature_key)
    spec = predictor.models or ModelsSpec()
    for m in spec.paths:
        models[m.name] = (m.path, m.signature_key or spec.signature_key)
    return ModelStore(kind, models, models_dir=spec.dir, dir_signature_key=spec.signature_key,
                      cache_size=spec.cache_size, disk_cache_size=spec.disk_cache_size, **kw)
