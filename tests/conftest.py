"""Fixtures shared by the tiers that drive a real daemon or runtime (integration, faults, docker)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.real_daemon import CLI
from tests.real_runtime import Runtime


@pytest.fixture
def cli():
    # a short path: unix socket paths are limited to ~108 bytes
    home = Path(tempfile.mkdtemp(prefix="cxd-"))
    c = CLI(home)
    yield c
    if (home / "cortexd.sock").exists():
        c("down", timeout=90)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def runtime(tmp_path):
    started: list[Runtime] = []

    def start(code: str, **kw) -> Runtime:
        rt = Runtime(tmp_path, code, **kw)
        started.append(rt)
        return rt

    yield start
    for rt in started:
        rt.close()
