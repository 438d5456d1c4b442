"""HTTP questions the daemon asks its replicas: readiness/liveness (GET /healthz) and models (GET /).

The reconciler (daemon/reconciler.py) probes replicas not yet ready each pass and
ready ones every settings.liveness_interval; `cortexd get API` asks each ready
replica what it serves. One aiohttp session per daemon, opened on first use; a
replica that does not answer is not ready (or says "no answer"), never an error.
"""

from __future__ import annotations

import aiohttp

from cortexd.backends.base import ReplicaInfo

MODEL_KEYS = ("model", "models", "model_cache")  # what a replica's GET / says of its models


class ReplicaProbe:
    def __init__(self, timeout: float):
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    async def healthy(self, info: ReplicaInfo) -> bool:
        """GET /healthz answers 200."""
        try:
            async with self._client().get(f"http://{info.host}:{info.port}/healthz") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def models(self, info: ReplicaInfo, timeout: float) -> dict:
        """The models the replica serves and holds in memory ({} when it serves none);
        {"error": ...} when it cannot answer within `timeout` (it may be busy)."""
        try:
            async with self._client().get(f"http://{info.host}:{info.port}/",
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            return {"error": f"no answer ({type(e).__name__})"}
        if not isinstance(body, dict):
            return {}
        return {k: body[k] for k in MODEL_KEYS if k in body}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
