"""What counts as an edit for hot reload, and which APIs an edit rolls.

The watcher on a real folder (watchdog, debounce): tests/integration/test_watcher_reloads.py."""

from __future__ import annotations

from pathlib import Path

from cortexd.daemon.watcher import (
    Burst,
    api_digest,
    cortexignore_warning,
    is_ignored,
    is_source,
    project_files,
)


def test_editor_temp_files_bytecode_and_dotfiles_are_ignored():
    for rel in ["predictor.py~", ".predictor.py.swp", "4913", "#predictor.py#", "__pycache__/p.cpython-311.pyc",
                "p.pyc", ".git/index", "sub/.hidden", ".venv/lib/x.py"]:
        assert is_ignored(rel, []), rel
    for rel in ["predictor.py", "cortex.yaml", "models/1/model.onnx", ".cortexignore", ".env"]:
        assert not is_ignored(rel, []), rel


def test_shipped_files_count_whatever_their_name_and_unshipped_ones_never_do(tmp_path):
    # issue 10.7: roll on the files the version shipped with, never on what the predictor creates;
    # a name (*.db, *.log, *.lock) decides nothing
    for name, text in (("p.py", "A = 1\n"), ("labels.txt", "a\n"), ("lookup.db", "v1"), ("table.lock", "x")):
        (tmp_path / name).write_text(text)
    shipped = frozenset(project_files(str(tmp_path)))
    assert {Path(p).name for p in shipped} == {"p.py", "labels.txt", "lookup.db", "table.lock"}
    before = api_digest(project_files(str(tmp_path), shipped=shipped))
    for name in ("predictor.log", "cache.db", "state.sqlite3", "cache.bin"):  # created by the predictor
        (tmp_path / name).write_text("written at run time")
    assert api_digest(project_files(str(tmp_path), shipped=shipped)) == before
    (tmp_path / "lookup.db").write_text("v2")  # shipped: its change rolls the version
    assert api_digest(project_files(str(tmp_path), shipped=shipped)) != before


def test_a_cortexignore_written_after_the_deploy_applies_and_counts(tmp_path):
    (tmp_path / "p.py").write_text("A = 1\n")
    (tmp_path / "labels.txt").write_text("a\n")
    shipped = frozenset(project_files(str(tmp_path)))
    before = project_files(str(tmp_path), shipped=shipped)
    (tmp_path / ".cortexignore").write_text("labels.txt\n")
    after = project_files(str(tmp_path), shipped=shipped)
    assert str(tmp_path / "labels.txt") not in after  # its patterns apply at once
    assert str(tmp_path / ".cortexignore") in after and is_source(".cortexignore")  # and it is a source
    assert api_digest(after) != api_digest(before)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert project_files(str(tmp_path), shipped=shipped) == after


def test_an_unreadable_cortexignore_is_a_warning_not_silence(tmp_path):
    (tmp_path / "p.py").write_text("A = 1\n")
    (tmp_path / ".cortexignore").write_bytes(b"\xff\xfe not utf-8 \x80")
    assert cortexignore_warning(str(tmp_path)).startswith(f"cannot read {tmp_path / '.cortexignore'}:")
    assert str(tmp_path / "p.py") in project_files(str(tmp_path))  # the project still loads
    (tmp_path / ".cortexignore").write_text("data/\n")
    assert cortexignore_warning(str(tmp_path)) is None


def test_folder_patterns_match_folders_as_git_does():
    assert is_ignored("data", ["data/"]) is False  # a file named data is not the folder data/
    assert is_ignored("data/x.csv", ["data/"]) and is_ignored("sub/data/x.csv", ["data/"])


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


def test_cortexignore_is_gitignore_syntax():
    patterns = ["data/", "*.csv", "!keep.csv", "/scratch.py", "docs/**/*.md"]
    assert is_ignored("data/big.csv", patterns) and is_ignored("sub/data/x", patterns)
    assert is_ignored("other.csv", patterns) and not is_ignored("keep.csv", patterns)  # negation, as in git
    assert is_ignored("scratch.py", patterns) and not is_ignored("sub/scratch.py", patterns)  # anchored
    assert is_ignored("docs/a/b/readme.md", patterns) and not is_ignored("readme.md", patterns)


def test_files_created_after_the_version_started_do_not_change_its_digest(tmp_path):
    (tmp_path / "predictor.py").write_text("A = 1\n")
    (tmp_path / "labels.txt").write_text("a\n")
    shipped = frozenset(project_files(str(tmp_path)))
    before = api_digest(project_files(str(tmp_path), shipped=shipped))
    (tmp_path / "cache.json").write_text("{}")  # what a running predictor writes
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.bin").write_bytes(b"x")
    assert api_digest(project_files(str(tmp_path), shipped=shipped)) == before
    (tmp_path / "labels.txt").write_text("a\nb\n")  # a file the version shipped with
    after_labels = api_digest(project_files(str(tmp_path), shipped=shipped))
    assert after_labels != before
    for source in ("utils.py", "requirements.txt", ".env", "dependencies.sh", "conda-packages.txt"):
        (tmp_path / source).write_text("new\n")  # sources count even when new
        assert api_digest(project_files(str(tmp_path), shipped=shipped)) != after_labels, source
        after_labels = api_digest(project_files(str(tmp_path), shipped=shipped))


def test_model_folders_inside_the_project_are_left_out(tmp_path):
    (tmp_path / "predictor.py").write_text("A = 1\n")
    (tmp_path / "models" / "1").mkdir(parents=True)
    (tmp_path / "models" / "1" / "model.onnx").write_bytes(b"1")
    models = [str(tmp_path / "models")]
    before = api_digest(project_files(str(tmp_path), model_dirs=models))
    (tmp_path / "models" / "2").mkdir()
    (tmp_path / "models" / "2" / "model.onnx").write_bytes(b"2")  # a new version: live-reloaded
    assert api_digest(project_files(str(tmp_path), model_dirs=models)) == before


def test_a_change_is_described_by_the_files_that_made_it():
    from cortexd.daemon.watcher import changed_files, describe_change

    before = {"/p/predictor.py": "1", "/p/a.txt": "1"}
    after = {"/p/predictor.py": "2", "/p/a.txt": "1", "/p/b.py": "1"}
    assert changed_files(before, after, "/p") == ["b.py", "predictor.py"]
    assert describe_change(["predictor.py"], None) == "predictor.py changed"
    assert describe_change(["a", "b", "c", "d"], "cortex.yaml") == "cortex.yaml, a, b and 2 more files changed"
    assert describe_change([], None) == "configuration changed"


def test_a_project_with_an_unreadable_cortexignore_loads_with_a_warning_notice(tmp_path):
    from cortexd.daemon.projects import load_project

    (tmp_path / "cortex.yaml").write_text(
        "- name: api\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n")
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    (tmp_path / ".cortexignore").write_bytes(b"\xff\xfe\x80")
    project = load_project(str(tmp_path))
    assert project.names == ["api"]
    assert any(n.startswith(f"cannot read {tmp_path / '.cortexignore'}:") and "not applied" in n
               for n in project.notices), project.notices


def test_a_burst_waits_for_a_pause_but_never_longer_than_max_wait():
    burst = Burst(debounce=0.5, max_wait=2.0)
    assert burst.add(10.0) == 10.5  # one save: half a second after it
    assert burst.add(10.3) == 10.8  # the next save within the pause moves it on
    # 200 saves in 60 s (one each 0.3 s, never a 0.5 s pause): due 2 s after the first, not never
    due = [burst.add(10.0 + 0.3 * i) for i in range(2, 200)]
    assert max(due) == 12.0 and due[-1] == 12.0
    burst.acted()  # handed on at 12.0; the saves that go on make the next burst
    assert burst.add(12.1) == 12.6
    assert [burst.add(12.1 + 0.3 * i) for i in range(1, 10)][-1] == 14.1


def test_max_wait_is_never_shorter_than_the_debounce():
    burst = Burst(debounce=1.0, max_wait=0.2)
    assert burst.add(0.0) == 1.0 and burst.add(0.5) == 1.0
