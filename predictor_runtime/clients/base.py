"""What the onnx and tensorflow clients share: a ModelStore, optional server-side batching,
starting (load + poll) and the GET metadata."""

from __future__ import annotations

from typing import Any

from predictor_runtime.batching import BatcherSet
from predictor_runtime.models import ModelStore


def batchers_from_spec(predictor: dict[str, Any]) -> BatcherSet | None:
    """The predictor's `server_side_batching` as a BatcherSet (None when it has none)."""
    batching = predictor.get("server_side_batching")
    if not batching:
        return None
    return BatcherSet(int(batching["max_batch_size"]), float(batching["batch_interval"]))


class ModelClient:
    def __init__(self, store: ModelStore, batchers: BatcherSet | None = None):
        self.store = store
        self.batchers = batchers

    def start(self) -> None:
        self.store.start()
        self.store.start_polling()

    def describe(self) -> dict[str, Any]:
        out = self.store.describe()
        if self.batchers is not None:
            out["server_side_batching"] = self.batchers.stats()
        return out
