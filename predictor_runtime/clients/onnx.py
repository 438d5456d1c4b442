"""The `onnx_client` handed to an ONNXPredictor: onnxruntime sessions behind a ModelStore.

Cortex 0.23's interface:

    onnx_client.predict(model_input, model_name=None, model_version="latest")
        -> the session's outputs, a list in the model's output order
    onnx_client.get_model(model_name=None, model_version="latest")
        -> {"session": InferenceSession,
            "signatures": session.get_inputs() (onnxruntime NodeArgs),
            "input_signatures": {input: {"shape": [...], "type": numpy dtype name, e.g. "float32"}},
            "output_signatures": (the same for outputs; a cortexd addition)}
       the shape Cortex 0.23's client returned. A single-model API (model_path)
       ignores model_name, as Cortex's client did.

`model_input` may be a plain value for a single-input model (a list such as
[5.1, 3.5, 1.4, 0.2] works), or a dict keyed by input name; each value becomes
a numpy array of the input's dtype, and when it has one dimension less than the
input it gets the batch dimension added (so one sample of an [N, 4] input is
given as 4 numbers, as in Cortex's examples). A value that cannot be converted,
or whose shape does not fit, raises `ModelInputError`: 400 for the request,
with the expected signature in the message.

onnxruntime runs on CUDAExecutionProvider when this replica was given a GPU
(CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES name devices) and the installed
onnxruntime has that provider; otherwise on CPU. The choice is logged once.

With server_side_batching, `predict` hands the converted input to the model
version's Batcher (batching.py): concurrent calls run as one session.run on
inputs stacked along the batch dimension, and each caller gets its own rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from predictor_runtime.batching import BatcherSet, split, stack
from predictor_runtime.clients.base import (
    ModelClient,
    ModelInputError,
    batchers_from_spec,
    convert_input,
    fit_shape,
    is_single_model,
)
from predictor_runtime.contract import RuntimePredictor
from predictor_runtime.models import (
    DEFAULT_MODEL,
    ModelEntry,
    ModelStore,
    store_from_spec,
)

log = logging.getLogger("predictor_runtime")

# onnxruntime's type strings -> numpy dtype names
ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint64)": "uint64", "tensor(uint32)": "uint32", "tensor(uint16)": "uint16",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool", "tensor(string)": "object",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[Any, ...]  # ints for fixed dims, None / str for free ones
    type: str               # e.g. "tensor(float)"

    def describe(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "type": self.type}


@dataclass
class OnnxModel:
    session: Any
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    path: str

    @property
    def batchable(self) -> bool:
        """Inputs can be stacked: every input has a free (or absent) first dimension."""
        return all(i.shape and not isinstance(i.shape[0], int) for i in self.inputs)


def has_gpu() -> bool:
    """Whether this replica was given GPU devices (placement sets these variables)."""
    for var in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        value = os.environ.get(var, "").strip().lower()
        if value and value not in ("-1", "none", "void", "no"):
            return True
    return False


def choose_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if has_gpu():
        if "CUDAExecutionProvider" in available:
            log.info("onnxruntime: running on the GPU (CUDAExecutionProvider)")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.info("onnxruntime: this replica has a GPU but the installed onnxruntime has no "
                 "CUDAExecutionProvider (install onnxruntime-gpu, the onnx-gpu extra); running on the CPU")
    else:
        log.info("onnxruntime: running on the CPU")
    return ["CPUExecutionProvider"]


def load_onnx(path: str, providers: list[str]) -> OnnxModel:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=providers)

    def info(meta: Any) -> TensorInfo:
        return TensorInfo(meta.name, tuple(meta.shape or ()), meta.type)

    return OnnxModel(session, tuple(info(i) for i in session.get_inputs()),
                     tuple(info(o) for o in session.get_outputs()), path)


def describe_onnx(model: OnnxModel) -> dict[str, Any]:
    return {"inputs": {i.name: i.describe() for i in model.inputs},
            "outputs": {o.name: o.describe() for o in model.outputs}}


def numpy_signature(info: TensorInfo) -> dict[str, Any]:
    """Cortex 0.23's signature entry: onnxruntime's shape, the numpy dtype name (else the ONNX type)."""
    return {"shape": list(info.shape), "type": ONNX_DTYPES.get(info.type, info.type)}


def _signature_text(inputs: tuple[TensorInfo, ...]) -> str:
    return ", ".join(f"{i.name}: {i.type} {list(i.shape)}" for i in inputs)


def to_array(value: Any, info: TensorInfo) -> Any:
    """One input value as the array the session expects (batch dimension added when missing)."""
    import numpy as np

    dtype = ONNX_DTYPES.get(info.type)
    if dtype is None:
        raise ModelInputError(f"input {info.name!r} has type {info.type}, which onnx_client.predict "
                              "cannot build from a request value; call get_model()['session'].run yourself")
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ModelInputError(f"input {info.name!r}: cannot convert the value to {dtype} ({e}); "
                              f"expected {info.type} with shape {list(info.shape)}") from None
    return fit_shape(arr, info.name, info.shape)


def feed_for(model_input: Any, inputs: tuple[TensorInfo, ...]) -> dict[str, Any]:
    """The session feed for a plain value (single-input models) or a dict keyed by input name."""
    return convert_input(model_input, inputs, to_array, _signature_text(inputs))


class ONNXClient(ModelClient):
    """predict() and get_model() for an ONNXPredictor (see the module docstring)."""

    def __init__(self, store: ModelStore, batchers: BatcherSet | None = None, single_model: bool = False):
        super().__init__(store, batchers, single_model)
        self._warned_unbatchable: set[str] = set()

    @classmethod
    def from_spec(cls, predictor: RuntimePredictor) -> ONNXClient:
        providers: list[str] = []

        def loader(path: str, entry: ModelEntry, version: int) -> OnnxModel:
            if not providers:
                providers.extend(choose_providers())
            return load_onnx(path, providers)

        store = store_from_spec("onnx", predictor, loader=loader, describe_model=describe_onnx)
        return cls(store, batchers_from_spec(predictor), is_single_model(predictor))

    def get_model(self, model_name: str | None = None, model_version: str = "latest") -> dict[str, Any]:
        model: OnnxModel = self.store.get(self.model_name(model_name), model_version)
        return {"session": model.session, "signatures": model.session.get_inputs(),
                "input_signatures": {i.name: numpy_signature(i) for i in model.inputs},
                "output_signatures": {o.name: numpy_signature(o) for o in model.outputs}}

    def predict(self, model_input: Any, model_name: str | None = None, model_version: str = "latest") -> Any:
        key, model = self.store.get_with_key(self.model_name(model_name), model_version)
        feed = feed_for(model_input, model.inputs)
        if self.batchers is None:
            return model.session.run(None, feed)
        if not model.batchable:
            if model.path not in self._warned_unbatchable:
                self._warned_unbatchable.add(model.path)
                log.info("server_side_batching: model %s has a fixed first dimension (%s); running its "
                         "requests one by one", key[0] if key[0] != DEFAULT_MODEL else model.path,
                         _signature_text(model.inputs))
            return model.session.run(None, feed)
        return self.batchers.get(key, run_onnx_batch).submit((model, feed))


def run_onnx_batch(items: list[tuple[OnnxModel, dict[str, Any]]]) -> list[list[Any]]:
    """One session.run for many feeds; each item's rows of every output, in order."""
    model = items[0][0]  # one batcher per model version: all items share the model
    feed, counts = stack([f for _, f in items])
    outputs = model.session.run(None, feed)
    per_output = [split(out, counts) for out in outputs]
    return [[pieces[i] for pieces in per_output] for i in range(len(items))]
