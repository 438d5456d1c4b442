"""What the onnx and tensorflow clients share: a ModelStore, optional server-side batching,
starting (load + poll), the GET metadata, and fitting request values to a signature's
inputs (names, batch dimension, fixed dimensions) with 400s that say what was expected."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from predictor_runtime.batching import BatcherSet
from predictor_runtime.contract import RuntimePredictor
from predictor_runtime.models import ModelStore


class ModelInputError(web.HTTPBadRequest, ValueError):
    """A model input that does not fit the model's signature: the request gets 400 with this message."""

    def __init__(self, message: str):
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")
        self.message = message

    def __str__(self) -> str:
        return self.message


def fit_shape(arr: Any, name: str, shape: Sequence[Any]) -> Any:
    """`arr` with the batch dimension added when it is one sample; its fixed dimensions checked.
    A dimension is fixed when it is a non-negative int (None, -1 or a name is free)."""
    rank = len(shape)
    if arr.ndim == rank - 1:
        arr = arr.reshape((1, *arr.shape))
    if arr.ndim != rank:
        raise ModelInputError(f"input {name!r}: expected shape {list(shape)} (or one sample of it, without "
                              f"the first dimension); found shape {list(arr.shape)}")
    for i, (want, got) in enumerate(zip(shape, arr.shape)):
        if isinstance(want, int) and want >= 0 and want != got:
            raise ModelInputError(f"input {name!r}: expected shape {list(shape)}; found shape "
                                  f"{list(arr.shape)} (dimension {i} is {got}, not {want})")
    return arr


def convert_input(model_input: Any, inputs: Sequence[Any], to_array: Callable[[Any, Any], Any],
                  signature_text: str, what: str = "model") -> dict[str, Any]:
    """The feed for a plain value (single-input models) or a dict keyed by input name;
    `to_array` converts one value for one input, `what` names the signature in messages."""
    names = [i.name for i in inputs]
    if isinstance(model_input, dict) and (len(inputs) > 1 or names[0] in model_input):
        missing = [n for n in names if n not in model_input]
        if missing:
            raise ModelInputError(f"model input is missing {', '.join(map(repr, missing))}; the {what} takes "
                                  f"{signature_text}; found keys {sorted(map(str, model_input))}")
        return {i.name: to_array(model_input[i.name], i) for i in inputs}
    if len(inputs) != 1:
        raise ModelInputError(f"the {what} has {len(inputs)} inputs ({signature_text}); pass a dict "
                              "keyed by input name")
    return {names[0]: to_array(model_input, inputs[0])}


def batchers_from_spec(predictor: RuntimePredictor) -> BatcherSet | None:
    """The predictor's `server_side_batching` as a BatcherSet (None when it has none)."""
    batching = predictor.server_side_batching
    if batching is None:
        return None
    return BatcherSet(batching.max_batch_size, batching.batch_interval)


def is_single_model(predictor: RuntimePredictor) -> bool:
    """A `model_path` API: Cortex's clients then ignore any model_name they are given."""
    return bool(predictor.model_path)


class ModelClient:
    def __init__(self, store: ModelStore, batchers: BatcherSet | None = None, single_model: bool = False):
        self.store = store
        self.batchers = batchers
        self.single_model = single_model

    def model_name(self, model_name: str | None) -> str | None:
        """The name to look up: None for a single-model API, whatever was asked (as Cortex 0.23 did)."""
        return None if self.single_model else model_name

    def start(self) -> None:
        self.store.start()
        self.store.start_polling()

    def describe(self) -> dict[str, Any]:
        out = self.store.describe()
        if self.batchers is not None:
            out["server_side_batching"] = self.batchers.stats()
        return out
