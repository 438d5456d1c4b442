"""What to build for an API's image: build plans (pure) and the files that go into them.

A BuildPlan is one image: tag, Dockerfile, build args and the context's files.
runtime_plan() is the predictor image of a family and compute variant
(`cortexd-python-cpu:<hash>`...) on a base; deps_plan() is the layer of a
project's requirements.txt / dependencies.sh and the Cortex pre-installed
packages added for it (`cortexd-python-cpu-deps:<hash>`). Tags are content
hashes of everything that goes in, so an image that exists is up to date.
The readers below collect those files (the shipped docker/ folder, the
predictor_runtime package, the project's dependency files); build_failure()
words a failed build. images.py (ImageBuilder) builds the plans.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cortexd.core.preinstalled import Addition
from cortexd.core.requirements import PREINSTALLED_FILE, RequirementTree, requirement_tree
from cortexd.errors import BackendError, DependencyError
from cortexd.project_files import HostFile, hash_file, image_mode, local_requirement_files, project_reader
from cortexd.spec.model import APISpec

# predictor type -> image family (legacy `kind: api` predictors are python modules)
FAMILIES = {"python": "python", "legacy": "python", "onnx": "onnx", "tensorflow": "tensorflow"}


@dataclass(frozen=True)
class BuildPlan:
    """One image: its tag, Dockerfile, build args and context files (archive path -> bytes, or a
    HostFile streamed from disk)."""

    tag: str
    dockerfile: str  # archive path of the Dockerfile inside the context
    buildargs: dict[str, str]
    files: dict[str, bytes | HostFile]
    description: str  # for progress and errors, e.g. "python cpu image on python:3.11-slim"


def content_hash(files: Mapping[str, bytes | HostFile], extra: Iterable[str] = ()) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        entry = files[name]
        digest = bytes.fromhex(entry.sha256) if isinstance(entry, HostFile) else hashlib.sha256(entry).digest()
        h.update(name.encode() + b"\0" + digest)
    for item in extra:
        h.update(b"\1" + item.encode())
    return h.hexdigest()[:16]


def variant_of(spec: APISpec) -> tuple[str, str]:
    """(family, compute) of the image an API runs on: ("onnx", "gpu")..."""
    return FAMILIES[spec.predictor.type], ("gpu" if spec.replica_gpus > 0 else "cpu")


def runtime_plan(
    family: str,
    compute: str,
    base_image: str,
    dockerfile: bytes,
    requirements: Mapping[str, bytes],
    runtime_files: Mapping[str, bytes],
    pip_files: Mapping[str, bytes],
    pip_build_args: Mapping[str, str],
) -> BuildPlan:
    """The predictor image of a family/variant: tag = hash of everything that goes in."""
    flavour = f"{family}-{compute}.txt"
    files: dict[str, bytes | HostFile] = {
        "Dockerfile": dockerfile,
        "requirements/runtime.txt": requirements["runtime.txt"],
        f"requirements/{flavour}": requirements[flavour],
        **{f"predictor_runtime/{k}": v for k, v in runtime_files.items()},
        **pip_files,
    }
    args = {"BASE_IMAGE": base_image, "PREDICTOR_TYPE": family, "COMPUTE": compute}
    digest = content_hash(files, [f"{k}={v}" for k, v in sorted(args.items())])
    return BuildPlan(
        tag=f"cortexd-{family}-{compute}:{digest}",
        dockerfile="Dockerfile",
        buildargs={**args, **pip_build_args},
        files=files,
        description=f"{family} {compute} predictor image on {base_image}",
    )


def deps_plan(
    image: str,
    repository: str,
    dockerfile: bytes,
    project_files: Mapping[str, bytes | HostFile],
    pip_files: Mapping[str, bytes],
    pip_build_args: Mapping[str, str],
    additions: Iterable[Addition] = (),
) -> BuildPlan | None:
    """The layer of a project's requirements.txt / dependencies.sh and the pre-installed
    packages added for it (deps/cortex-preinstalled.txt) on `image`; None if nothing.

    The tag is the hash of every file that goes in, the added list and the pip settings
    (the host's and the project pip.conf's) among them: an unchanged project finds its
    layer built; a project that adds nothing keeps the tag it had before additions existed.
    """
    deps = {f"deps/{k}": v for k, v in project_files.items()}
    added = sorted({a.distribution for a in additions}, key=str.lower)
    if added:
        deps[f"deps/{PREINSTALLED_FILE}"] = "".join(f"{d}\n" for d in added).encode()
    if not deps:
        return None
    files = {"Dockerfile": dockerfile, **deps, **pip_files}
    args = {"RUNTIME_IMAGE": image}
    digest = content_hash(files, [f"RUNTIME_IMAGE={image}"])
    named = sorted(n for n in project_files if n in ("requirements.txt", "dependencies.sh"))
    others = len(project_files) - len(named)
    what = named + ([f"{others} file{'s' if others > 1 else ''} they bring in"] if others else [])
    what += [f"pre-installed: {', '.join(added)}"] if added else []
    return BuildPlan(
        tag=f"{repository}-deps:{digest}",
        dockerfile="Dockerfile",
        buildargs={**args, **pip_build_args},
        files=files,
        description=f"dependencies ({', '.join(what)}) on {image}",
    )


def conda_refusal(project_dir: str) -> DependencyError:
    """conda-packages.txt on the Docker backend: the images have no conda."""
    path = os.path.join(project_dir, "conda-packages.txt")
    return DependencyError(
        f"{path} lists conda packages, but cortexd's Docker images have no conda (Cortex's did): "
        "move the packages to requirements.txt (most are on PyPI), install them in dependencies.sh, "
        "or serve on the process backend (`--backend process`), which installs them when conda or "
        "micromamba is on PATH",
        deterministic=True,
    )


def deps_repository(image: str) -> str:
    """`cortexd-python-cpu:abc` -> `cortexd-python-cpu`; a custom image -> a cortexd name for it."""
    name = image.rsplit("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.rsplit(":", 1)[0]
    if name.startswith("cortexd-"):
        return name
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower())
    return f"cortexd-custom-{safe.strip('-_.')}"


def write_context(files: Mapping[str, bytes | HostFile], out: BinaryIO) -> None:
    """A build context archive written to `out`; files world-readable so the image's non-root
    user reads them, but a HostFile that carries its host mode keeps it (image_mode()), and one
    that is a link stays a link. A HostFile is copied from disk in chunks (cortexd build's
    project and models)."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in sorted(files):
            entry = files[name]
            info = tarfile.TarInfo(name)
            if isinstance(entry, HostFile) and entry.mode is not None:
                info.mode = image_mode(entry.mode)
            else:
                info.mode = 0o755 if name.endswith(".sh") else 0o644
            info.mtime = 0  # reproducible context
            if isinstance(entry, HostFile) and entry.link is not None:  # a link stays a link (COPY keeps it)
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.link, 0o777
                tar.addfile(info)
                continue
            if not isinstance(entry, HostFile):
                info.size = len(entry)
                tar.addfile(info, io.BytesIO(entry))
                continue
            info.size = entry.size
            try:
                with open(entry.path, "rb") as f:
                    tar.addfile(info, f)
            except OSError as e:  # tarfile's own "unexpected end of data" is an OSError too
                raise BackendError(f"cannot put {entry.path} into the build context: {e} (did it change "
                                   "during the build? build again once it is written)") from None


def tar_context(files: Mapping[str, bytes | HostFile]) -> BinaryIO:
    """The build context: in memory when every file is given as bytes (the runtime images'
    small contexts), else in a temporary file on disk, so a project's models never sit in
    memory. The caller closes it."""
    in_memory = all(not isinstance(v, HostFile) for v in files.values())
    buf: BinaryIO = io.BytesIO() if in_memory else tempfile.TemporaryFile()  # noqa: SIM115
    try:
        write_context(files, buf)
    except BaseException:
        buf.close()
        raise
    buf.seek(0)
    return buf


def docker_dir() -> Path:
    """Where the Dockerfiles are: a packaged copy (cortexd/docker) or the source tree's docker/."""
    here = Path(__file__).resolve().parent.parent  # the cortexd package
    # the source tree's first: the packaged copy is refreshed only by `pip install`, so in an
    # editable install it can lag behind docker/ (a stale requirements list builds a broken image)
    for candidate in (here.parent / "docker", here / "docker"):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise BackendError(
        f"cortexd's Dockerfiles are missing (looked in {here / 'docker'} and {here.parent / 'docker'}); "
        "reinstall cortexd"
    )


def runtime_files() -> dict[str, bytes]:
    """predictor_runtime's source files, found through the installed package."""
    import predictor_runtime

    root = Path(predictor_runtime.__file__).resolve().parent
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def runtime_release() -> str:
    """12 hex digits naming this cortexd's predictor images: the runtime's source files and the
    Dockerfiles and requirement lists they are built with. `cortexd build` stamps it on an API's
    image (a label its tag covers), so a cortexd with another runtime never reuses an image tag."""
    d = docker_dir()
    files = {f"predictor_runtime/{k}": v for k, v in runtime_files().items()}
    for path in sorted([*d.glob("Dockerfile*"), *(d / "requirements").glob("*.txt")]):
        files[path.relative_to(d).as_posix()] = path.read_bytes()
    return content_hash(files)[:12]


def project_dependency_files(project_dir: str) -> tuple[dict[str, bytes | HostFile], RequirementTree]:
    """The project's files the requirements layer needs, project-relative: dependencies.sh,
    requirements.txt, the files it includes (-r / -c) and the local paths it installs from
    (`./wheels/x.whl`, `-e ./pkg`), at their places under deps/ (pip runs there, as in the
    project folder); and the requirement tree (its names: what the pre-installed scan skips).

    Raises DependencyError for what the build cannot see (an include or a path outside the
    project, a missing include) or a file it cannot read, saying where it is named."""
    root = Path(project_dir)
    try:
        tree = requirement_tree(project_reader(root))
        if tree.problems:
            raise DependencyError("; ".join(tree.problems), deterministic=True)
        out: dict[str, bytes | HostFile] = dict(tree.files)
        for rel in tree.local:
            found = local_requirement_files(root, rel)
            if found is None:
                raise DependencyError(f"requirements.txt installs from {rel or '.'}, which is not in the project "
                                      f"folder {root}", deterministic=True)
            for name, path in found.items():
                out.setdefault(name, hash_file(path))
        deps_sh = root / "dependencies.sh"
        if deps_sh.is_file():
            out["dependencies.sh"] = deps_sh.read_bytes()
    except OSError as e:
        raise DependencyError(f"cannot read {e.filename or root}: {e.strerror or e}", deterministic=True) from None
    return out, tree


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def last_lines(lines: Iterable[str], n: int = 25) -> str:
    clean = (_ANSI.sub("", line).rstrip() for line in lines)
    return "\n".join(deque((line for line in clean if line.strip()), maxlen=n))


def build_failure(plan: BuildPlan, api: str, log: list[str], error: str) -> str:
    """The message of a failed build: which image, which step, and that step's output (pure)."""
    starts = [i for i, line in enumerate(log) if line.startswith("Step ")]
    step_output = log[starts[-1]:] if starts else log
    step = step_output[0] if starts else None
    head = f"building the image of api {api!r} failed ({plan.description}, {plan.tag})"
    if step:
        head += f" at {step if len(step) <= 100 else step[:97] + '...'}"
    body = last_lines(step_output[1:] if starts else step_output)
    error = _ANSI.sub("", error).strip()
    if len(error) > 300:
        error = error[:297] + "..."
    return f"{head}\n{body}\n{error}" if body else f"{head}\n{error}"
