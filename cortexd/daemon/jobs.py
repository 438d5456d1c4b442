"""BatchAPI jobs: their endpoint's requests, their workers, their record (job_store.py).

    client --(API's endpoint: POST submit, GET ?jobID= status, DELETE ?jobID= stop)--> gateway
       JobRoute --> JobRunner.handle --> core.batch_jobs (rules) + job_sources (data) + JobStore
    worker (predictor_runtime.batch_worker) --(POST /jobs/ID/claim, /done: loopback or jobs.sock)--> here
                                  (/done's answer is the worker's next batch: one round trip a batch)

A job's batches are recorded in SQLite before its workers start (the submission's answer says
the job exists only once it is durable; its workers start after it, in the background). Each
worker is started by the backend as a replica of the API would be (backends/base.py
`start_worker`): on the process backend the API's environment, its replicas' user (a root
daemon's uid of the API's own), cgroups with its limits and /mnt/project; on Docker a container
of the API's image with its limits and GPUs. A worker pulls batches from an endpoint of the
daemon with the job's secret token: over loopback (process workers), or through the daemon's
unix socket for workers (CORTEXD_HOME/jobs.sock, 0600, bound into worker containers, so no port
is opened to the bridge network). A worker that exits while its job runs has its running batch
queued again (or failed after its attempts) and is replaced, at most `workers * max_attempts`
times, after which the job ends `status_worker_error` (it never hangs); its exit is said with
its Failure kind (`oom` when it was killed for memory, else `crashed`), and a worker that cannot
be started at all ends its job `status_worker_error` with the reason (`start`; `no_gpu_on_host`
for compute.gpu on a host without one; a worker waiting for a free GPU says `no_gpu`).
After `up`, batches that were running when the daemon died are queued again and the jobs that
had not ended get their workers back. The job ends when no batch is queued or running:
`status_succeeded`, or `status_completed_with_failures`; the next worker to ask runs the
predictor's `on_job_complete`, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from aiohttp import web

from cortexd.backends.base import ReplicaBackend, Worker, WorkerEndpoint, WorkerExit, WorkerLaunch
from cortexd.core.api_status import Failure
from cortexd.core.batch_jobs import (
    DEFAULT_MAX_ATTEMPTS,
    SUBMISSION_LIMIT,
    JobStatus,
    SubmissionError,
    job_status,
    merged_config,
    parse_submission,
)
from cortexd.daemon.events import EventLog
from cortexd.daemon.job_progress import ProgressBook
from cortexd.daemon.job_store import JobRow, JobStore
from cortexd.daemon.seams import WorkerGPUs
from cortexd.errors import CortexdError, RequestError, UnknownAPI
from cortexd.gateway.routes import JobRoute
from cortexd.job_sources import submission_batches
from cortexd.spec.model import APISpec
from cortexd.status import BatchAPIStatus

log = logging.getLogger(__name__)

WORKER_MODULE = "predictor_runtime.batch_worker"
GPU_RETRY = 2.0  # seconds between two placements of a worker that waits for a free GPU
Answer = tuple[int, dict[str, Any]]


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclasses.dataclass
class _Worker:
    name: str
    handle: Worker
    exit_code: int | None = None
    watch: asyncio.Future[None] | None = None


@dataclasses.dataclass
class _Running:
    """A job this daemon runs: its token, its workers, how many were replaced."""

    token: str
    wanted: int
    workers: dict[str, _Worker] = dataclasses.field(default_factory=dict)
    started: int = 0
    replaced: int = 0
    exited: list[int] = dataclasses.field(default_factory=list)


class JobRunner:
    def __init__(self, home: Path, events: EventLog, backend: ReplicaBackend, *,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, max_workers: int | None = None,
                 gpus: WorkerGPUs | None = None):
        self.dir = home / "jobs"
        self.socket_path = home / "jobs.sock"  # no longer than the control socket's path
        self.events = events
        self.backend = backend
        self.gpus = gpus  # compute.gpu: workers placed as replicas are (None: no GPU placement here)
        self.max_attempts = max_attempts
        self.max_workers = max_workers or os.cpu_count() or 1
        self.apis: dict[str, APISpec] = {}
        self.running: dict[str, _Running] = {}
        self.store: JobStore | None = None
        self._progress: ProgressBook | None = None  # the snapshot's jobs (made with the store)
        self.closing = False
        self._site: web.SockSite | None = None
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._tasks: set[asyncio.Future[Any]] = set()  # worker starts and stops in progress

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.store = await asyncio.to_thread(JobStore, str(self.dir / "jobs.sqlite"))
        lost = await asyncio.to_thread(self.store.requeue_running, "the daemon stopped while it ran")
        if lost:
            self.events.add(f"jobs: {lost} batch(es) running when the daemon stopped are queued again")
        app = web.Application()
        app.router.add_post("/jobs/{job}/claim", self._claim)
        app.router.add_post("/jobs/{job}/done", self._done)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # the workers' endpoint: loopback, a port of its own
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        self._url = f"http://127.0.0.1:{sock.getsockname()[1]}/jobs"
        # the same endpoint on a unix socket, for workers in containers (bound in; 0600)
        self.socket_path.unlink(missing_ok=True)
        unix = web.UnixSite(self._runner, str(self.socket_path))
        await unix.start()
        self.socket_path.chmod(0o600)
        try:
            await self.backend.end_workers()  # a killed daemon's worker containers
        except CortexdError as e:  # they end on their own: their socket is gone
            self.events.add(f"jobs: the workers a previous daemon left could not be removed: {e}", level="warning")

    async def close(self) -> None:
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(w.handle.stop(5) for job in list(self.running.values())
                               for w in list(job.workers.values())), return_exceptions=True)
        self.socket_path.unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.store is not None:
            self.store.close()

    def routes(self) -> list[JobRoute]:
        """The gateway's routes of the BatchAPIs served."""
        return [JobRoute(s.name, s.networking.endpoint, s.networking.local_port, self._handler(s.name))
                for s in self.apis.values()]

    def _handler(self, api: str) -> Callable[[str, str, bytes], Awaitable[Answer]]:
        async def handle(method: str, query: str, body: bytes) -> Answer:
            return await self.handle(api, method, query, body)
        return handle

    async def set_apis(self, specs: Sequence[APISpec]) -> None:
        """The BatchAPIs deployed now; their unended jobs (after a restart) get their workers."""
        self.apis = {s.name: s for s in specs}
        assert self.store is not None
        for job_id in [j for j in self.running if not self._serves(j)]:  # its BatchAPI was removed
            await self.stop(job_id)
        for job in await asyncio.to_thread(self.store.jobs):
            if job.ended is None and job.job_id not in self.running and job.api in self.apis:
                self.events.add(f"job {job.job_id}: resumed with {job.workers} worker(s)", api=job.api)
                await self._start_job(job)

    def statuses(self, url: Callable[[int, str], str], now: float) -> tuple[BatchAPIStatus, ...]:
        """The BatchAPIs served, for the status snapshot: their jobs counted, those shown one by one
        with their progress and workers (job_progress.py: two small queries each)."""
        if self._progress is None:
            self._progress = ProgressBook(self._store)
        workers = {job_id: sum(1 for w in job.workers.values() if w.exit_code is None)
                   for job_id, job in self.running.items()}
        return tuple(self._progress.status(name, url(spec.networking.local_port, spec.networking.endpoint),
                                           workers, now)
                     for name, spec in sorted(self.apis.items()))

    def log_sources(self, api: str, job_id: str | None) -> list[tuple[str, str | None]]:
        """(JOB/worker-N, its log file) of a job's workers (job_id None: the API's newest job)."""
        jobs = self._store.jobs(api)
        job = next((j for j in jobs if j.job_id == job_id), None) if job_id else (jobs[0] if jobs else None)
        if job is None:
            raise UnknownAPI(f"batch api {api!r} has no job {job_id}" if job_id else f"batch api {api!r} has no "
                             "jobs yet: its workers' logs come with a job")
        return [(f"{job.job_id}/{f.stem}", str(f)) for f in sorted((self.dir / job.job_id).glob("*.log"))]

    def _serves(self, job_id: str) -> bool:
        job = self._store.job(job_id)
        return job is not None and job.api in self.apis

    # -- the endpoint's requests ------------------------------------------------------------

    async def handle(self, api: str, method: str, query: str, body: bytes) -> Answer:
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        spec = self.apis.get(api)
        if spec is None:
            return 503, {"error": f"batch api {api!r} is not deployed"}
        job_id = params.get("jobID")
        if method == "POST":
            return await self._submit(spec, body, params.get("dryRun", "").lower() == "true")
        if method in ("GET", "DELETE"):
            if not job_id:
                if method == "GET":
                    return 200, {"jobs": [self._summary(j) for j in await asyncio.to_thread(self._store.jobs, api)]}
                return 400, {"error": "give the job to stop: DELETE ?jobID=<job id>"}
            job = await asyncio.to_thread(self._store.job, job_id)
            if job is None or job.api != api:
                return 404, {"error": f"unable to find batch job {job_id} of api {api!r}"}
            if method == "GET":
                return 200, await asyncio.to_thread(self.job_status, job_id)
            return await self.stop(job_id)
        return 405, {"error": f"method {method} is not allowed: POST submits a job, GET ?jobID= says its status, "
                              "DELETE ?jobID= stops it"}

    async def control(self, api: str, job_id: str | None, *, stop: bool = False) -> dict[str, Any]:
        """The control API's view of a BatchAPI (its jobs, newest first) or of one of its jobs (its
        status; `stop`: stopped first). Raises UnknownAPI for an unknown job, RequestError for a
        job that cannot be stopped."""
        spec = self.apis[api]
        if job_id is None:
            jobs = []
            for job in await asyncio.to_thread(self._store.jobs, api):
                counts = await asyncio.to_thread(self._store.counts, job.job_id)
                jobs.append({**self._summary(job), "succeeded": counts.succeeded, "failed": counts.failed,
                             "total": counts.total})
            return {"kind": "BatchAPI", "name": api, "endpoint": spec.networking.endpoint,
                    "port": spec.networking.local_port, "jobs": jobs,
                    "isolation": self.backend.isolation(api)}  # its workers' (none before the first)
        code, answer = await self.handle(api, "DELETE" if stop else "GET", urlencode({"jobID": job_id}), b"")
        if code == 404:
            raise UnknownAPI(answer["error"])
        if code != 200:
            raise RequestError(answer["error"])
        return answer

    @property
    def _store(self) -> JobStore:
        assert self.store is not None, "the job runner has not started"
        return self.store

    async def _submit(self, spec: APISpec, body: bytes, dry_run: bool) -> Answer:
        if len(body) > SUBMISSION_LIMIT:
            return 413, {"error": f"the job submission is {len(body)} bytes; it must be less than 10 MiB"}
        try:
            submission = parse_submission(json.loads(body or b"null"))
            batches, files = await asyncio.to_thread(submission_batches, submission, spec.project_dir)
        except ValueError as e:  # SubmissionError, and JSON that does not parse
            what = str(e) if isinstance(e, SubmissionError) else f"the body is not JSON ({e})"
            return 400, {"error": what, "schema": "docs/deployments/batch-api/endpoints.md of Cortex 0.23"}
        if dry_run:
            return 200, {"dry_run": True, "batches": len(batches), "files": files,
                         "message": "validations passed"}
        workers = min(submission.workers, self.max_workers, len(batches))
        job = JobRow(uuid.uuid4().hex[:16], spec.name, workers, submission.config, submission.source,
                     time.time(), None, JobStatus.RUNNING, self.max_attempts)
        await asyncio.to_thread(self._store.create, job, batches)
        note = (f"workers reduced from {submission.workers} to {workers} (this host has {self.max_workers} "
                f"CPU(s), the job {len(batches)} batch(es))" if workers < submission.workers else None)
        self.events.add(f"job {job.job_id}: {len(batches)} batch(es) from {submission.source}, {workers} "
                        f"worker(s)" + (f"; {note}" if note else ""), api=spec.name)
        await self._start_job(job)
        answer = {"job_id": job.job_id, "api_name": spec.name, "workers": workers, "config": submission.config,
                  "api_id": spec.spec_hash, "created_time": _iso(job.created), "total_batch_count": len(batches)}
        return 200, answer | ({"message": note} if note else {})

    async def stop(self, job_id: str) -> Answer:
        job = await asyncio.to_thread(self._store.job, job_id)
        if job is None:
            return 404, {"error": f"unable to find batch job {job_id}"}
        if not await asyncio.to_thread(self._store.end, job_id, JobStatus.STOPPED, time.time()):
            return 400, {"error": f"cannot stop batch job {job_id} because it is not in progress "
                                  f"({job.status.value})"}
        self.events.add(f"job {job_id}: stopped", api=job.api)
        running = self.running.get(job_id)
        for worker in (running.workers.values() if running else ()):
            self._background(worker.handle.stop())
        return 200, {"message": f"stopped job {job_id}"}

    def job_status(self, job_id: str) -> dict[str, Any]:
        """Cortex's job status answer (run off the loop)."""
        job = self._store.job(job_id)
        assert job is not None
        counts = self._store.counts(job_id)
        running = self.running.get(job_id)
        live = sum(1 for w in running.workers.values() if w.exit_code is None) if running else 0
        status: dict[str, Any] = {
            **self._summary(job), "batches_in_queue": counts.queued,
            "batch_metrics": {"succeeded": counts.succeeded, "failed": counts.failed, "running": counts.running,
                              "total": counts.total},
            "worker_counts": {"running": live, "succeeded": sum(1 for c in (running.exited if running else ())
                                                                 if c == 0),
                              "failed": sum(1 for c in (running.exited if running else ()) if c != 0)},
        }
        avg = self._store.average_seconds(job_id)
        if avg is not None:
            status["batch_metrics"]["avg_time_per_batch"] = avg
        errors = self._store.errors(job_id)
        if errors:
            status["failed_batches"] = [{"batch": i, "error": e} for i, e in errors]
        return {"job_status": status, "endpoint": self.apis[job.api].networking.endpoint if job.api in self.apis
                else None}

    def _summary(self, job: JobRow) -> dict[str, Any]:
        return {"job_id": job.job_id, "api_name": job.api, "workers": job.workers, "config": job.config,
                "status": job.status.value, "created_time": _iso(job.created), "start_time": _iso(job.created),
                "end_time": _iso(job.ended)}

    # -- workers ------------------------------------------------------------------------------

    def _background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_job(self, job: JobRow) -> None:
        """The job's workers, started in the background (an environment or an image may be made
        first: minutes, which the submission's answer does not wait for)."""
        self.running[job.job_id] = _Running(secrets.token_urlsafe(24), job.workers)

        async def start_all() -> None:
            for _ in range(job.workers):
                if not await self._start_worker(job):
                    return
        self._background(start_all())

    async def _start_worker(self, job: JobRow) -> bool:
        """One more worker of `job`, started by the backend as a replica of its API would be; False
        when it could not be (the job then ends status_worker_error, saying why)."""
        running = self.running.get(job.job_id)
        spec = self.apis.get(job.api)
        if running is None or spec is None or self.closing:
            return False
        running.started += 1
        name = f"worker-{running.started}"
        folder = self.dir / job.job_id
        runtime = spec.runtime_spec()
        predictor = dataclasses.replace(runtime.predictor, config=merged_config(spec.predictor.config, job.config))
        counts = await asyncio.to_thread(self._store.counts, job.job_id)
        job_spec = {"job_id": job.job_id, "api_name": job.api, "config": job.config, "workers": job.workers,
                    "total_batch_count": counts.total, "start_time": _iso(job.created)}
        launch = WorkerLaunch(
            f"{job.job_id}-{name}", WORKER_MODULE, dataclasses.replace(runtime, predictor=predictor),
            {"CORTEXD_JOB_TOKEN": running.token, "CORTEXD_WORKER": name, "CORTEXD_JOB_SPEC": json.dumps(job_spec)},
            WorkerEndpoint(f"{self._url}/{job.job_id}", str(self.socket_path), f"/jobs/{job.job_id}"),
            folder / f"{name}.log")
        gpus = await self._gpus(spec, job, launch.worker_id)
        if gpus is None:
            return False
        try:
            await asyncio.to_thread(folder.mkdir, mode=0o700, exist_ok=True)
            handle = await self.backend.start_worker(spec, dataclasses.replace(launch, gpu_ids=gpus))
        except (CortexdError, OSError) as e:
            self._release(launch.worker_id)
            await self._cannot_start(job, Failure.START, str(e))
            return False
        if self.closing or job.job_id not in self.running:  # stopped meanwhile
            await handle.stop()
            self._release(launch.worker_id)
            return False
        worker = running.workers[name] = _Worker(name, handle)
        worker.watch = asyncio.ensure_future(self._watch(job, worker, launch.worker_id))
        return True

    async def _gpus(self, spec: APISpec, job: JobRow, worker_id: str) -> tuple[int, ...] | None:
        """The GPUs a worker of `spec` gets (placed as a replica's, core/placement.py), waiting for a
        free one as long as its job runs; None when the job ended meanwhile or the host has none."""
        if spec.replica_gpus <= 0 or self.gpus is None:
            return ()
        said = False
        while not self.closing and job.job_id in self.running:
            placement = self.gpus.place(spec, worker_id)
            if placement.placed:
                return placement.gpu_ids
            if placement.none_on_host:
                await self._cannot_start(job, Failure.NO_GPU_ON_HOST, placement.pending or "")
                return None
            if not said:
                self.events.add(f"job {job.job_id}: a worker waits for a free GPU ({Failure.NO_GPU}): "
                                f"{placement.pending}", api=job.api)
                said = True
            await asyncio.sleep(GPU_RETRY)
        return None

    def _release(self, worker_id: str) -> None:
        if self.gpus is not None:
            self.gpus.release(worker_id)

    async def _cannot_start(self, job: JobRow, kind: Failure, why: str) -> None:
        if await asyncio.to_thread(self._store.end, job.job_id, JobStatus.WORKER_ERROR, time.time()):
            self.events.add(f"job {job.job_id}: its workers could not be started ({kind}): {why}; the job ends "
                            "status_worker_error", api=job.api, level="error")

    async def _watch(self, job: JobRow, worker: _Worker, worker_id: str) -> None:
        ended = await worker.handle.wait()
        self._release(worker_id)
        code = worker.exit_code = ended.code
        running = self.running.get(job.job_id)
        if running is None or self.closing:
            return
        running.workers.pop(worker.name, None)
        running.exited.append(code)
        current = await asyncio.to_thread(self._store.job, job.job_id)
        if current is None or current.ended is not None:
            if not running.workers:
                self.running.pop(job.job_id, None)
            return
        lost = await asyncio.to_thread(self._store.requeue_lost, job.job_id, worker.name,
                                       f"{worker.name} {_exit_words(ended)} while it ran this batch")
        self.events.add(f"job {job.job_id}: {worker.name} {_exit_words(ended)}"
                        + (f"; its batch is queued again or failed after {self.max_attempts} attempts" if lost
                           else "") + f" (log: {self.dir / job.job_id / (worker.name + '.log')})",
                        api=job.api, level="warning")
        if await self._finish_if_done(job.job_id):
            return
        if running.replaced >= running.wanted * self.max_attempts:
            await asyncio.to_thread(self._store.end, job.job_id, JobStatus.WORKER_ERROR, time.time())
            self.events.add(f"job {job.job_id}: {running.replaced} workers replaced and still failing; the job "
                            "ends status_worker_error", api=job.api, level="error")
            return
        if job.api in self.apis:
            running.replaced += 1
            await self._start_worker(job)

    async def _finish_if_done(self, job_id: str) -> bool:
        counts = await asyncio.to_thread(self._store.counts, job_id)
        if counts.queued or counts.running:
            return False
        status = job_status(counts)
        if await asyncio.to_thread(self._store.end, job_id, status, time.time()):
            job = await asyncio.to_thread(self._store.job, job_id)
            self.events.add(f"job {job_id}: {status.value} ({counts.succeeded} batch(es) succeeded, {counts.failed} "
                            "failed)", api=job.api if job else None)
        return True

    # -- the workers' endpoint ------------------------------------------------------------------

    async def _authorised(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        job_id = request.match_info["job"]
        running = self.running.get(job_id)
        if running is None or request.headers.get("Authorization") != f"Bearer {running.token}":
            return web.json_response({"error": "unknown job or token"}, status=403)
        return job_id, await request.json()

    async def _claim(self, request: web.Request) -> web.Response:
        got = await self._authorised(request)
        if isinstance(got, web.Response):
            return got
        job_id, body = got
        return await self._next(job_id, str(body.get("worker")))

    async def _next(self, job_id: str, worker: str) -> web.Response:
        """A worker's next batch (200), none queued now (204: ask again), or the job's end (410)."""
        claimed = await asyncio.to_thread(self._store.claim, job_id, worker, time.time())
        if claimed is not None:
            return web.json_response({"index": claimed.index, "attempt": claimed.attempt,
                                      "payload": claimed.payload})
        job = await asyncio.to_thread(self._store.job, job_id)
        if (job is None or job.ended is None) and not await self._finish_if_done(job_id):
            return web.Response(status=204)  # others run the last batches; one may come back
        job = await asyncio.to_thread(self._store.job, job_id)  # ended now (stopped: its workers stop)
        hook = (job is not None and job.status in (JobStatus.SUCCEEDED, JobStatus.COMPLETED_WITH_FAILURES)
                and await asyncio.to_thread(self._store.take_completion_hook, job_id))
        return web.json_response({"on_job_complete": hook}, status=410)

    async def _done(self, request: web.Request) -> web.Response:
        """A batch's outcome; answered with the worker's next batch, as _claim would (one round trip)."""
        got = await self._authorised(request)
        if isinstance(got, web.Response):
            return got
        job_id, body = got
        await asyncio.to_thread(self._store.finish, job_id, int(body["index"]), int(body["attempt"]),
                                error=body.get("error"), seconds=float(body.get("seconds") or 0.0))
        return await self._next(job_id, str(body.get("worker")))


def _exit_words(ended: WorkerExit) -> str:
    """A worker's exit, with its Failure kind: `oom` when it was killed for memory, else `crashed`."""
    if ended.oom_killed:
        return f"was killed for memory ({Failure.OOM}: compute.mem is its limit)"
    return f"exited with code {ended.code}" + (f" ({Failure.CRASHED})" if ended.code != 0 else "")
