"""predictor_runtime: the HTTP server that runs inside every replica.

It never imports cortexd (it runs in containers that only carry this package).
The daemon starts it as

    python -m predictor_runtime --spec SPEC.json --host 127.0.0.1 --port PORT

SPEC.json is the runtime contract (contract.py: frozen dataclasses, their defaults,
and the one reader and writer), which cortexd builds with APISpec.runtime_spec()
and writes with RuntimeSpec.dumps():

    {"name": "iris-classifier", "endpoint": "/iris-classifier",
     "project_dir": "/abs/project",
     "predictor": {"type": "python" | "tensorflow" | "onnx" | "legacy",
                   "path": "/abs/project/predictor.py",
                   "python_path": "/abs/project",
                   "model_path": null | "/abs/model" | "s3://...",
                   "signature_key": null,
                   "models": null | {"paths": [{"name", "path", "signature_key"}],
                                     "dir", "signature_key", "cache_size", "disk_cache_size"},
                   "server_side_batching": null | {"max_batch_size": 8, "batch_interval": 0.1},
                   "processes_per_replica": 1, "threads_per_process": 1,
                   "config": {...}},            # legacy: the `metadata` dict
     "monitoring": null | {"model_type": ..., "key": ...}}

A missing key takes its default; an unknown key or a wrong type stops the
replica at start-up with a message naming the key.

The replica's environment (the API's `env`, PYTHONPATH with python_path) is set
by the backend. The runtime's own settings, all optional (the first five are
contract.ReplicaLimits):
  CORTEXD_MAX_BODY_SIZE              bytes, default 32 MiB: the limit on DECODED request bodies (413)
  CORTEXD_REQUEST_TIMEOUT            seconds, default 60 (the gateway's upstream timeout): /healthz
                                     answers 503 once every predictor thread has been on one
                                     request longer than this
  CORTEXD_DRAIN_SECONDS              seconds, default 10: on SIGTERM, in-flight requests finish
                                     for up to this long
  CORTEXD_RUNTIME_HEADER_TIMEOUT     seconds, default 60 (the gateway's client header timeout): a
                                     request head must arrive whole within this, from the
                                     connection's opening or the head's first byte, else 408 and
                                     close (http_server.py)
  CORTEXD_RUNTIME_BODY_TIMEOUT       seconds, default 60 (the gateway's client body timeout): a
                                     request body being read may go this long without a byte,
                                     else 408 and close (http_server.py)
  CORTEXD_CLIENT_ERROR_LOG_INTERVAL  seconds, default 10: malformed requests logged once per kind
  CORTEXD_MODEL_POLL_INTERVAL, CORTEXD_MODEL_SETTLE: see models.py; CORTEXD_MODEL_DISK_CACHE:
                                     model_disk_cache.py
  AWS_* (the API's env or .env): s3:// models, read unsigned without credentials (model_s3.py)
  CORTEXD_MNT_PROJECT_NAMESPACE      the user and mount namespace to enter first (mnt_namespace.py)
  CORTEXD_MNT_PROJECT_UNAVAILABLE    why /mnt/project is missing: a note under a traceback that
                                     fails opening it (mnt_project.py)
The runtime sets CORTEX_PROJECT_DIR to the project folder, as Cortex's did (to /mnt/project).
Predictor type "legacy" (a translated `kind: api`) selects Cortex's Flask-era answers (server.py).
Readiness: the port accepts connections, and GET /healthz answers
200, only after every worker process finished the predictor's __init__; a
failing __init__ exits non-zero with the traceback on stderr.

Modules: contract.py (the runtime spec and the replica's limits, typed),
server.py (entry point, one worker's request path, shutdown),
http_server.py (its HTTP/1.1 protocol on httptools: framing, bodies, answers, drain),
supervisor.py (processes_per_replica > 1: workers, readiness barrier),
process_setup.py (what both set up: log lines, the bound socket, stop signals),
log_limits.py (the HTTP server's log, one line per kind of client error per interval),
predictors.py (loading user code, binding by parameter name), payload.py
(request parsing, response encoding), clients/ (python_client, onnx_client,
tensorflow_client), models.py (the model store: versions, memory LRU, live
reload) over model_layout.py (which files form a model, also used by
`cortexd validate`), model_sources.py (local locations), model_s3.py (s3://
locations: boto3's client, credentials and errors) and model_disk_cache.py
(S3 downloads on disk), batching.py (server_side_batching), and
mnt_namespace.py / mnt_project.py (the project at /mnt/project, where Cortex put it).
Exit codes: 0 after SIGTERM/SIGINT (in-flight requests drained), 1 on any
start-up failure or when a worker dies.
"""
