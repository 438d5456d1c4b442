"""`python -m predictor_runtime.standalone`: the entry point of a `cortexd build` image.

No daemon starts it: it serves the spec baked into the image
(CORTEXD_SPEC, default /etc/cortexd/spec.json) on 0.0.0.0:$PORT (default
8888; Knative sets PORT). Everything else is the ordinary server: it listens
only once the predictor is initialised (so /healthz answers only when ready),
exports its in-flight count at /metrics, and on SIGTERM stops accepting and
drains in-flight requests for CORTEXD_DRAIN_SECONDS (the image sets the
request timeout) before exiting 0. Extra arguments go to the server
(`--port 9000` overrides).
"""

from __future__ import annotations

import os
import sys

SPEC_IN_IMAGE = "/etc/cortexd/spec.json"
DEFAULT_PORT = "8888"


def server_argv(env: dict[str, str], extra: list[str]) -> list[str]:
    return ["--spec", env.get("CORTEXD_SPEC") or SPEC_IN_IMAGE,
            "--host", env.get("CORTEXD_HOST") or "0.0.0.0",
            "--port", env.get("PORT") or DEFAULT_PORT, *extra]


def main(argv: list[str] | None = None) -> int:
    from predictor_runtime.server import main as serve

    return serve(server_argv(dict(os.environ), list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
