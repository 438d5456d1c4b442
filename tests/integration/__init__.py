"""The integration tier: real processes, real HTTP on loopback, real clocks.

Its helpers are tests/real_daemon.py (the CLI, HTTP, ports) and tests/builders.py
(projects); the `cli` fixture is in tests/conftest.py.
"""
