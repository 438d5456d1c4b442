"""Which backend runs the daemon's replicas, and what a previous daemon left running.

At start the daemon (running.py) ends the replica processes a killed daemon left behind
(`end_leftover_replicas`), then takes the backend settings.backend names (`choose_backend`):
Docker when an engine answers (auto), else the process backend, saying why. Only this
module of the daemon names the backends' classes; everything else talks to the
ReplicaBackend protocol (cortexd/backends/base.py).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable

from cortexd.backends.base import ReplicaBackend
from cortexd.backends.environments import ProjectEnvironments
from cortexd.backends.process import ProcessBackend
from cortexd.daemon.events import EventLog
from cortexd.errors import BackendUnavailable
from cortexd.settings import DaemonSettings

log = logging.getLogger("cortexd")


def _notices_to(events: EventLog) -> Callable[[str, str], None]:
    """A backend's notify(message, api): each notice a warning in the event log."""

    def notify(message: str, api: str) -> None:
        events.add(message, api=api, level="warning")

    return notify


def _build_progress(events: EventLog) -> Callable[[str], None]:
    """Image build output: every line to the daemon log, the milestones to the event log."""

    def progress(line: str) -> None:
        text = line.split("] ", 1)[1] if line.startswith("[") and "] " in line else line
        if text.startswith(("building ", "built ", "pulling ", "notice: ", "Step ")):
            events.add(text if len(text) <= 160 else text[:157] + "...",
                       level="warning" if text.startswith("notice: ") else "info")
        else:
            log.info("build: %s", line)

    return progress


def project_environments(settings: DaemonSettings, events: EventLog) -> ProjectEnvironments:
    """The process backend's project environments (made before the backend is chosen: the
    daemon's status reads the nearest pins they installed, PinChanges)."""
    return ProjectEnvironments(settings.environments_dir, run_dependencies_sh=settings.run_dependencies_sh,
                               notify=_notices_to(events))


async def choose_backend(settings: DaemonSettings, events: EventLog, why: list[str] | None = None,
                         environments: ProjectEnvironments | None = None) -> ReplicaBackend:
    """The replica backend for settings.backend (auto: Docker when an engine answers); when
    auto falls back to the process backend, `why` gets one line: the reason and the remedy.
    environments: the process backend's (project_environments(); made here when None)."""
    wanted = settings.backend
    if wanted not in ("auto", "process", "docker"):
        raise BackendUnavailable(f"unknown backend {wanted!r}; choose auto, process or docker")
    if wanted in ("docker", "auto"):
        from cortexd.backends.container_args import instance_for_home
        from cortexd.backends.docker import DockerBackend

        problem = await asyncio.to_thread(DockerBackend.probe)
        if problem is None:
            return DockerBackend(
                instance=instance_for_home(settings.home), base_image=settings.base_image,
                progress=_build_progress(events), log_dir=settings.log_dir,
                notify=_notices_to(events),
                log_max_bytes=settings.log_max_bytes, log_files=settings.log_files,
                limits=settings.replica_limits(), tmpfs_bytes=settings.tmpfs_bytes,
            )
        if wanted == "docker":
            raise BackendUnavailable(problem)
        events.add(f"{problem.splitlines()[0]} -- using the process backend", level="warning")
        if why is not None:
            reason = problem.splitlines()[0].replace(", or use --backend process", "")
            why.append(f"Docker was not used: {reason} Once it answers, `cortexd down` and "
                       "`cortexd up -d` serve on Docker (`--backend process` chooses this one).")
    from cortexd.backends.replica_uids import UidRegistry, parse_range

    if environments is None:
        environments = project_environments(settings, events)
    return ProcessBackend(settings.run_dir, settings.log_dir, host="127.0.0.1",
                          log_max_bytes=settings.log_max_bytes, log_files=settings.log_files,
                          replica_user=settings.replica_user, environments=environments,
                          limits=settings.replica_limits(), owner=str(settings.home),
                          uids=UidRegistry(owner=str(settings.home), uid_range=parse_range(settings.replica_uids)),
                          notify=_notices_to(events))


def end_leftover_replicas(settings: DaemonSettings) -> list[int]:
    """(blocking, at start) The replica processes a previous daemon on this home left running: a
    daemon killed before it stopped them leaves them holding ports and GPUs. They are killed
    whatever backend serves now (the previous daemon may have run processes), and the run
    files that named them go; the pids killed."""
    killed = ProcessBackend(settings.run_dir, settings.log_dir, owner=str(settings.home)).reap_leftovers()
    shutil.rmtree(settings.run_dir, ignore_errors=True)
    return killed
