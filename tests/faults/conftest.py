"""Fixtures for the faults tier: faults and bad input under load, against a real daemon.

Real processes (and, where the engine answers, real containers) on loopback only; every
loop in this tier is bounded in count and in time, and stops by itself. The CLI, HTTP and
project helpers are the integration tier's (tests/integration/conftest.py).
"""

from tests.integration.conftest import (  # noqa: F401  (fixtures and helpers re-exported)
    CLI,
    cli,
    free_port,
    http,
    pid_alive,
    post_json,
    write_project,
)
