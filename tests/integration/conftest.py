"""The integration tier: real processes, real HTTP on loopback.

Its helpers are tests/real_daemon.py (the CLI, HTTP, ports) and tests/builders.py
(projects); the `cli` fixture is in tests/conftest.py.
"""

from tests.real_daemon import free_port  # noqa: F401  (tests/integration/test_gateway.py, until its import moves)
