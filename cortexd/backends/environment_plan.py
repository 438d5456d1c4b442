"""What goes into one project's Python environment, read from its folder (the process backend).

make_plan() reads a project's requirements.txt (with its includes and local paths),
conda-packages.txt, dependencies.sh (when running it is opted in), pip.conf and the Cortex
0.23 pre-installed packages its code imports without listing them (core/preinstalled.py), and
returns an EnvironmentPlan: those inputs and the digest that keys the environment in the cache
(with the Python, cortexd and the runtime's installed packages: runtime_identity()).
environments.py builds and hands out the environment of a plan; environment_build.py runs the
installers. Blocking file reads; no process is started here.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cortexd import __version__
from cortexd.core.preinstalled import Addition, imported_modules, preinstalled_additions
from cortexd.core.requirements import (
    RequirementLine,
    RequirementTree,
    canonical,
    environment_digest,
    requirement_lines,
    requirement_names,
    requirement_tree,
)
from cortexd.project_files import local_requirement_files, project_reader
from cortexd.spec.model import APISpec

LAYOUT = "2"  # bump when the layout of an environment changes: old ones are not reused
MAX_SCANNED_FILES = 5000
MAX_SCANNED_BYTES = 2 * 2**20
SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages", "dist-packages"}
# pip.conf keys naming local files: relative to the project folder
_PATH_KEYS = ("cert", "client-cert", "find-links", "constraint", "requirement")


@dataclass(frozen=True)
class EnvironmentPlan:
    """Everything that goes into one project's environment (read from its folder)."""

    project_dir: str
    digest: str
    requirements: bytes | None  # requirements.txt
    lines: tuple[RequirementLine, ...]
    additions: tuple[Addition, ...]
    conda_packages: bytes | None
    dependencies_sh: bytes | None  # only when running it is opted in
    pip_env: dict[str, str] = field(default_factory=dict)  # the project pip.conf as PIP_* variables
    notices: tuple[str, ...] = ()
    # opt-in: a pin that cannot be installed on this Python is replaced by the nearest release that
    # can (environment_build.py); part of the digest, so relaxed and exact environments never mix
    nearest_pins: bool = False
    # the digest of the same inputs with the pins as written: what checking each line alone found
    # is the same for both (environments.py reuses it); "" when it is `digest`
    exact_digest: str = ""

    @property
    def checks_key(self) -> str:
        return self.exact_digest or self.digest

    @property
    def needed(self) -> bool:
        return bool(self.requirements and self.lines) or bool(self.additions) or \
            self.conda_packages is not None or self.dependencies_sh is not None


@dataclass(frozen=True)
class Environment:
    path: Path  # the environment's real folder
    python: str  # its interpreter
    changes: tuple[str, ...] = ()  # nearest pins installed instead of the project's, in words


# -- reading a project (blocking; run in a thread) ------------------------------------------


def python_sources(root: Path) -> dict[str, str]:
    """{relative path: text} of the project's .py files (no venvs, caches or hidden folders)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d not in SKIPPED_DIRS
            and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
        )
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            try:
                if os.path.getsize(path) > MAX_SCANNED_BYTES:
                    continue
                with open(path, encoding="utf-8", errors="replace") as f:
                    out[os.path.relpath(path, root)] = f.read()
            except OSError:
                continue
            if len(out) >= MAX_SCANNED_FILES:
                return out
    return out


def own_modules(relative_paths: list[str]) -> set[str]:
    """Top-level names a project defines: each .py file's name and each folder above one."""
    names: set[str] = set()
    for rel in relative_paths:
        parts = Path(rel).parts
        names.update(parts[:-1])
        names.add(Path(parts[-1]).stem)
    return names


def project_imports(spec: APISpec) -> tuple[dict[str, set[str]], set[str]]:
    """({project file: modules it imports}, the project's own top-level names) for the
    pre-installed scan; the python_path folder counts when it lies outside the project.
    Shared by both backends (images.py: the Docker requirements layer)."""
    project = Path(spec.project_dir)
    sources = python_sources(project)
    python_path = Path(spec.predictor.python_path)
    if python_path != project and python_path.is_dir() and project not in python_path.parents:
        sources.update({f"{python_path.name}/{k}": v for k, v in python_sources(python_path).items()})
        own = own_modules(list(python_sources(python_path))) | own_modules(list(sources))
    else:
        own = own_modules(list(sources))
    imports = {f: imported_modules(text) for f, text in sources.items()}
    if uses_s3(spec):  # the runtime reads s3:// models through boto3, whatever the code imports
        imports["cortex.yaml (s3:// model paths)"] = {"boto3"}
    return imports, own


def uses_s3(spec: APISpec) -> bool:
    """Whether any of the API's models is read from S3 (model_path, models.paths, models.dir)."""
    p = spec.predictor
    paths = [p.model_path, *(m.path for m in (p.models.paths if p.models else ())),
             p.models.dir if p.models else None]
    return any(path and path.startswith("s3://") for path in paths)


def runtime_has(module: str) -> bool:
    """Whether the runtime's environment (this interpreter's) provides a top-level module."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def runtime_site_dirs() -> list[str]:
    """The runtime's site-packages folders, in sys.path order."""
    return [p for p in dict.fromkeys(sys.path)
            if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p)]


def runtime_identity() -> str:
    """cortexd, the Python and every installed distribution of the runtime's environment."""
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                    if d.metadata and d.metadata["Name"]}, key=str.lower)
    return "\n".join([
        f"cortexd {__version__}", f"layout {LAYOUT}", sys.version, sys.implementation.cache_tag or "",
        platform.machine(), os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        *runtime_site_dirs(), *dists,
    ])


def runtime_pins(versions: bool = False) -> list[tuple[str, str]]:
    """(canonical name, "name==version", or the version alone) of the runtime's distributions
    that an index can serve (editable and local installs, cortexd's own among them, left out)."""
    out: dict[str, str] = {}
    for d in importlib.metadata.distributions():
        name = d.metadata["Name"] if d.metadata else None
        if not name or d.read_text("direct_url.json"):
            continue
        out.setdefault(canonical(name), d.version if versions else f"{name}=={d.version}")
    return sorted(out.items())


def uv_binary() -> str | None:
    """uv's executable: the `uv` wheel's (a dependency of cortexd), else one on PATH, else None."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def project_pip_env(path: Path) -> tuple[dict[str, str], str | None]:
    """A project pip.conf's [global] and [install] settings as PIP_* variables, or a problem."""
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(path.read_text())
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        return {}, f"{path} cannot be read as a pip configuration file ({e}); pip runs without it"
    env: dict[str, str] = {}
    for section in ("global", "install"):
        if not parser.has_section(section):
            continue
        for key, value in parser.items(section):
            values = value.split()
            if key in _PATH_KEYS:
                values = [v if "://" in v or os.path.isabs(v) else str(path.parent / v) for v in values]
            env["PIP_" + key.upper().replace("-", "_")] = " ".join(values)
    return env, None


def _included_files(text: str, project: Path) -> dict[str, bytes]:
    """Files a requirements.txt includes with -r / -c (their content is part of the digest)."""
    out = {}
    for line in requirement_lines(text):
        parts = line.text.split(None, 1)
        if len(parts) == 2 and parts[0] in ("-r", "--requirement", "-c", "--constraint"):
            p = project / parts[1]
            with contextlib.suppress(OSError):
                out[f"included:{parts[1]}"] = p.read_bytes()
    return out


def _requirement_tree(project: Path) -> RequirementTree:
    """requirements.txt and its -r / -c includes, recursively (an unreadable file counts as absent:
    pip, which reads it next, says why)."""
    read = project_reader(project)

    def tolerant(rel: str) -> bytes | None:
        try:
            return read(rel)
        except OSError:
            return None

    return requirement_tree(tolerant)


def _local_signatures(project: Path, local: Iterable[str]) -> dict[str, str]:
    """What identifies the local paths a project installs from (`./wheels/x.whl`, `-e ./pkg`): each
    file's size and mtime, so an edited local package builds a new environment (cheap: not read)."""
    out = {}
    for rel in local:
        try:
            found = local_requirement_files(project, rel) or {}
            out[f"local:{rel}"] = "\n".join(
                f"{name} {st.st_size} {st.st_mtime_ns}" for name, st in ((n, p.stat()) for n, p in found.items()))
        except OSError:
            out[f"local:{rel}"] = "unreadable"
    return out


def make_plan(spec: APISpec, runtime: str, run_dependencies_sh: bool = False) -> EnvironmentPlan:
    """What the project of `spec` needs (blocking: reads the project's files); `runtime`:
    runtime_identity(), computed once per daemon. An API deployed with nearest pins
    (spec.nearest_pins) gets the nearest release that installs here of each pin that does not."""
    project = Path(spec.project_dir)
    notices: list[str] = []
    req_path = project / "requirements.txt"
    requirements = req_path.read_bytes() if req_path.is_file() else None
    req_text = requirements.decode("utf-8", "replace") if requirements else ""
    lines = tuple(requirement_lines(req_text))
    tree = _requirement_tree(project)

    imports, own = project_imports(spec)
    additions = tuple(preinstalled_additions(
        imports, spec.predictor.type, requirement_names(tree.lines), runtime_has, own,
    ))
    notices.extend(a.notice for a in additions)

    conda_path = project / "conda-packages.txt"
    conda = conda_path.read_bytes() if conda_path.is_file() else None
    deps_path = project / "dependencies.sh"
    deps = None
    if deps_path.is_file():
        if run_dependencies_sh:
            deps = deps_path.read_bytes()
        else:
            notices.append(
                f"dependencies.sh ({deps_path}) is not run on the process backend: it would change "
                "this host (apt-get ...). Run it yourself, or opt in with `cortexd up "
                "--run-dependencies-sh` (CORTEXD_RUN_DEPENDENCIES_SH=1); the Docker backend runs it "
                "in the image"
            )
    pip_env: dict[str, str] = {}
    pip_conf = project / "pip.conf"
    pip_conf_bytes = b""
    if pip_conf.is_file():
        pip_env, problem = project_pip_env(pip_conf)
        if problem:
            notices.append(problem)
        else:
            pip_conf_bytes = pip_conf.read_bytes()
    parts: dict[str, bytes | str] = {
        "requirements.txt": requirements or b"",
        # one level of includes, wherever they are (pip reads ../common.txt on this host), then
        # every include inside the project to any depth (the tree the Docker layer copies too)
        **_included_files(req_text, project),
        **{f"tree:{name}": data for name, data in tree.files.items()},
        **_local_signatures(project, tree.local),
        "preinstalled": "\n".join(a.distribution for a in additions),
        "conda-packages.txt": conda or b"",
        "dependencies.sh": deps or b"",
        "pip.conf": pip_conf_bytes,
        "runtime": runtime,
    }
    exact = environment_digest(parts)
    if spec.nearest_pins:  # only then: the digests of exact environments stay what they were
        parts["pins"] = "nearest"
    return EnvironmentPlan(
        project_dir=str(project), digest=environment_digest(parts), exact_digest=exact, requirements=requirements,
        lines=lines, additions=additions, conda_packages=conda, dependencies_sh=deps,
        pip_env=pip_env, notices=tuple(notices), nearest_pins=spec.nearest_pins,
    )
