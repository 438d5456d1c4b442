"""The `python_client` handed to a PythonPredictor that has models configured.

Cortex 0.23's interface: `python_client.get_model(model_name=None,
model_version="latest")` returns the object the predictor's own
`load_model(model_path)` built from the model's local directory (for S3 models,
the downloaded copy in the disk cache). A single-model API (model_path) ignores
model_name, as Cortex's client did.

Everything about where models are, their versions, the LRU caches and live
reload is models.py's ModelStore; this client only plugs the predictor's
load_model into it. Without cache_size every model version is loaded at
start-up (readiness includes them); with it, models load on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from predictor_runtime.contract import RuntimePredictor
from predictor_runtime.models import (
    DEFAULT_MODEL,
    ModelEntry,
    ModelStore,
    store_from_spec,
)

__all__ = ["DEFAULT_MODEL", "PythonClient"]


class PythonClient:
    """get_model() for a PythonPredictor; the loader is the predictor's load_model."""

    def __init__(self, store: ModelStore, single_model: bool = False):
        self.store = store
        self.single_model = single_model
        self._load_model: Callable[[str], Any] | None = None
        store.loader = self._load

    @classmethod
    def from_spec(cls, predictor: RuntimePredictor) -> PythonClient:
        """The client for a runtime spec's `predictor` section (contract.py)."""
        client = cls(store_from_spec("python", predictor), single_model=bool(predictor.model_path))
        client.store.discover()  # so that __init__ may already call get_model()
        return client

    def _load(self, path: str, entry: ModelEntry, version: int) -> Any:
        if self._load_model is None:
            raise RuntimeError("python_client.get_model() called before the predictor exists")
        return self._load_model(path)

    def set_loader(self, loader: Callable[[str], Any]) -> None:
        self._load_model = loader

    def preload(self) -> None:
        """Discover the models and load them (all of them unless cache_size limits memory); poll after."""
        self.store.preload()
        self.store.start_polling()

    def metadata(self) -> dict[str, Any]:
        return self.store.describe()

    def get_model(self, model_name: str | None = None, model_version: str = "latest") -> Any:
        """The loaded model `model_name` (the single model of `model_path`, whatever the name) at a version."""
        return self.store.get(None if self.single_model else model_name, model_version)
