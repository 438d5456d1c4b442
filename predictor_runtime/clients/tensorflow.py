"""The `tensorflow_client` handed to a TensorFlowPredictor: SavedModels run in-process.

Cortex 0.23 sent requests to a TF Serving container; cortexd loads each
SavedModel with `tf.saved_model.load` in the predictor process (no TF Serving)
and keeps Cortex's interface and return values:

    tensorflow_client.predict(model_input, model_name=None, model_version="latest")
        -> {output name: the output flattened to a list}
    tensorflow_client.get_model(model_name=None, model_version="latest")
        -> {"model": the loaded SavedModel, "function": the chosen signature,
            "signature_key": ..., "signatures": {input: {"shape", "type"}}, "output_signatures": ...}

Outputs are flattened lists as TF Serving's response proto gave them to
Cortex predictors (so `int(prediction["class_ids"][0])` works as written).

`signature_key` (per model, else models.signature_key, else predictor's) picks
the signature; it is required only when a SavedModel has several, and a
missing or unknown key is reported at load time with the available keys.
`model_input` is a dict keyed by the signature's input names, or a plain value
when the signature has one input; values are converted to the input's dtype,
and get the batch dimension added when they have one dimension less than the
input (a scalar for a [None] input). Conversion mistakes raise
ModelInputError (400).

With server_side_batching, concurrent predictions of one model version are
stacked along the batch dimension and run as one call (batching.py).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from predictor_runtime.batching import split, stack
from predictor_runtime.clients.base import (
    ModelClient,
    ModelInputError,
    batchers_from_spec,
    convert_input,
    fit_shape,
    is_single_model,
)
from predictor_runtime.contract import RuntimePredictor
from predictor_runtime.model_sources import ModelSourceError
from predictor_runtime.models import ModelEntry, store_from_spec

log = logging.getLogger("predictor_runtime")


@dataclass(frozen=True)
class TFTensor:
    name: str
    shape: tuple[Any, ...]  # None for free dims; () for scalars; None shape = unknown rank
    dtype: Any              # tf.DType

    def describe(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "type": self.dtype.name}


@dataclass
class TFModel:
    saved: Any  # keeps the loaded object (and its variables) alive
    function: Any
    signature_key: str
    inputs: tuple[TFTensor, ...]
    outputs: tuple[TFTensor, ...]

    @property
    def batchable(self) -> bool:
        return all(len(i.shape) > 0 and i.shape[0] is None for i in self.inputs)


def import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter is not the user's log
    import tensorflow as tf

    return tf


def load_saved_model(path: str, signature_key: str | None) -> TFModel:
    tf = import_tensorflow()
    saved = tf.saved_model.load(path)
    keys = sorted(saved.signatures.keys())
    if not keys:
        raise ModelSourceError(f"{path}: the SavedModel has no signatures; export it with a serving signature")
    if signature_key is None:
        if len(keys) > 1:
            raise ModelSourceError(f"{path}: the SavedModel has several signatures ({', '.join(keys)}); "
                                   "set signature_key in cortex.yaml to choose one")
        signature_key = keys[0]
    elif signature_key not in keys:
        raise ModelSourceError(f"{path}: signature_key {signature_key!r} is not in the SavedModel; "
                               f"available: {', '.join(keys)}")
    fn = saved.signatures[signature_key]
    _, kwargs = fn.structured_input_signature
    inputs = tuple(TFTensor(n, tuple(spec.shape.as_list()) if spec.shape.rank is not None else (), spec.dtype)
                   for n, spec in sorted(kwargs.items()))
    outs = fn.structured_outputs
    outputs = tuple(TFTensor(n, tuple(spec.shape.as_list()) if spec.shape.rank is not None else (), spec.dtype)
                    for n, spec in sorted(outs.items())) if isinstance(outs, dict) else ()
    return TFModel(saved, fn, signature_key, inputs, outputs)


def describe_tf(model: TFModel) -> dict[str, Any]:
    return {"signature_key": model.signature_key,
            "inputs": {i.name: i.describe() for i in model.inputs},
            "outputs": {o.name: o.describe() for o in model.outputs}}


def _signature_text(inputs: tuple[TFTensor, ...]) -> str:
    return ", ".join(f"{i.name}: {i.dtype.name} {list(i.shape)}" for i in inputs)


def to_array(value: Any, t: TFTensor) -> Any:
    import numpy as np

    dtype = object if t.dtype.name == "string" else t.dtype.as_numpy_dtype
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ModelInputError(f"input {t.name!r}: cannot convert the value to {t.dtype.name} ({e}); "
                              f"expected shape {list(t.shape)}") from None
    return fit_shape(arr, t.name, t.shape)


def feed_for(model_input: Any, inputs: tuple[TFTensor, ...]) -> dict[str, Any]:
    return convert_input(model_input, inputs, to_array, _signature_text(inputs), what="signature")


def _run(model: TFModel, feed: dict[str, Any]) -> dict[str, Any]:
    tf = import_tensorflow()
    result = model.function(**{n: tf.constant(v) for n, v in feed.items()})
    return {n: t.numpy() for n, t in result.items()}


def flatten(value: Any) -> list[Any]:
    """An output as TF Serving's response gave it to Cortex predictors: a flat list."""
    items = value.reshape(-1).tolist() if hasattr(value, "reshape") else list(value)
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in items]


class TensorFlowClient(ModelClient):
    """predict() and get_model() for a TensorFlowPredictor (see the module docstring)."""

    @classmethod
    def from_spec(cls, predictor: RuntimePredictor) -> TensorFlowClient:
        default_key = predictor.signature_key

        def loader(path: str, entry: ModelEntry, version: int) -> TFModel:
            return load_saved_model(path, entry.signature_key or default_key)

        store = store_from_spec("tensorflow", predictor, loader=loader, describe_model=describe_tf)
        return cls(store, batchers_from_spec(predictor), is_single_model(predictor))

    def get_model(self, model_name: str | None = None, model_version: str = "latest") -> dict[str, Any]:
        model: TFModel = self.store.get(self.model_name(model_name), model_version)
        sigs = {i.name: i.describe() for i in model.inputs}
        return {"model": model.saved, "function": model.function, "signature_key": model.signature_key,
                "signatures": sigs, "input_signatures": sigs,
                "output_signatures": {o.name: o.describe() for o in model.outputs}}

    def predict(self, model_input: Any, model_name: str | None = None, model_version: str = "latest") -> Any:
        key, model = self.store.get_with_key(self.model_name(model_name), model_version)
        feed = feed_for(model_input, model.inputs)
        if self.batchers is None or not model.batchable:
            outputs = _run(model, feed)
        else:
            outputs = self.batchers.get(key, run_tf_batch).submit((model, feed))
        return {n: flatten(v) for n, v in outputs.items()}


def run_tf_batch(items: list[tuple[TFModel, dict[str, Any]]]) -> list[dict[str, Any]]:
    model = items[0][0]
    feed, counts = stack([f for _, f in items])
    outputs = _run(model, feed)
    pieces = {n: split(v, counts) for n, v in outputs.items()}
    return [{n: p[i] for n, p in pieces.items()} for i in range(len(items))]
