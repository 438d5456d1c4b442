"""A BatchAPI job's worker: `python -m predictor_runtime.batch_worker --spec SPEC.json`.

It constructs the API's predictor with Cortex 0.23's batch interface (`__init__(self, config,
job_spec)`, or `(self, tensorflow_client|onnx_client, config, job_spec)`; each parameter but
the first optional, passed by name), then pulls batches from the daemon over HTTP (loopback, or
the daemon's unix socket bound into a worker's container: CORTEXD_JOB_SOCKET) until the job has
none left: `POST {url}/claim` answers a batch (200), nothing queued just now (204: ask again), or
the job's end (410, and once per job `on_job_complete: true`, when the predictor's
`on_job_complete()` is called). Each batch's outcome goes back as `POST {url}/done` (its error
when predict raised): the daemon retries or records it, and answers as `claim` does. The daemon
tells the worker where to ask, its name and the job (CORTEXD_JOB_URL, CORTEXD_WORKER,
CORTEXD_JOB_SPEC, CORTEXD_JOB_TOKEN in the environment); the spec file is the replica's runtime
spec (contract.py). The worker is started as a replica of its API is (backends/base.py
`start_worker`): same user, limits, environment or image.
"""

from __future__ import annotations

import argparse
import http.client
import inspect
import json
import os
import sys
import time
import traceback
import urllib.parse
import uuid
from typing import Any

from predictor_runtime.contract import RuntimeSpec
from predictor_runtime.predictors import (
    CLASS_NAMES,
    PredictorSignatureError,
    StartupError,
    check_supported,
    display_path,
    import_predictor_module,
)
from predictor_runtime.unix_http import UnixHTTPConnection

INIT_NAMES = ("config", "job_spec")
PREDICT_NAMES = ("payload", "batch_id")
CLIENT_NAMES = {"tensorflow": "tensorflow_client", "onnx": "onnx_client"}
WAIT = 0.2  # seconds between two asks while nothing is queued


class Daemon:
    """The daemon's job endpoint, over one kept-alive connection: loopback, or the unix socket
    `socket_path` (a worker in a container)."""

    def __init__(self, url: str, token: str, worker: str, socket_path: str | None = None):
        parts = urllib.parse.urlsplit(url)
        self.conn = (UnixHTTPConnection(socket_path, 60) if socket_path else
                     http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60))
        self.path, self.token, self.worker = parts.path.rstrip("/"), token, worker

    def post(self, what: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = json.dumps({**body, "worker": self.worker}).encode()
        self.conn.request("POST", f"{self.path}/{what}", data, {"Content-Type": "application/json",
                                                                "Authorization": f"Bearer {self.token}"})
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else {})


def _kwargs(fn: Any, values: dict[str, Any], allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """The values of the parameters `fn` declares among `allowed`; any other parameter is refused."""
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = [p.name for p in params if p.name not in allowed and p.default is p.empty]
    if unknown:
        raise PredictorSignatureError(f"{where}: unexpected parameter {unknown[0]!r}; expected "
                                      f"({', '.join(allowed)})")
    return {p.name: values[p.name] for p in params if p.name in allowed and p.name in values}


def construct(spec: RuntimeSpec, job_spec: dict[str, Any]) -> Any:
    """The user's predictor, constructed with the batch interface."""
    predictor = spec.predictor
    check_supported(predictor.type)
    where = display_path(predictor.path, spec.project_dir)
    module = import_predictor_module(predictor.path, predictor.python_path, spec.project_dir)
    class_name = CLASS_NAMES[predictor.type]
    found = getattr(module, class_name, None)
    if not inspect.isclass(found):
        raise PredictorSignatureError(f"{where}: no class {class_name} found")
    cls: Any = found
    if not callable(getattr(cls, "predict", None)):
        raise PredictorSignatureError(f"{where}: {class_name} has no predict(self, payload, batch_id) method")
    values: dict[str, Any] = {"config": dict(predictor.config), "job_spec": job_spec}
    allowed: tuple[str, ...] = INIT_NAMES
    if predictor.type in CLIENT_NAMES:
        values[CLIENT_NAMES[predictor.type]] = _model_client(predictor)
        allowed = (CLIENT_NAMES[predictor.type], *INIT_NAMES)
    _kwargs(cls.predict, {}, ("self", *PREDICT_NAMES), f"{where}: {class_name}.predict")
    return cls(**_kwargs(cls.__init__, values, ("self", *allowed), f"{where}: {class_name}.__init__"))


def _model_client(predictor: Any) -> Any:
    if predictor.type == "onnx":
        from predictor_runtime.clients.onnx import ONNXClient as Client
    else:
        from predictor_runtime.clients.tensorflow import TensorFlowClient as Client  # type: ignore[assignment]
    client = Client.from_spec(predictor)
    client.start()
    return client


def run(instance: Any, daemon: Daemon, job_id: str) -> None:
    predict = instance.predict
    names = [n for n in inspect.signature(predict).parameters if n in PREDICT_NAMES]
    status, answer = daemon.post("claim", {})
    while True:
        if status == 204:
            time.sleep(WAIT)
            status, answer = daemon.post("claim", {})
            continue
        if status != 200:
            if answer.get("on_job_complete") and callable(getattr(instance, "on_job_complete", None)):
                instance.on_job_complete()
            return
        index, attempt = answer["index"], answer["attempt"]
        values = {"payload": json.loads(answer["payload"]),
                  "batch_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job_id}/{index}"))}
        started = time.monotonic()
        error = None
        try:
            predict(**{n: values[n] for n in names})
        except Exception as e:  # the batch fails; the worker goes on
            traceback.print_exc()
            error = f"{type(e).__name__}: {e}"[:2000]
        status, answer = daemon.post("done", {"index": index, "attempt": attempt, "error": error,
                                              "seconds": time.monotonic() - started})  # and the next batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m predictor_runtime.batch_worker")
    parser.add_argument("--spec", required=True, help="runtime spec JSON")
    args = parser.parse_args(argv)
    with open(args.spec, encoding="utf-8") as f:
        spec = RuntimeSpec.from_json(json.load(f))
    job_spec = json.loads(os.environ["CORTEXD_JOB_SPEC"])
    if spec.project_dir:
        os.chdir(spec.project_dir)
    daemon = Daemon(os.environ["CORTEXD_JOB_URL"], os.environ.get("CORTEXD_JOB_TOKEN", ""),
                    os.environ.get("CORTEXD_WORKER", "worker"), os.environ.get("CORTEXD_JOB_SOCKET"))
    try:
        instance = construct(spec, job_spec)
    except StartupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run(instance, daemon, job_spec["job_id"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
