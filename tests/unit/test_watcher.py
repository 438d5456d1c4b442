"""What counts as an edit for hot reload, and which APIs an edit rolls."""

from __future__ import annotations

import asyncio

from cortexd.daemon.watcher import ProjectWatcher, api_digest, is_ignored, project_files


def test_editor_temp_files_bytecode_and_dotfiles_are_ignored():
    for rel in ["predictor.py~", ".predictor.py.swp", "4913", "#predictor.py#", "__pycache__/p.cpython-311.pyc",
                "p.pyc", ".git/index", "sub/.hidden", ".venv/lib/x.py"]:
        assert is_ignored(rel, []), rel
    for rel in ["predictor.py", "cortex.yaml", "models/1/model.onnx", ".cortexignore", ".env"]:
        assert not is_ignored(rel, []), rel


def test_what_a_running_predictor_writes_beside_its_code_is_ignored():
    # a predictor logging into its own folder would otherwise roll itself forever
    for rel in ["predictor.log", "logs/app.log.1", "cache.db", "cache.db-journal", "state.sqlite3",
                "server.pid", "model.lock"]:
        assert is_ignored(rel, []), rel


def test_cortexignore_patterns():
    patterns = ["data/", "*.log", "scratch.py"]
    assert is_ignored("data/big.csv", patterns)
    assert is_ignored("out/run.log", patterns)
    assert is_ignored("scratch.py", patterns)
    assert not is_ignored("predictor.py", patterns)


def test_an_edit_to_one_predictor_changes_only_that_apis_digest(tmp_path):
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "b.py").write_text("B = 1\n")
    (tmp_path / "shared.py").write_text("S = 1\n")
    a, b = str(tmp_path / "a.py"), str(tmp_path / "b.py")

    def digests():
        files = project_files(str(tmp_path))
        return api_digest(files, exclude=[b]), api_digest(files, exclude=[a])

    da, db = digests()
    (tmp_path / "a.py").write_text("A = 2\n")
    da2, db2 = digests()
    assert da2 != da and db2 == db
    (tmp_path / "shared.py").write_text("S = 2\n")
    da3, db3 = digests()
    assert da3 != da2 and db3 != db2
    (tmp_path / "a.py~").write_text("backup")
    (tmp_path / ".cortexignore").write_text("notes.txt\n")
    da4, _ = digests()
    (tmp_path / "notes.txt").write_text("ignored")
    assert digests()[0] == da4


async def test_a_burst_of_events_reloads_once(tmp_path):
    calls = []

    async def on_change(paths):
        calls.append(paths)

    watcher = ProjectWatcher([str(tmp_path)], on_change, debounce=0.3)
    watcher.start()
    try:
        for i in range(5):  # an editor's save: temp file, write, rename
            (tmp_path / "predictor.py.tmp").write_text(str(i))
            (tmp_path / "predictor.py").write_text(str(i))
            await asyncio.sleep(0.02)
        deadline = asyncio.get_running_loop().time() + 5
        while not calls and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)
    finally:
        await watcher.stop()
    assert len(calls) == 1
    assert any(p.endswith("predictor.py") for p in calls[0])
    assert not any(p.endswith(".tmp") for p in calls[0])
