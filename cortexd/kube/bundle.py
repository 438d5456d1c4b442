"""Reads what goes into an API's image from disk: project files, local models, `.env` (I/O).

The rules are cortexd/project_files.py's, which the daemon's watcher applies too
(Cortex's: dot files, *.pyc, cortex.yaml out; `.cortexignore` matched with
gitignore semantics through pathspec, as Cortex's CLI did; one that cannot be
read stops the build). Local model folders always go in, even inside an ignored
path, since the API cannot start without them; their sizes are reported.

No file is held in memory: each is hashed in chunks into a HostFile (path, size,
sha256), which names the image's tag; the build streams it into its context.
`.env` is read by the backends' own reader (cortexd/backends/isolation.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cortexd.errors import BackendError, ExportError
from cortexd.kube import layout
from cortexd.project_files import (
    CortexIgnoreUnreadable,
    HostFile,
    ProjectFilter,
    hash_file,
    project_filter,
)
from cortexd.spec.model import APISpec


@dataclass(frozen=True)
class ModelFolder:
    path: str  # host path
    in_image: str
    files: int
    size: int  # bytes


@dataclass(frozen=True)
class ImageFiles:
    files: dict[str, HostFile]  # host absolute path -> its size and digest (read from disk by the build)
    models: tuple[ModelFolder, ...]
    dotenv: dict[str, str]
    warnings: tuple[str, ...] = ()  # e.g. a config value naming a file the image does not carry

    @property
    def project_size(self) -> int:
        return sum(f.size for f in self.files.values())


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def image_filter(spec: APISpec) -> ProjectFilter:
    """The project-file rules of the API's project; ExportError for an unreadable .cortexignore."""
    root = Path(spec.project_dir)
    yaml = os.path.relpath(spec.source_file, root).replace(os.sep, "/")
    try:
        return project_filter(root, config_files=[yaml])
    except CortexIgnoreUnreadable as e:
        raise ExportError(f"api {spec.name!r}: {e}; fix it (or remove it) and build again") from None


def _walk(root: Path, keep) -> dict[str, HostFile]:
    """{host path: HostFile} of the files under root that `keep` accepts; symlinked folders are
    followed (a model folder linked into the project is part of it), each real folder once."""
    out: dict[str, HostFile] = {}
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
                out[str(path)] = hash_file(path)
            except OSError as e:
                raise ExportError(f"cannot read {path}: {e}") from None
    return out


def read_image_files(spec: APISpec) -> ImageFiles:
    """Everything of `spec` that its image carries; ExportError names what is missing."""
    from cortexd.backends.isolation import read_dotenv

    root = Path(spec.project_dir)
    rules = image_filter(spec)
    files = _walk(root, lambda rel, is_dir: not rules.excludes(rel, is_dir))
    mapping = layout.image_paths(spec)
    python_path = Path(spec.predictor.python_path)
    if str(python_path) in mapping and str(python_path) != str(root):
        base = ProjectFilter()  # a python_path outside the project: Cortex's base rules
        files.update(_walk(python_path, lambda rel, is_dir: not base.excludes(rel, is_dir)))

    models = []
    for model in layout.local_model_paths(spec):
        p = Path(model)
        if p.is_file():
            try:
                found = {str(p): hash_file(p)}
            except OSError as e:
                raise ExportError(f"api {spec.name!r}: cannot read the model file {p}: {e}") from None
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
                                  len(found), sum(f.size for f in found.values())))

    try:
        dotenv = read_dotenv(root, spec.name)
    except BackendError as e:
        raise ExportError(str(e)) from None
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


def outside_references(spec: APISpec, files: dict[str, HostFile]) -> list[str]:
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
