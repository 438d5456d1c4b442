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
        """GET /healthz answers 200 on the port and, where the gateway reaches the replica on a
        unix socket (info.socket: a process replica's), on that socket too: the probe asks on
        the hop the requests take, so a replica whose socket stopped taking connections (its
        predictor closed the descriptor, say) is not ready, and is replaced once live."""
        try:
            async with self._client().get(f"http://{info.host}:{info.port}/healthz") as resp:
                if resp.status != 200:
                    return False
            if not info.socket:
                return True
            # a session of its own: a connector serves one socket path
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=info.socket),
                                             timeout=aiohttp.ClientTimeout(total=self._timeout)) as unix, \
                    unix.get("http://replica/healthz") as resp:
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
