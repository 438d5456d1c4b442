"""The work bench/peers.py serves: the models, the request bodies, and each server's app.

Three workloads, the same for every server (each server's app is written the way its
documentation shows, with batching switched on where the workload asks for it):

- noop: `{"x": 1}` in, `{"ok": true}` out; the request path and nothing else.
- tabular: one row of 8 floats as JSON in, the class and the 3 scores out of a small ONNX
  MLP (Gemm 8->64, Relu, Gemm 64->3, Softmax).
- image: a 3x192x192 uint8 image, base64 in JSON (about 147 KB a request), the class out of
  a small ONNX convnet (two stride-2 3x3 convolutions to 8 and 16 channels, global average pooling, a dense
  layer, Softmax), with each server's batching on: cortexd's `server_side_batching`,
  BentoML's adaptive batching (`batchable=True`), LitServe's `max_batch_size`, Ray Serve's
  `@serve.batch`.

Every app runs onnxruntime's InferenceSession with its defaults. The models are built here
with onnx.helper and numpy (seeded weights), in the process that runs the bench.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

IMAGE_SHAPE = (3, 192, 192)
TABULAR_FEATURES = 8


@dataclass(frozen=True)
class Batching:
    max_batch_size: int
    wait_s: float  # the longest a request waits for others (cortexd's batch_interval)


@dataclass(frozen=True)
class Workload:
    name: str
    model: str | None  # the model file's name in the models folder
    batched: bool


WORKLOADS = {
    "noop": Workload("noop", None, False),
    "tabular": Workload("tabular", "tabular.onnx", False),
    "image": Workload("image", "image.onnx", True),
}


# -- models and bodies -------------------------------------------------------------------------


def make_models(folder: Path) -> None:
    """tabular.onnx and image.onnx into folder (onnx and numpy needed where the bench runs)."""
    import numpy as np
    from onnx import TensorProto, helper, save_model

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> object:
        values = rng.normal(0, 0.1, shape).astype(np.float32)
        return helper.make_tensor(name, TensorProto.FLOAT, shape, values.ravel().tolist())

    def save(name: str, nodes: list, weights: list, x_shape: list, out_shape: list) -> None:
        graph = helper.make_graph(
            nodes, name.split(".")[0], [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, out_shape)], weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8  # onnxruntime releases of the last years all read IR 8
        save_model(model, str(folder / name))

    folder.mkdir(parents=True, exist_ok=True)
    save("tabular.onnx", [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
    ], [weight("w1", TABULAR_FEATURES, 64), weight("b1", 64), weight("w2", 64, 3), weight("b2", 3)],
        ["N", TABULAR_FEATURES], ["N", 3])
    conv = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    save("image.onnx", [
        helper.make_node("Conv", ["x", "k1", "c1"], ["a1"], **conv),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "k2", "c2"], ["a2"], **conv),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
    ], [weight("k1", 8, 3, 3, 3), weight("c1", 8), weight("k2", 16, 8, 3, 3), weight("c2", 16),
        weight("w", 16, 10), weight("b", 10)], ["N", *IMAGE_SHAPE], ["N", 10])


def request_body(workload: str, server: str) -> bytes:
    """The JSON body one request carries (BentoML's batchable API takes a list: a batch of one)."""
    if workload == "noop":
        return b'{"x": 1}'
    if workload == "tabular":
        return json.dumps({"features": [0.1 * (i + 1) for i in range(TABULAR_FEATURES)]}).encode()
    size = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
    image = base64.b64encode(bytes((i * 7) % 256 for i in range(size))).decode()
    return json.dumps({"image": [image] if server == "bentoml" else image}).encode()


# -- the apps ------------------------------------------------------------------------------------

# what every app does with a request's fields (pasted into each app's source)
COMMON = f'''
import base64

import numpy as np
import onnxruntime as ort

IMAGE_SHAPE = {IMAGE_SHAPE!r}


def decode_image(text):
    pixels = np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(IMAGE_SHAPE)
    return pixels.astype(np.float32) / 255


def tabular_answer(scores):
    return {{"class": int(scores.argmax()), "scores": scores.tolist()}}
'''

CORTEXD_PREDICTORS = {
    "noop": '''
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"ok": True}
''',
    "tabular": COMMON + '''

class ONNXPredictor:
    def __init__(self, onnx_client, config):
        self.client = onnx_client

    def predict(self, payload):
        return tabular_answer(self.client.predict(payload["features"])[0][0])
''',
    "image": COMMON + '''

class ONNXPredictor:
    def __init__(self, onnx_client, config):
        self.client = onnx_client

    def predict(self, payload):
        # with server_side_batching, concurrent calls run as one session.run
        return {"class": int(self.client.predict(decode_image(payload["image"]))[0][0].argmax())}
''',
}


def cortexd_app(folder: Path, workload: Workload, models: Path, batching: Batching) -> None:
    """A Cortex 0.23 project: cortex.yaml and predictor.py (the defaults but what the work needs)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictor.py").write_text(CORTEXD_PREDICTORS[workload.name])
    lines = ["- name: bench", "  kind: RealtimeAPI", "  predictor:",
             f"    type: {'python' if workload.model is None else 'onnx'}", "    path: predictor.py"]
    if workload.model:
        lines.append(f"    model_path: {models / workload.model}")
    if workload.batched:  # Cortex needs a thread per request a batch can hold
        lines += [f"    threads_per_process: {batching.max_batch_size}", "    server_side_batching:",
                  f"      max_batch_size: {batching.max_batch_size}",
                  f"      batch_interval: {batching.wait_s * 1e3:g}ms"]
    (folder / "cortex.yaml").write_text("\n".join(lines) + "\n")


BENTOML_APIS = {
    "noop": '''
    @bentoml.api
    def predict(self, x: int = 0) -> dict:
        return {{"ok": True}}
''',
    "tabular": '''
    @bentoml.api
    def predict(self, features: list[float]) -> dict:
        x = np.asarray([features], dtype=np.float32)
        return tabular_answer(self.session.run(None, {{"x": x}})[0][0])
''',
    "image": '''
    @bentoml.api(batchable=True, max_batch_size={max_batch_size})
    def predict(self, image: list[str]) -> list[dict]:
        scores = self.session.run(None, {{"x": np.stack([decode_image(t) for t in image])}})[0]
        return [{{"class": int(s.argmax())}} for s in scores]
''',
}


def bentoml_app(folder: Path, workload: Workload, models: Path, batching: Batching) -> None:
    """service.py: one @bentoml.service with one worker, its API at /predict."""
    folder.mkdir(parents=True, exist_ok=True)
    model = str(models / workload.model) if workload.model else None
    (folder / "service.py").write_text(COMMON + f'''
import bentoml


@bentoml.service(workers=1)
class Bench:
    def __init__(self):
        self.session = ort.InferenceSession({model!r}) if {model!r} else None
''' + BENTOML_APIS[workload.name].format(max_batch_size=batching.max_batch_size))


LITSERVE_PREDICT = {
    "noop": '''
    def decode_request(self, request):
        return request["x"]

    def predict(self, x):
        return {"ok": True}
''',
    "tabular": '''
    def decode_request(self, request):
        return np.asarray([request["features"]], dtype=np.float32)

    def predict(self, x):
        return tabular_answer(self.session.run(None, {"x": x})[0][0])
''',
    "image": '''
    def decode_request(self, request):
        return decode_image(request["image"])

    def batch(self, inputs):
        return np.stack(inputs)

    def predict(self, x):
        return self.session.run(None, {"x": x})[0]

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return {"class": int(output.argmax())}
''',
}


def litserve_app(folder: Path, workload: Workload, models: Path, batching: Batching) -> None:
    """server.py: a LitAPI on a LitServer (one worker, CPU), `python server.py PORT`."""
    folder.mkdir(parents=True, exist_ok=True)
    model = str(models / workload.model) if workload.model else None
    batch = (f"max_batch_size={batching.max_batch_size}, batch_timeout={batching.wait_s!r}"
             if workload.batched else "")
    (folder / "server.py").write_text(COMMON + f'''
import sys

import litserve as ls


class Bench(ls.LitAPI):
    def setup(self, device):
        self.session = ort.InferenceSession({model!r}) if {model!r} else None
''' + LITSERVE_PREDICT[workload.name] + f'''

if __name__ == "__main__":
    server = ls.LitServer(Bench({batch}), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False, log_level="warning")
''')


RAY_CALLS = {
    "noop": '''
    async def __call__(self, request: Request):
        await request.json()
        return {{"ok": True}}
''',
    "tabular": '''
    async def __call__(self, request: Request):
        x = np.asarray([(await request.json())["features"]], dtype=np.float32)
        return tabular_answer(self.session.run(None, {{"x": x}})[0][0])
''',
    "image": '''
    @serve.batch(max_batch_size={max_batch_size}, batch_wait_timeout_s={wait_s!r})
    async def infer(self, images):
        scores = self.session.run(None, {{"x": np.stack(images)}})[0]
        return [{{"class": int(s.argmax())}} for s in scores]

    async def __call__(self, request: Request):
        return await self.infer(decode_image((await request.json())["image"]))
''',
}


def ray_app(folder: Path, workload: Workload, models: Path, batching: Batching) -> None:
    """serve_app.py: one deployment (one replica, max_ongoing_requests=64) at /predict.

    Started as a script rather than `serve run` so that the HTTP proxy listens on loopback
    and the dashboard stays off; it serves until SIGTERM, then shuts Serve and Ray down.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = str(models / workload.model) if workload.model else None
    call = RAY_CALLS[workload.name].format(max_batch_size=batching.max_batch_size, wait_s=batching.wait_s)
    (folder / "serve_app.py").write_text(COMMON + f'''
import signal
import sys
import threading

import ray
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=1, max_ongoing_requests=64)
class Bench:
    def __init__(self):
        self.session = ort.InferenceSession({model!r}) if {model!r} else None
''' + call + '''

if __name__ == "__main__":
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
    serve.run(Bench.bind(), name="bench", route_prefix="/predict")
    stop.wait()
    serve.shutdown()
    ray.shutdown()
''')
