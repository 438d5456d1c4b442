"""The faults tier: faults and bad input under load, against a real daemon.

Real processes (and, where the engine answers, real containers) on loopback only; every
loop in this tier is bounded in count and in time, and stops by itself. The CLI, HTTP and
project helpers are tests/real_daemon.py and tests/builders.py; the `cli` fixture is in
tests/conftest.py.
"""
