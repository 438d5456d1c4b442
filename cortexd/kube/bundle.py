"""Reads what goes into an API's image from disk: project files, local models, `.env` (I/O).

The rules are layout.is_project_file() (Cortex's: dot files, *.pyc, cortex.yaml
out; `.cortexignore` matched with gitignore semantics through pathspec, as
Cortex's CLI did). Local model folders always go in, even inside an ignored
path, since the API cannot start without them; their sizes are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pathspec

from cortexd.errors import ExportError
from cortexd.kube import layout
from cortexd.spec.model import APISpec


@dataclass(frozen=True)
class ModelFolder:
    path: str  # host path
    in_image: str
    files: int
    size: int  # bytes


@dataclass(frozen=True)
class ImageFiles:
    files: dict[str, bytes]  # host absolute path -> content
    models: tuple[ModelFolder, ...]
    dotenv: dict[str, str]
    warnings: tuple[str, ...] = ()  # e.g. a config value naming a file the image does not carry

    @property
    def project_size(self) -> int:
        return sum(len(v) for v in self.files.values())


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _cortexignore(root: Path) -> pathspec.PathSpec | None:
    try:
        text = (root / ".cortexignore").read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ExportError(f"cannot read {root / '.cortexignore'}: {e}") from None
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())


def _walk(root: Path, keep) -> dict[str, bytes]:
    """{host path: content} of the files under root that `keep` accepts; symlinked folders are
    followed (a model folder linked into the project is part of it), each real folder once."""
    out: dict[str, bytes] = {}
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop, or the same folder linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(d for d in dirnames if keep(rel_dir + d + "/", True))
        for name in sorted(filenames):
            rel = rel_dir + name
            path = Path(dirpath) / name
            if not keep(rel, False) or not path.is_file():
                continue
            try:
                out[str(path)] = path.read_bytes()
            except OSError as e:
                raise ExportError(f"cannot read {path}: {e}") from None
    return out


def read_image_files(spec: APISpec) -> ImageFiles:
    """Everything of `spec` that its image carries; ExportError names what is missing."""
    from cortexd.backends.isolation import parse_dotenv

    root = Path(spec.project_dir)
    ignored = _cortexignore(root)
    yamls = {os.path.relpath(spec.source_file, root).replace(os.sep, "/")}

    def keep_project(rel: str, is_dir: bool) -> bool:
        name = rel.rstrip("/")
        if is_dir:
            return layout.is_project_file(name, set(), None) and not (
                ignored is not None and ignored.match_file(rel))
        return layout.is_project_file(name, yamls, ignored)

    files = _walk(root, keep_project)
    mapping = layout.image_paths(spec)
    python_path = Path(spec.predictor.python_path)
    if str(python_path) in mapping and str(python_path) != str(root):
        files.update(_walk(python_path, lambda rel, is_dir: layout.is_project_file(rel.rstrip("/"), set())))

    models = []
    for model in layout.local_model_paths(spec):
        p = Path(model)
        if p.is_file():
            found = {str(p): p.read_bytes()}
        elif p.is_dir():
            found = _walk(p, lambda rel, is_dir: not any(
                part.startswith(".") for part in rel.rstrip("/").split("/")))
        else:
            raise ExportError(
                f"{spec.source_file}:{spec.source_line}: api {spec.name!r}: the model folder {model} "
                "is missing; create it (or point the model path at an s3:// URL) before building"
            )
        files.update(found)
        models.append(ModelFolder(model, layout.to_image_path(model, mapping) or model,
                                  len(found), sum(len(v) for v in found.values())))

    dotenv_file = root / ".env"
    try:
        dotenv = parse_dotenv(dotenv_file.read_text()) if dotenv_file.is_file() else {}
    except OSError as e:
        raise ExportError(f"api {spec.name!r}: cannot read {dotenv_file}: {e}") from None
    return ImageFiles(files=files, models=tuple(models), dotenv=dotenv,
                      warnings=tuple(outside_references(spec, files)))


def _strings(value, path: str, depth: int = 0):
    if depth > 20:
        return
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]", depth + 1)


def outside_references(spec: APISpec, files: dict[str, bytes]) -> list[str]:
    """predictor.config values naming an existing file or folder that the image will not carry.

    Locally a predictor can open `../shared/model.json` next to its project; in the image only
    the project (and the model folders) exist, so such a path fails at start-up in the cluster.
    """
    root = Path(spec.project_dir)
    field = "metadata" if spec.kind == "api" else "predictor.config"
    out = []
    for where, value in _strings(spec.predictor.config, field):
        if not value or "://" in value or "\n" in value or len(value) > 4096:
            continue
        target = Path(os.path.normpath(root / value))
        try:
            exists = target.exists()
        except OSError:
            continue
        carried = str(target) in files or any(k.startswith(str(target) + os.sep) for k in files)
        if exists and not carried:
            out.append(f"{where} = {value!r} names {target}, which the image does not carry (it is "
                       "outside the project, or excluded): move it into the project folder")
    return out
