"""Which files form a model of a predictor type: the one copy of the layout rules.

ONNX: exactly one .onnx file at the version's top. TensorFlow: saved_model.pb
(or .pbtxt), and variables/variables.index whenever variables/ holds files (TF
cannot restore a SavedModel's variables without it; Cortex's own check asks
for it too). Python: any folder (load_model() decides).

Two users, one rule: the runtime's model sources (model_sources.py) list a
version into relative paths and serve it only once layout_problem() is None;
cortexd's `validate` (cortexd/spec/rules.py) reports a local model_path
that is not a model with local_model_problem(), in its own words (file:line,
what was expected, what was found). Pure, apart from local_model_problem()
and describe_folder(), which list a folder. Never imports cortexd.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

SAVED_MODEL_FILES = frozenset({"saved_model.pb", "saved_model.pbtxt"})
VARIABLES_INDEX = "variables/variables.index"


def top_level(files: Iterable[str]) -> set[str]:
    """The files directly in a version's root (paths relative to it, '/'-separated)."""
    return {f for f in files if "/" not in f}


def onnx_files(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n.endswith(".onnx"))


def layout_problem(kind: str, files: Iterable[str]) -> str | None:
    """What keeps these files (paths relative to a version's root) from being a `kind` model.

    None when they form one. Pure: local folders and S3 prefixes are listed
    into relative paths first.
    """
    files = set(files)
    top = top_level(files)
    if kind == "onnx":
        onnx = onnx_files(top)
        if len(onnx) == 1:
            return None
        found = f"{len(onnx)} .onnx files ({', '.join(onnx)})" if onnx else describe_files(files)
        return f"expected exactly one .onnx file; found {found}"
    if kind == "tensorflow":
        if not top & SAVED_MODEL_FILES:
            return f"expected a TensorFlow SavedModel (saved_model.pb); found {describe_files(files)}"
        if any(f.startswith("variables/") for f in files) and VARIABLES_INDEX not in files:
            return f"expected {VARIABLES_INDEX} next to saved_model.pb (the SavedModel is incomplete)"
        return None
    return None  # python predictors load whatever their load_model() understands


def describe_files(files: Iterable[str], limit: int = 8) -> str:
    names = sorted(files)
    if not names:
        return "nothing"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---- a local folder, as `cortexd validate` reports it ---------------------------------------

def describe_folder(folder: str) -> str:
    """A folder's entries for a message ('a/, b.txt and 3 more', 'an empty folder')."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        return f"an unreadable folder ({e.strerror})"
    if not names:
        return "an empty folder"
    shown = [n + ("/" if os.path.isdir(os.path.join(folder, n)) else "") for n in names[:8]]
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return ", ".join(shown) + more


def folder_files(root: str) -> list[str]:
    """Every file under `root`, relative to it and '/'-separated (what layout_problem() reads)."""
    out: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        out.extend(os.path.relpath(os.path.join(folder, n), root).replace(os.sep, "/") for n in sorted(names))
    return out


def version_dirs(folder: str) -> list[str]:
    return sorted((n for n in os.listdir(folder) if n.isdigit() and os.path.isdir(os.path.join(folder, n))),
                  key=int)


def local_model_problem(ptype: str, location: str) -> str | None:
    """What is wrong with a local model for a predictor type (None when it is fine).

    A location is a model itself (unversioned) or holds integer version folders
    that each are one; every version must be. The messages are the ones
    `cortexd validate` shows after the file:line of the field.
    """
    if not os.path.exists(location):
        return f"not found: {location}"
    if ptype == "tensorflow":
        expected = ("expected a TensorFlow SavedModel folder (saved_model.pb, or integer version folders "
                    "such as 1/saved_model.pb)")
        if not os.path.isdir(location):
            return f"{expected}; found a file: {location}"
        if SAVED_MODEL_FILES & set(os.listdir(location)):
            problem = layout_problem(ptype, folder_files(location))
            variables = os.path.join(location, "variables")
            return f"{problem}; found {describe_folder(variables)} in {variables}" if problem else None
        versions = version_dirs(location)
        if not versions:
            return f"{expected}; found {describe_folder(location)} in {location}"
        for v in versions:
            vdir = os.path.join(location, v)
            if not SAVED_MODEL_FILES & set(os.listdir(vdir)):
                return f"{expected}; version folder {v}/ holds {describe_folder(vdir)}"
            problem = layout_problem(ptype, folder_files(vdir))
            if problem:
                variables = os.path.join(vdir, "variables")
                return f"{problem}; version folder {v}/variables/ holds {describe_folder(variables)}"
        return None
    if ptype == "onnx":
        expected = ("expected a .onnx file, a folder with exactly one .onnx file, or integer version "
                    "folders each holding exactly one .onnx file")
        if os.path.isfile(location):
            return None if location.endswith(".onnx") else f"{expected}; found the file {location}"
        if layout_problem(ptype, folder_files(location)) is None:
            return None
        top = _top_onnx_files(location)
        if top:
            return f"{expected}; found {len(top)} .onnx files in {location}: {', '.join(top)}"
        versions = version_dirs(location)
        if not versions:
            return f"{expected}; found {describe_folder(location)} in {location}"
        for v in versions:
            vdir = os.path.join(location, v)
            if layout_problem(ptype, folder_files(vdir)) is not None:
                files = _top_onnx_files(vdir)
                return (f"{expected}; version folder {v}/ holds {len(files)} .onnx files"
                        + (f": {', '.join(files)}" if files else ""))
        return None
    return None  # python / legacy predictors load whatever they like


def _top_onnx_files(folder: str) -> list[str]:
    return onnx_files(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
