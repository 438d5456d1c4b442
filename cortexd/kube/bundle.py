"""Reads what goes into an API's image from disk: project files, local models, `.env` (I/O).

The rules are cortexd/project_files.py's, which the daemon's watcher applies too
(Cortex's: dot files, *.pyc, cortex.yaml out; `.cortexignore` matched with
gitignore semantics through pathspec, as Cortex's CLI did; one that cannot be
read stops the build). Local model folders always go in, even inside an ignored
path, since the API cannot start without them; their sizes are reported.

No file is held in memory: each is hashed in chunks into a HostFile (path, size,
sha256, host mode), which names the image's tag; the build streams it into its
context, keeping its mode (project_files.image_mode: a 0600 file is not made
world-readable, a script stays executable).

Symbolic links are followed only where they stay inside the folder being packed
(the project, a model folder, a python_path outside the project), as `docker
build` never leaves its context: a link out of it is refused with its name
rather than packing whatever it points at (another project's `.env`) into an
image that is about to be pushed. A model folder cortex.yaml names may itself be
a link: the user named it.
`.env` is read by the backends' own reader (cortexd/backends/isolation.py).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass, replace
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


def image_filter(spec: APISpec) -> ProjectFilter:
    """The project-file rules of the API's project; ExportError for an unreadable .cortexignore."""
    root = Path(spec.project_dir)
    yaml = os.path.relpath(spec.source_file, root).replace(os.sep, "/")
    try:
        return project_filter(root, config_files=[yaml])
    except CortexIgnoreUnreadable as e:
        raise ExportError(f"api {spec.name!r}: {e}; fix it (or remove it) and build again") from None


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _kept_link(link: Path, root: Path, real_root: str, keep, is_dir: bool) -> str:
    """The target of `link`, a symbolic link under root, relative to its own folder: the image
    keeps it as a link (as `docker build` COPYs links). A link whose target lies outside root is
    refused with its name (ExportError): `docker build` never leaves its context, and following it
    would pack another project's files into an image about to be pushed; so is one whose target
    the rules leave out (`config.txt -> .env`), which would dangle in the image."""
    target = os.path.realpath(link)
    where = str(root) if real_root == str(root) else f"{root} (that is {real_root})"
    if not _inside(target, real_root):
        raise ExportError(
            f"{link} is a symbolic link to {target}, outside {where}; `cortexd build` does not follow "
            "links out of the folder it packs, as `docker build` does not leave its context (it could "
            "put another project's files in an image that is pushed): copy what it points at into "
            "the folder, or leave the link out with .cortexignore")
    rel = os.path.relpath(target, real_root).replace(os.sep, "/")
    if rel != "." and not keep(rel + ("/" if is_dir else ""), is_dir):
        raise ExportError(
            f"{link} is a symbolic link to {target}, which the image leaves out (a dot file such as "
            ".env, bytecode, or a .cortexignore pattern): remove the link, or leave it out with "
            ".cortexignore")
    return os.path.relpath(rel, os.path.relpath(link.parent, root)).replace(os.sep, "/")


def _walk(root: Path, keep, named: Collection[str] = ()) -> dict[str, HostFile]:
    """{host path: HostFile} of the files under root that `keep` accepts, each with its host mode
    (the image keeps it: project_files.image_mode). A symbolic link inside root stays a link
    (_kept_link; one out of root is refused); a dangling one is skipped. `named`: paths cortex.yaml
    names (model folders, which may be links), walked on their own."""
    out: dict[str, HostFile] = {}
    real_root = os.path.realpath(root)

    def link(path: Path, is_dir: bool) -> None:
        if any(_inside(str(path), n) for n in named) or not os.path.exists(path):
            return
        target = _kept_link(path, root, real_root, keep, is_dir)
        out[str(path)] = HostFile(str(path), 0, hashlib.sha256(target.encode()).hexdigest(), link=target)

    for dirpath, dirnames, filenames in os.walk(root):  # links to folders are not entered: kept
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        kept = sorted(d for d in dirnames if keep(rel_dir + d + "/", True))
        dirnames[:] = [d for d in kept if not os.path.islink(os.path.join(dirpath, d))]
        for d in kept:
            if d not in dirnames:
                link(Path(dirpath) / d, True)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not keep(rel_dir + name, False):
                continue
            if path.is_symlink():
                link(path, path.is_dir())
                continue
            if not path.is_file():
                continue
            try:
                found = hash_file(path)
                out[str(path)] = replace(found, mode=stat.S_IMODE(os.stat(path).st_mode))
            except OSError as e:
                raise ExportError(f"cannot read {path}: {e}") from None
    return out


def read_image_files(spec: APISpec) -> ImageFiles:
    """Everything of `spec` that its image carries; ExportError names what is missing."""
    from cortexd.backends.isolation import read_dotenv

    root = Path(spec.project_dir)
    rules = image_filter(spec)
    models_named = layout.local_model_paths(spec)
    files = _walk(root, lambda rel, is_dir: not rules.excludes(rel, is_dir), named=models_named)
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
                found = {str(p): replace(hash_file(p), mode=stat.S_IMODE(p.stat().st_mode))}
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
        models.append(ModelFolder(model, layout.to_image_path(model, mapping),
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
    real_files: set[str] | None = None  # where what the image carries really is (links kept as links)
    for where, value in _strings(spec.predictor.config, field):
        if not value or "://" in value or "\n" in value or len(value) > 4096:
            continue
        target = Path(os.path.normpath(root / value))
        try:
            exists = target.exists()
        except OSError:
            continue
        carried = str(target) in files or any(k.startswith(str(target) + os.sep) for k in files)
        if exists and not carried:  # through a link the image keeps (labels/x.txt, labels -> data)?
            if real_files is None:
                real_files = {os.path.realpath(k) for k, f in files.items() if f.link is None}
            real = os.path.realpath(target)
            carried = real in real_files or any(k.startswith(real + os.sep) for k in real_files)
        if exists and not carried:
            out.append(f"{where} = {value!r} names {target}, which the image does not carry (it is "
                       "outside the project, or excluded): move it into the project folder")
    return out
