"""The unit tier's guard (tests/unit/conftest.py): a unit test that starts a process fails with a
message that says where the test goes; a pure one passes. Runs a nested pytest on a copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

from tests.real_daemon import REPO

SPAWNING = textwrap.dedent("""
    import asyncio
    import multiprocessing
    import os
    import subprocess


    def test_subprocess_run():
        subprocess.run(["true"], check=False)


    async def test_asyncio_subprocess():
        process = await asyncio.create_subprocess_exec("true")
        await process.wait()


    def test_a_swallowed_refusal_still_fails():
        try:
            subprocess.run(["true"], check=False)
        except BaseException:
            pass


    def test_multiprocessing_spawn():
        process = multiprocessing.get_context("spawn").Process(target=print)
        process.start()
        process.join()


    def test_os_system():
        os.system("true")


    def test_pure_logic():
        assert sorted([3, 1, 2]) == [1, 2, 3]
""")


def test_a_unit_test_that_starts_a_process_fails_and_says_where_it_goes(tmp_path):
    shutil.copy(REPO / "tests" / "unit" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_spawning.py").write_text(SPAWNING)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto",
         "-rA", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # the conftest imports tests.unit's fakes
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    for name in ("test_subprocess_run", "test_asyncio_subprocess", "test_multiprocessing_spawn", "test_os_system"):
        assert f"FAILED test_spawning.py::{name}" in out, out
    assert "ERROR test_spawning.py::test_a_swallowed_refusal_still_fails" in out, out
    assert "PASSED test_spawning.py::test_pure_logic" in out, out
    assert out.count("unit tests start no processes") >= 5, out
    assert "move this test to tests/integration" in out
