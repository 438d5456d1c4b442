"""What the engine says about a container, as a ReplicaInfo: the pure reading side of the Docker backend.

`docker inspect` data (a dict) -> ReplicaInfo (replica_from_attrs()): state,
where the daemon reaches it (the cortexd-network address or the published
loopback port), exit code, OOM kill, GPUs from the labels container_args.py
wrote. Also whether this host can reach containers' bridge addresses at all
(engine_reaches_containers(), from `docker info`). Tested without an engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cortexd.backends.base import ReplicaInfo, ReplicaState
from cortexd.backends.container_args import (
    CONTAINER_PORT,
    LABEL_API,
    LABEL_GPUS,
    LABEL_REPLICA,
    LABEL_SPEC_HASH,
    NETWORK,
)

_STATES: dict[str, ReplicaState] = {
    "created": "starting",
    "restarting": "starting",
    "running": "running",
    "paused": "running",
    "exited": "exited",
    "dead": "exited",
    "removing": "exited",
}


def parse_docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds, 'Z') -> epoch seconds; zero time -> None."""
    if not text or text.startswith("0001-01-01"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    tz = "+00:00"
    for sign in ("+", "-"):
        if sign in frac:
            frac, _, off = frac.partition(sign)
            tz = sign + off
    try:
        base = datetime.fromisoformat(head + tz)
    except ValueError:
        return None
    digits = "".join(c for c in frac if c.isdigit())
    return base.timestamp() + (int(digits) / 10 ** len(digits) if digits else 0.0)


def published_port(attrs: Mapping[str, Any], container_port: int = CONTAINER_PORT) -> int | None:
    """The loopback host port Docker published for `container_port` (None when not running)."""
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get(f"{container_port}/tcp") or []:
        if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def network_address(attrs: Mapping[str, Any], network: str = NETWORK) -> str | None:
    """The container's IP address on the cortexd network (None when it is not on it or stopped)."""
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return (networks.get(network) or {}).get("IPAddress") or None


def engine_reaches_containers(engine_info: Mapping[str, Any], platform: str) -> bool:
    """Whether this host can connect to containers' bridge addresses (pure, from `docker info`):
    a Linux engine on this host, neither rootless (its bridge lives in another network namespace)
    nor Docker Desktop (a VM)."""
    security = " ".join(engine_info.get("SecurityOptions") or [])
    return (platform.startswith("linux") and "rootless" not in security
            and "Docker Desktop" not in str(engine_info.get("OperatingSystem", "")))


def replica_from_attrs(attrs: Mapping[str, Any], container_port: int = CONTAINER_PORT,
                       direct: bool = False) -> ReplicaInfo:
    """What `docker inspect` says about one of our containers, as a ReplicaInfo (pure).

    direct: address a running replica at its IP on the cortexd network (the host reaches it with
    inter-container traffic off), so connecting to a dead container fails (refused, or no route
    after a few seconds once its address is gone): the request provably never reached it. Through
    the published loopback port docker-proxy accepts, then resets, and a failure looks like a
    request that was sent. Otherwise (or for a container not on that network) the published port.
    """
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    state = attrs.get("State") or {}
    status = _STATES.get(state.get("Status", ""), "exited")
    gpus = tuple(int(i) for i in (labels.get(LABEL_GPUS) or "").split(",") if i.strip().isdigit())
    started = parse_docker_time(state.get("StartedAt")) or parse_docker_time(attrs.get("Created")) or 0.0
    extra = {
        "container": str(attrs.get("Id", ""))[:12],
        "name": str(attrs.get("Name", "")).lstrip("/"),
        "image": str((attrs.get("Config") or {}).get("Image", "")),
    }
    if state.get("Error"):
        extra["error"] = str(state["Error"])
    host, port = "127.0.0.1", published_port(attrs, container_port) or 0
    address = network_address(attrs) if direct and status == "running" else None
    if address:
        host, port = address, container_port
    return ReplicaInfo(
        api=labels.get(LABEL_API, ""),
        replica_id=labels.get(LABEL_REPLICA, ""),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        state=status,
        host=host,
        port=port,
        started_at=started,
        exit_code=int(state.get("ExitCode", 0)) if status == "exited" else None,
        oom_killed=bool(state.get("OOMKilled", False)),
        gpu_ids=gpus,
        extra=extra,
    )
