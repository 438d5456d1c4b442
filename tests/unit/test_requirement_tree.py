"""requirement_tree / local_path: the files a requirements.txt brings in, read as pip reads them (pure)."""

from __future__ import annotations

import pytest

from cortexd.core.requirements import MAX_INCLUDES, local_path, requirement_names, requirement_tree


def test_includes_are_relative_to_the_file_that_names_them_and_constraints_install_nothing():
    files = {
        "requirements.txt": b"-r reqs/base.txt\n-c pins.txt\nnumpy\n",
        "reqs/base.txt": b"--requirement=common.txt\nsix==1.16.0\n-r ../requirements.txt\n",
        "reqs/common.txt": b"dill\n",
        "pins.txt": b"scipy<2\n-r reqs/never-installed.txt\n",
        "reqs/never-installed.txt": b"torch\n",
    }
    tree = requirement_tree(files.get)
    assert list(tree.files) == ["requirements.txt", "reqs/base.txt", "reqs/common.txt", "pins.txt",
                                "reqs/never-installed.txt"]
    assert requirement_names(tree.lines) == {"dill", "six", "numpy"}  # pins.txt and its include constrain only
    assert tree.problems == () and tree.local == ()


def test_no_requirements_txt_is_an_empty_tree():
    tree = requirement_tree({}.get)
    assert tree.files == {} and tree.lines == () and tree.problems == ()


def test_a_runaway_chain_of_includes_stops_with_a_problem():
    files = {"requirements.txt": b"-r r1.txt\n", **{f"r{i}.txt": f"-r r{i + 1}.txt\n".encode() for i in range(200)}}
    tree = requirement_tree(files.get)
    assert len(tree.files) == MAX_INCLUDES
    assert any(f"more than {MAX_INCLUDES} requirement files" in p for p in tree.problems)


def test_local_paths_are_relative_to_the_project_folder_as_pip_reads_them():
    files = {"requirements.txt": b"-r reqs/more.txt\n", "reqs/more.txt": b"./wheels/a-1.0-py3-none-any.whl\n-e .\n"}
    tree = requirement_tree(files.get)
    assert tree.local == ("wheels/a-1.0-py3-none-any.whl", "")  # cwd-relative, not reqs/-relative


@pytest.mark.parametrize(("line", "path"), [
    ("./pkg", "./pkg"),
    ("../x-1.0.tar.gz", "../x-1.0.tar.gz"),
    ("-e .", "."),
    ("--editable=./pkg", "./pkg"),
    ("file:vendor/z", "vendor/z"),
    ("file:./vendor/z#egg=z", "./vendor/z"),
    ("name @ file:///abs/w", "/abs/w"),
    ("x-1.0-py3-none-any.whl", "x-1.0-py3-none-any.whl"),
    ("./pkg[extra] ; python_version > '3'", "./pkg"),
    ("numpy==1.26", None),
    ("https://example.com/x-1.0-py3-none-any.whl", None),
    ("git+https://example.com/repo", None),
    ("--index-url https://example.com", None),
    ("name @ https://example.com/x.whl", None),
])
def test_local_path(line, path):
    assert local_path(line) == path
