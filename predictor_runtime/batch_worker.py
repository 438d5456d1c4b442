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

In a cluster (`cortexd export kubernetes --job`, cortexd/kube/batch_job.py) no daemon runs: the
batches are files (`--batches DIR`: DIR/job_spec.json and DIR/batch-NNNNNN.json, a mounted
ConfigMap) and pod JOB_COMPLETION_INDEX of an Indexed Job takes its share of them (`--shares N`:
batches i, i+N, ...), each tried up to `--attempts` times (LocalBatches answers as the daemon
does). It exits BATCHES_FAILED when any of its batches failed, STARTUP_FAILED when the predictor
cannot start. `--on-job-complete` only calls the predictor's on_job_complete() (a Job of its own,
run after the batches' Job completed).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from predictor_runtime.mnt_namespace import enter_from_environ
from predictor_runtime.predictors import (
    CLASS_NAMES,
    PredictorSignatureError,
    StartupError,
    check_supported,
    display_path,
    import_predictor_module,
)
from predictor_runtime.process_setup import guard_process
from predictor_runtime.unix_http import UnixHTTPConnection

INIT_NAMES = ("config", "job_spec")
PREDICT_NAMES = ("payload", "batch_id")
CLIENT_NAMES = {"tensorflow": "tensorflow_client", "onnx": "onnx_client"}
WAIT = 0.2  # seconds between two asks while nothing is queued
STARTUP_FAILED = 2  # exit status: the predictor could not be constructed
BATCHES_FAILED = 3  # exit status (--batches): a batch of this share failed every attempt
JOB_SPEC_FILE = "job_spec.json"
INDEX_ENV = "JOB_COMPLETION_INDEX"  # Kubernetes sets it in an Indexed Job's pods


def batch_file(index: int) -> str:
    return f"batch-{index:06d}.json"


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


class LocalBatches:
    """The batches of one share of a job, read from files: answers `claim` and `done` as the
    daemon's job endpoint does (200 with a batch, 410 at the end), retrying a failed batch."""

    def __init__(self, folder: str, index: int, shares: int, attempts: int):
        self.folder, self.attempts = folder, attempts
        total = json.loads(_read(os.path.join(folder, JOB_SPEC_FILE)))["total_batch_count"]
        self.queue = list(range(index, total, shares))
        self.tries: dict[int, int] = {}
        self.failed: list[int] = []

    def post(self, what: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if what == "done" and body["error"] is not None:
            index = body["index"]
            if self.tries[index] < self.attempts:
                self.queue.insert(0, index)
            else:
                self.failed.append(index)
                print(f"batch {index} failed {self.attempts} time(s); last error: {body['error']}", file=sys.stderr)
        if not self.queue:
            return 410, {"on_job_complete": False}
        index = self.queue.pop(0)
        self.tries[index] = self.tries.get(index, 0) + 1
        return 200, {"index": index, "attempt": self.tries[index],
                     "payload": _read(os.path.join(self.folder, batch_file(index)))}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _kwargs(fn: Any, values: dict[str, Any], allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """The values of the parameters `fn` declares among `allowed`; any other parameter is refused."""
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = [p.name for p in params if p.name not in allowed and p.default is p.empty]
    if unknown:
        raise PredictorSignatureError(f"{where}: unexpected parameter {unknown[0]!r}; expected "
                                      f"({', '.join(allowed)})")
    return {p.name: values[p.name] for p in params if p.name in allowed and p.name in values}


def predictor_class(spec: RuntimeSpec) -> Any:
    """The user's predictor class (its module imported)."""
    predictor = spec.predictor
    check_supported(predictor.type)
    where = display_path(predictor.path, spec.project_dir)
    module = import_predictor_module(predictor.path, predictor.python_path, spec.project_dir)
    found = getattr(module, CLASS_NAMES[predictor.type], None)
    if not inspect.isclass(found):
        raise PredictorSignatureError(f"{where}: no class {CLASS_NAMES[predictor.type]} found")
    return found


def construct(spec: RuntimeSpec, job_spec: dict[str, Any], cls: Any = None) -> Any:
    """The user's predictor (`cls`, else predictor_class's), constructed with the batch interface."""
    predictor = spec.predictor
    where = display_path(predictor.path, spec.project_dir)
    class_name = CLASS_NAMES[predictor.type]
    cls = cls or predictor_class(spec)
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


def run(instance: Any, daemon: Daemon | LocalBatches, job_id: str) -> None:
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


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m predictor_runtime.batch_worker")
    parser.add_argument("--spec", required=True, help="runtime spec JSON")
    parser.add_argument("--batches", metavar="DIR", help="read the job from DIR (a cluster's pod), not the daemon")
    parser.add_argument("--shares", type=int, default=1, help="with --batches: the pods sharing the batches")
    parser.add_argument("--attempts", type=int, default=3, help="with --batches: tries of a failed batch")
    parser.add_argument("--on-job-complete", action="store_true",
                        help="with --batches: only call the predictor's on_job_complete()")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # /mnt/project for a non-root daemon's worker, as for its replicas (__main__.py): a user and
    # mount namespace of its own, first, while the process has one thread and is still dumpable
    # (a non-dumpable process cannot write its own /proc/self/uid_map)
    enter_from_environ(os.environ)
    # not dumpable before anything else after that: its env holds the API's secrets and the job's token, which
    # another API's predictor of the same uid could otherwise read in /proc (a replica's rule too)
    guard_process()
    args = _arguments(argv)
    with open(args.spec, encoding="utf-8") as f:
        spec = RuntimeSpec.from_json(json.load(f))
    if args.batches:
        job_spec = json.loads(_read(os.path.join(args.batches, JOB_SPEC_FILE)))
        # the job's config over the api's, as the daemon gives its workers (core.batch_jobs.merged_config)
        config = {**spec.predictor.config, **job_spec.get("config", {})}
        spec = dataclasses.replace(spec, predictor=dataclasses.replace(spec.predictor, config=config))
    else:
        job_spec = json.loads(os.environ["CORTEXD_JOB_SPEC"])
    if spec.project_dir:
        os.chdir(spec.project_dir)
    try:
        cls = predictor_class(spec)
        if args.on_job_complete and not callable(getattr(cls, "on_job_complete", None)):
            print("the predictor has no on_job_complete(): nothing to do", file=sys.stderr)
            return 0  # Cortex calls it only where it is defined; no model is loaded for nothing
        instance = construct(spec, job_spec, cls)
    except StartupError as e:
        print(f"error: {e}", file=sys.stderr)
        return STARTUP_FAILED
    if args.on_job_complete:
        instance.on_job_complete()
        return 0
    if args.batches:
        local = LocalBatches(args.batches, int(os.environ.get(INDEX_ENV, "0")), args.shares, args.attempts)
        run(instance, local, job_spec["job_id"])
        return BATCHES_FAILED if local.failed else 0
    daemon = Daemon(os.environ["CORTEXD_JOB_URL"], os.environ.get("CORTEXD_JOB_TOKEN", ""),
                    os.environ.get("CORTEXD_WORKER", "worker"), os.environ.get("CORTEXD_JOB_SOCKET"))
    run(instance, daemon, job_spec["job_id"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
