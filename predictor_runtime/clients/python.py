"""The `python_client` handed to a PythonPredictor that has models configured.

Cortex 0.23's interface: `python_client.get_model(model_name=None,
model_version="latest")` returns the object the predictor's own
`load_model(model_path)` built from the model's local directory.

This is the minimal version: LOCAL model directories only (`model_path`,
`models.paths`, `models.dir`), each model loaded once and kept in memory, all
models loaded at start-up so that readiness includes them. Integer subfolders
of a model directory are its versions ("latest" = the highest); a directory
without them is version 1. NOT here yet (predictor_runtime/models.py, another
issue): s3:// sources, `cache_size` / `disk_cache_size` LRU eviction, and
picking up new versions without a restart.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

DEFAULT_MODEL = "_cortex_default"  # Cortex's name for the single `model_path` model


def model_versions(path: str) -> list[int]:
    """Integer subfolders of a model directory, ascending; [] when it is unversioned."""
    try:
        entries = os.listdir(path)
    except OSError:
        return []
    return sorted(int(e) for e in entries if e.isdigit() and os.path.isdir(os.path.join(path, e)))


class PythonClient:
    """get_model() for a PythonPredictor; the loader is the predictor's load_model."""

    def __init__(self, models: dict[str, str], cache_size: int | None = None):
        self._paths = dict(models)  # model name -> local directory
        self._cache_size = cache_size
        self._loader: Callable[[str], Any] | None = None
        self._loaded: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()  # threads_per_process > 1 must not load a model twice

    @classmethod
    def from_spec(cls, predictor: dict[str, Any]) -> PythonClient:
        """The client for a runtime spec's `predictor` section (see predictor_runtime's docstring)."""
        models: dict[str, str] = {}
        cache_size = None
        if predictor.get("model_path"):
            models[DEFAULT_MODEL] = predictor["model_path"]
        spec = predictor.get("models") or {}
        for m in spec.get("paths") or []:
            models[m["name"]] = m["path"]
        if spec.get("dir"):
            root = spec["dir"]
            _refuse_remote(root)
            if not os.path.isdir(root):
                raise ValueError(f"models.dir {root!r} is not a directory")
            for name in sorted(os.listdir(root)):
                if os.path.isdir(os.path.join(root, name)):
                    models[name] = os.path.join(root, name)
        cache_size = spec.get("cache_size")
        for path in models.values():
            _refuse_remote(path)
        return cls(models, cache_size)

    def set_loader(self, loader: Callable[[str], Any]) -> None:
        self._loader = loader

    def preload(self) -> None:
        """Load the latest version of every model (skipped when a cache size limits memory)."""
        if self._cache_size is None:
            for name in self._paths:
                self.get_model(None if name == DEFAULT_MODEL else name)

    def metadata(self) -> dict[str, Any]:
        """Model names, paths and versions, for the runtime's GET / usage message."""
        def describe(path: str) -> dict[str, Any]:
            return {"path": path, "versions": model_versions(path) or [1]}
        if list(self._paths) == [DEFAULT_MODEL]:
            return {"model": describe(self._paths[DEFAULT_MODEL])}
        return {"models": {name: describe(path) for name, path in self._paths.items()}}

    def get_model(self, model_name: str | None = None, model_version: str = "latest") -> Any:
        """The loaded model `model_name` (None: the single model of `model_path`) at a version."""
        name = DEFAULT_MODEL if model_name is None else model_name
        path = self._paths.get(name)
        if path is None:
            if model_name is None:
                raise ValueError("get_model() needs a model_name when predictor.models is configured; "
                                 f"available models: {', '.join(sorted(self._paths))}")
            raise ValueError(f"no model named {model_name!r}; available models: "
                             f"{', '.join(sorted(n for n in self._paths if n != DEFAULT_MODEL)) or 'none'}")
        versions = model_versions(path)
        if model_version == "latest":
            version = versions[-1] if versions else 1
        else:
            try:
                version = int(model_version)
            except (TypeError, ValueError):
                raise ValueError(f"model_version must be 'latest' or an integer, got {model_version!r}") from None
            if version not in (versions or [1]):
                raise ValueError(f"model {model_name or path!r} has no version {version}; "
                                 f"available: {', '.join(map(str, versions or [1]))}")
        key = (name, version)
        model = self._loaded.get(key)
        if model is not None or key in self._loaded:
            return model
        with self._lock:
            if key not in self._loaded:
                if self._loader is None:
                    raise RuntimeError("python_client.get_model() called before the predictor exists")
                local = os.path.join(path, str(version)) if versions else path
                self._loaded[key] = self._loader(local)
            return self._loaded[key]


def _refuse_remote(path: str) -> None:
    if "://" in path:
        raise ValueError(f"model path {path!r}: remote (s3://) models are not supported yet by this "
                         "runtime; use a local directory")
