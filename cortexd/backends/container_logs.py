"""Copying each replica container's output into a log file, so logs outlive the container.

One thread per running container follows its log stream (DockerEngine.follow_logs)
into log_dir/<api>/<replica>.log, rotated by size (cortexd/logfiles.py), and ends
when the container does: a crashed replica's traceback stays readable and is
followed like the process backend's. The copier also remembers which API each
replica belongs to (for log_path()) and forgets replicas that are gone.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from cortexd.backends.base import ReplicaInfo
from cortexd.backends.container_args import CONTAINER_PORT
from cortexd.backends.docker_engine import DockerEngine
from cortexd.logfiles import DEFAULT_FILES, DEFAULT_MAX_BYTES, RotatingLogWriter

log = logging.getLogger("cortexd.docker")


def published_note(info: ReplicaInfo) -> str:
    """The first line of a container's log: its port is its own; where the daemon reaches it."""
    return (f"[cortexd] replica {info.replica_id}: port {CONTAINER_PORT} below is the container's own; "
            f"cortexd reaches this replica at http://{info.host}:{info.port} (clients use the "
            "gateway's URL, `cortexd get`)\n")


class ContainerLogCopier:
    """The log copies of one backend's replicas. log_dir None: nothing is copied (the engine keeps
    the logs) and log_path() is None."""

    def __init__(self, engine: DockerEngine, log_dir: Path | str | None,
                 max_bytes: int = DEFAULT_MAX_BYTES, files: int = DEFAULT_FILES):
        self._engine = engine
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._rotation = (max_bytes, files)
        self._copies: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._replica_api: dict[str, str] = {}  # replica id -> api, for log_path()

    def _log_file(self, api: str, replica_id: str) -> Path | None:
        if self._log_dir is None:
            return None
        return self._log_dir / api / f"{replica_id}.log"

    def ensure(self, info: ReplicaInfo, container_id: str) -> None:
        """Copy the output of a replica's container, unless a copy already runs (or it exited)."""
        self._replica_api[info.replica_id] = info.api
        path = self._log_file(info.api, info.replica_id)
        if path is None or info.state == "exited" or not container_id:
            return
        with self._lock:
            copy = self._copies.get(info.replica_id)
            if copy is not None and copy.is_alive():
                return
            copy = threading.Thread(target=self._copy, args=(container_id, path, info),
                                    name=f"logs-{info.replica_id}", daemon=True)
            self._copies[info.replica_id] = copy
            copy.start()

    def _copy(self, container_id: str, path: Path, info: ReplicaInfo | None = None) -> None:
        """Append the container's output to `path` until the container ends.

        A new log opens with where the daemon reaches the container: the runtime inside says
        `serving on http://0.0.0.0:8888`, an address that is the container's own, not the host's
        (where 8888 is the gateway's)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # an adopted replica's file already holds its output up to the file's mtime
        since = path.stat().st_mtime if path.exists() and path.stat().st_size else None
        try:
            with self._engine.follow_logs(container_id, since) as chunks:
                out = RotatingLogWriter(path, *self._rotation)  # at most size x files on disk
                try:
                    if since is None and info is not None and info.port:
                        out.write(published_note(info).encode())
                    for chunk in chunks:
                        out.write(chunk)
                finally:
                    out.close()
        except Exception as e:
            log.debug("log copy of %s ended: %s", container_id[:12], e)

    def follow(self, container_id: str, path: Path) -> threading.Thread:
        """Copy a worker's container output into `path` until it ends (the thread, to join)."""
        copy = threading.Thread(target=self._copy, args=(container_id, path), name=f"logs-{path.stem}",
                                daemon=True)
        copy.start()
        return copy

    def forget(self, replica_id: str) -> None:
        """Drop what is known of a replica that is gone (its copy ends with its container)."""
        self._replica_api.pop(replica_id, None)
        with self._lock:
            self._copies.pop(replica_id, None)

    def prune(self, listed: set[str]) -> None:
        """Forget replicas the engine no longer lists (removed outside cortexd) whose copy ended;
        a live copy means a container that start() created after the listing was read."""
        with self._lock:
            gone = [rid for rid in set(self._replica_api) | set(self._copies) if rid not in listed
                    and not (rid in self._copies and self._copies[rid].is_alive())]
        for rid in gone:
            self.forget(rid)

    def log_path(self, replica_id: str) -> str | None:
        api = self._replica_api.get(replica_id)
        path = self._log_file(api, replica_id) if api else None
        return str(path) if path is not None else None
