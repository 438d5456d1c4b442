"""Predictor images for the Docker backend: what to build (pure) and building it (docker-py).

Every API runs on one image per predictor family and compute variant
(`cortexd-python-cpu:<hash>`, `cortexd-onnx-gpu:<hash>`...) built from
docker/Dockerfile on a configurable base; a project's requirements.txt and
dependencies.sh, plus the Cortex 0.23 pre-installed packages its code imports that
neither its requirements nor the image provide (core/preinstalled.py, the same scan
as the process backend's), become one more image (`cortexd-python-cpu-deps:<hash>`)
on top. conda-packages.txt is refused there: the images have no conda.
Tags are content hashes of everything that goes into the build, so an image
that exists is up to date and is never rebuilt: ensure() checks the engine
(images.get) before building anything.

The host's pip settings (index URLs, trusted hosts, the CA bundle of a proxy)
are carried into the builds: pip_settings_for_build() turns `pip config list`
output and PIP_* variables into a pip.conf for the build context (pure, tested
in tests/unit/test_pip_settings.py); the cert bundle itself is copied in. A
project's pip.conf (Cortex's way to a private index) is layered over them for
its requirements layer, ranked as the process backend ranks it (as PIP_*
variables over the host's files); a find-links folder inside the project is
copied into the build.

Also a command: `python -m cortexd.backends.images make-offline-base [NAME]`
runs docker/make-offline-base.sh (a base image made from Debian packages, for
hosts that cannot pull python:3.11-slim).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortexd.core.preinstalled import Addition, preinstalled_additions
from cortexd.core.requirements import (
    PREINSTALLED_FILE,
    requirement_lines,
    requirement_names,
)
from cortexd.errors import BackendError, DependencyError
from cortexd.spec.model import APISpec

DEFAULT_BASE_IMAGE = "python:3.11-slim"
OFFLINE_BASE_IMAGE = "cortexd/base:bookworm"
BASE_IMAGE_ENV = "CORTEXD_BASE_IMAGE"

PIP_DIR_IN_IMAGE = "/etc/cortexd/pip"
CERT_IN_IMAGE = f"{PIP_DIR_IN_IMAGE}/cert.pem"
FIND_LINKS_IN_IMAGE = f"{PIP_DIR_IN_IMAGE}/find-links"
_TRUE = ("1", "true", "yes", "on")

# predictor type -> image family (legacy `kind: api` predictors are python modules)
FAMILIES = {"python": "python", "legacy": "python", "onnx": "onnx", "tensorflow": "tensorflow"}

Progress = Callable[[str], None]

# -- pip settings carry-over (pure) ---------------------------------------------------

# pip options worth carrying into a build, by their config-file name
_CARRIED = ("index-url", "extra-index-url", "trusted-host", "cert", "timeout", "retries", "proxy", "find-links")
_MULTI = ("extra-index-url", "trusted-host", "find-links")
_ALIASES = {"default-timeout": "timeout"}
# proxy variables are Docker's predefined build args: used by RUN steps, kept out of the image
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "FTP_PROXY", "ALL_PROXY")


@dataclass(frozen=True)
class PipSettings:
    """The host's pip settings, rewritten for use inside a build."""

    conf: str  # pip.conf text for the build (paths rewritten to in-image ones)
    cert_file: str | None = None  # host file to copy into the context as pip/cert.pem
    build_args: dict[str, str] = field(default_factory=dict)  # proxy variables
    notices: tuple[str, ...] = ()  # settings dropped or changed, said to the user
    # (host path, archive folder) of a project's find-links, copied into the context
    find_links: tuple[tuple[str, str], ...] = ()


def parse_pip_config_list(text: str) -> dict[str, dict[str, str]]:
    """`pip config list` output -> {section: {key: value}}; sections: global, install, :env: ..."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or "=" not in line:
            continue
        name, _, raw = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not dot:
            continue
        try:
            value = ast.literal_eval(raw)  # pip prints values with repr()
        except (ValueError, SyntaxError):
            value = raw.strip("'\"")
        out.setdefault(section, {})[_ALIASES.get(key, key)] = str(value)
    return out


def _env_settings(env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, value in env.items():
        if name.startswith("PIP_") and value:
            key = name[4:].lower().replace("_", "-")
            out[_ALIASES.get(key, key)] = value
    return out


def _is_loopback_url(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    return host in ("localhost", "127.0.0.1", "::1", "[::1]")


def merged_pip_settings(config_list: str, env: Mapping[str, str]) -> dict[str, str]:
    """pip's effective settings for `pip install` on this host ({option: value}, config-file
    names): [global] < [install] < PIP_* variables, as pip ranks them. Used for Docker builds
    (below) and to hand the same settings to uv on the process backend (environments.py)."""
    sections = parse_pip_config_list(config_list)
    merged: dict[str, str] = {}
    for section in ("global", "install", ":env:"):
        merged.update(sections.get(section, {}))
    merged.update(_env_settings(env))
    return merged


def pip_settings_for_build(
    config_list: str,
    env: Mapping[str, str],
    project: Mapping[str, str] | None = None,
    project_dir: str | None = None,
) -> PipSettings:
    """Turn the host's pip configuration into what a `docker build` needs.

    config_list: output of `pip config list`; env: the process environment.
    Precedence as in pip for `pip install`: [global] < [install] < PIP_* variables.
    project: a project pip.conf as PIP_* variables (environments.project_pip_env, paths
    made absolute), ranked above the host's as on the process backend.
    Local paths (file:// indexes, local find-links) do not exist inside the build:
    they are dropped with a notice, except find-links inside project_dir, which are
    copied into the context (a folder; a path ending in .html is one file). The
    cert bundle is copied and pointed to. no-index counts when the project sets it.
    """
    project = dict(project or {})
    merged = merged_pip_settings(config_list, {**env, **project})
    root = os.path.join(os.path.abspath(project_dir), "") if project_dir else None
    find_links: list[tuple[str, str]] = []

    def in_project(path: str) -> bool:
        return root is not None and os.path.join(os.path.abspath(path), "").startswith(root)

    notices: list[str] = []
    lines: list[str] = []
    cert_file = None
    for key in _CARRIED:
        value = merged.get(key)
        if not value:
            continue
        if key == "cert":
            cert_file = value
            lines.append(f"cert = {CERT_IN_IMAGE}")
            continue
        values = value.split() if key in _MULTI or key == "index-url" else [value]
        kept = []
        for v in values:
            local = v.startswith("file:") or (key == "find-links" and "://" not in v)
            path = v.removeprefix("file://") if v.startswith("file://") else v
            if key == "find-links" and local and in_project(path):
                folder = f"pip/find-links/{len(find_links)}"
                in_image = f"{FIND_LINKS_IN_IMAGE}/{len(find_links)}"
                if path.endswith((".html", ".htm")):
                    in_image += "/" + os.path.basename(path)
                find_links.append((path, folder))
                kept.append(in_image)
            elif local:
                notices.append(
                    f"pip {key} {v} is a path on this host that does not exist inside image "
                    "builds; builds do without it"
                )
            elif key in ("index-url", "extra-index-url", "proxy", "find-links") and _is_loopback_url(v):
                notices.append(
                    f"pip {key} {v} points at this host's loopback, which a build container "
                    "cannot reach; builds do without it"
                )
            else:
                kept.append(v)
        if not kept:
            if key == "index-url":
                notices.append("image builds use pip's default index (https://pypi.org/simple)")
            continue
        if key == "index-url":
            kept = kept[:1]
        lines.append(f"{key} = " + "\n    ".join(kept))
    if project.get("PIP_NO_INDEX", "").lower() in _TRUE:
        lines.append("no-index = true")  # the project's own choice (its find-links only)
    elif merged.get("no-index", "").lower() in _TRUE:
        notices.append("pip no-index is set on this host; image builds use an index anyway")

    build_args = {}
    for var in _PROXY_VARS:
        for name in (var, var.lower()):
            if env.get(name):
                build_args[name] = env[name]
                if var != "NO_PROXY" and _is_loopback_url(env[name]):
                    notices.append(
                        f"{name}={env[name]} points at this host's loopback, which a build "
                        "container cannot reach (use the host's address or run a proxy on the bridge)"
                    )
    conf = "[global]\n" + "".join(line + "\n" for line in lines)
    return PipSettings(conf=conf, cert_file=cert_file, build_args=build_args, notices=tuple(notices),
                       find_links=tuple(find_links))


def host_pip_config_list(env: Mapping[str, str]) -> str:
    """`pip config list` of this host ("" without pip: PIP_* variables still count)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, timeout=60, env=dict(env), check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def host_pip_settings(env: Mapping[str, str] | None = None) -> PipSettings:
    """pip_settings_for_build() of this host (runs `pip config list`)."""
    env = dict(os.environ if env is None else env)
    return pip_settings_for_build(host_pip_config_list(env), env)


# -- what to build (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    """One image: its tag, Dockerfile, build args and context files (archive path -> bytes)."""

    tag: str
    dockerfile: str  # archive path of the Dockerfile inside the context
    buildargs: dict[str, str]
    files: dict[str, bytes]
    description: str  # for progress and errors, e.g. "python cpu image on python:3.11-slim"


def content_hash(files: Mapping[str, bytes], extra: Iterable[str] = ()) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    for item in extra:
        h.update(b"\1" + item.encode())
    return h.hexdigest()[:16]


def variant_of(spec: APISpec) -> tuple[str, str]:
    """(family, compute) of the image an API runs on: ("onnx", "gpu")..."""
    return FAMILIES[spec.predictor.type], ("gpu" if spec.compute.gpu > 0 else "cpu")


def pip_context_files(pip: PipSettings, cert: bytes | None) -> dict[str, bytes]:
    conf = pip.conf
    files = {"pip/pip.conf": conf.encode()}
    if cert is not None:
        files["pip/cert.pem"] = cert
    else:
        # the cert could not be read on the host: drop the line rather than point at nothing
        files["pip/pip.conf"] = "".join(
            line + "\n" for line in conf.splitlines() if not line.startswith("cert =")
        ).encode()
    return files


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
    files = {
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
    project_files: Mapping[str, bytes],
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
    what = sorted(project_files) + ([f"pre-installed: {', '.join(added)}"] if added else [])
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


def tar_context(files: Mapping[str, bytes]) -> io.BytesIO:
    """A build context archive; files world-readable so the image's non-root user reads them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            info.mtime = 0  # reproducible context
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


# -- reading inputs (I/O) --------------------------------------------------------------------


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


def project_dependency_files(project_dir: str) -> dict[str, bytes]:
    out = {}
    for name in ("requirements.txt", "dependencies.sh"):
        p = Path(project_dir) / name
        try:
            if p.is_file():
                out[name] = p.read_bytes()
        except OSError as e:
            raise DependencyError(f"cannot read {p}: {e.strerror or e}", deterministic=True) from None
    return out


def find_links_files(settings: PipSettings) -> dict[str, bytes]:
    """The files of a project's find-links (a folder's files, not its subfolders; or one file)."""
    out = {}
    for host_path, folder in settings.find_links:
        p = Path(host_path)
        try:
            if p.is_dir():
                for f in sorted(p.iterdir()):
                    if f.is_file():
                        out[f"{folder}/{f.name}"] = f.read_bytes()
            elif p.is_file():
                out[f"{folder}/{p.name}"] = p.read_bytes()
        except OSError as e:
            raise DependencyError(f"cannot read pip find-links {host_path}: {e.strerror or e}",
                                  deterministic=True) from None
    return out


# a replica image's python says which of these modules it can import (nothing is imported)
_PROBE = "import importlib.util as u, json, sys; print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"


# -- building (docker-py) ------------------------------------------------------------------


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


class ImageBuilder:
    """Builds and checks predictor images; blocking (the backend runs it in a thread).

    client: a docker.DockerClient. progress: called with each line of build
    output (from the building thread; the backend hands it over to the loop).
    notify(message, api): notices about an API's dependencies (a pre-installed
    package added...), as the process backend's environments give them; without
    it they go to progress as `notice: ...` lines. pip / pip_config_list: the host's
    pip settings, or `pip config list` output (else asked from pip once).
    """

    def __init__(
        self,
        client: Any,
        base_image: str | None = None,
        progress: Progress | None = None,
        pip: PipSettings | None = None,
        notify: Callable[[str, str], None] | None = None,
        pip_config_list: str | None = None,
    ):
        self._client = client
        self._explicit_base = base_image or os.environ.get(BASE_IMAGE_ENV) or None
        self._base: str | None = None
        self._progress = progress or (lambda line: None)
        self._notify = notify or (lambda message, api: self._say(f"notice: {message} (api {api!r})"))
        self._noticed: set[tuple[str, str, str]] = set()
        self._pip = pip
        self._pip_config = pip_config_list  # the host's `pip config list`, read once
        self._pip_files: dict[str, bytes] | None = None
        self._modules: dict[tuple[str, str], bool] = {}  # (image, module) -> the image has it
        self._present: set[str] = set()  # tags seen in the engine during this run
        self._checked_custom: set[str] = set()
        self._inputs_lock = threading.Lock()  # builds of different images run in parallel threads

    # -- inputs ---------------------------------------------------------------
    def _say(self, line: str) -> None:
        self._progress(line)

    def pip_files(self) -> tuple[dict[str, bytes], dict[str, str]]:
        with self._inputs_lock:
            return self._pip_files_locked()

    def _pip_files_locked(self) -> tuple[dict[str, bytes], dict[str, str]]:
        if self._pip is None:
            self._pip = pip_settings_for_build(self._host_pip_config_locked(), os.environ)
        if self._pip_files is None:
            for notice in self._pip.notices:
                self._say(f"notice: {notice}")
            cert = None
            if self._pip.cert_file:
                try:
                    cert = Path(self._pip.cert_file).read_bytes()
                except OSError as e:
                    self._say(f"notice: pip cert {self._pip.cert_file} cannot be read ({e}); builds do without it")
            self._pip_files = pip_context_files(self._pip, cert)
        return self._pip_files, dict(self._pip.build_args)

    def _host_pip_config_locked(self) -> str:
        if self._pip_config is None:
            self._pip_config = host_pip_config_list(os.environ)
        return self._pip_config

    def project_pip_files(self, spec: APISpec) -> tuple[dict[str, bytes], dict[str, str]]:
        """The pip settings of a project's requirements layer: the host's, with the project
        pip.conf (if any) over them, read as the process backend reads it."""
        # imported here: environments imports this module
        from cortexd.backends.environments import project_pip_env

        host = self.pip_files()  # also says the host's own notices, once
        conf = Path(spec.project_dir) / "pip.conf"
        if not conf.is_file():
            return host
        project_env, problem = project_pip_env(conf)
        if problem:
            self._notice(spec, problem)
            return host
        with self._inputs_lock:
            config_list = self._host_pip_config_locked()
        settings = pip_settings_for_build(config_list, os.environ, project_env, spec.project_dir)
        host_notices = set(self._pip.notices if self._pip is not None else ())
        for notice in settings.notices:
            if notice not in host_notices:
                self._notice(spec, f"{conf}: {notice}")
        cert = None
        if settings.cert_file:
            try:
                cert = Path(settings.cert_file).read_bytes()
            except OSError as e:
                self._notice(spec, f"pip cert {settings.cert_file} cannot be read ({e}); the build does without it")
        files = {**pip_context_files(settings, cert), **find_links_files(settings)}
        return files, dict(settings.build_args)

    def _notice(self, spec: APISpec, message: str) -> None:
        key = (spec.project_dir, spec.name, message)
        if key not in self._noticed:  # once per API and daemon, as on the process backend
            self._noticed.add(key)
            self._notify(message, spec.name)

    def preinstalled(self, spec: APISpec, image: str, requirements: bytes | None) -> list[Addition]:
        """Cortex 0.23's pre-installed packages that the project imports and that neither its
        requirements nor `image` provide (the image is asked once per module it may lack)."""
        # imported here: environments imports this module
        from cortexd.backends.environments import project_imports

        imports, own = project_imports(spec)
        names = requirement_names(requirement_lines((requirements or b"").decode("utf-8", "replace")))
        candidates = preinstalled_additions(imports, spec.predictor.type, names, lambda m: False, own)
        if not candidates:
            return []
        present = self._image_modules(image, sorted({a.import_name for a in candidates}))
        return preinstalled_additions(imports, spec.predictor.type, names, present.__contains__, own)

    def _image_modules(self, image: str, modules: list[str]) -> set[str]:
        """Which of `modules` the image's python finds (one short container, none per cached answer)."""
        import docker.errors

        unknown = [m for m in modules if (image, m) not in self._modules]
        if unknown:
            found: list[str] | None = None
            try:
                container = self._client.containers.create(
                    image, entrypoint=["python", "-c", _PROBE, *unknown],
                    network_disabled=True, user="10001:10001",
                )
                try:
                    container.start()
                    if container.wait(timeout=120).get("StatusCode", 1) == 0:
                        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
                        found = json.loads(out.strip().splitlines()[-1])
                finally:
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(force=True)
            except (docker.errors.APIError, ValueError, IndexError) as e:
                self._say(f"notice: could not ask {image} which packages it has ({e}); "
                          "the pre-installed packages its project imports are added")
            if found is not None:  # unanswered: ask again next time, add them meanwhile
                for m in unknown:
                    self._modules[(image, m)] = m in found
            else:
                return {m for m in modules if self._modules.get((image, m))}
        return {m for m in modules if self._modules[(image, m)]}

    def plan_deps(self, spec: APISpec, image: str) -> BuildPlan | None:
        """The requirements layer of `spec`'s project on `image` (None: the project needs none)."""
        if (Path(spec.project_dir) / "conda-packages.txt").is_file():
            raise conda_refusal(spec.project_dir)
        project = project_dependency_files(spec.project_dir)
        additions = self.preinstalled(spec, image, project.get("requirements.txt"))
        for a in additions:
            self._notice(spec, a.notice)
        if not project and not additions:
            return None
        pip_files, pip_args = self.project_pip_files(spec)
        return deps_plan(
            image, deps_repository(image), (docker_dir() / "Dockerfile.deps").read_bytes(),
            project, pip_files, pip_args, additions,
        )

    def base_image(self) -> str:
        """The base: explicit (argument / CORTEXD_BASE_IMAGE), else python:3.11-slim, else offline.

        Without an explicit choice, a host that lacks python:3.11-slim but has the
        offline base uses the latter instead of trying a registry it may not reach.
        """
        with self._inputs_lock:
            return self._base_image_locked()

    def _base_image_locked(self) -> str:
        if self._base is not None:
            return self._base
        if self._explicit_base:
            self._base = self._explicit_base
        elif not self._has_image(DEFAULT_BASE_IMAGE) and self._has_image(OFFLINE_BASE_IMAGE):
            self._say(f"notice: {DEFAULT_BASE_IMAGE} is not present; building on the offline base {OFFLINE_BASE_IMAGE}")
            self._base = OFFLINE_BASE_IMAGE
        else:
            self._base = DEFAULT_BASE_IMAGE
        return self._base

    def _has_image(self, name: str) -> bool:
        import docker.errors

        if name in self._present:
            return True
        try:
            self._client.images.get(name)
        except docker.errors.ImageNotFound:
            return False
        self._present.add(name)
        return True

    # -- plans ----------------------------------------------------------------
    def plan_runtime(self, family: str, compute: str) -> BuildPlan:
        d = docker_dir()
        reqs = {p.name: p.read_bytes() for p in (d / "requirements").glob("*.txt")}
        pip_files, pip_args = self.pip_files()
        return runtime_plan(
            family, compute, self.base_image(), (d / "Dockerfile").read_bytes(),
            reqs, runtime_files(), pip_files, pip_args,
        )

    # -- the entry point ----------------------------------------------------------
    def ensure(self, spec: APISpec) -> str:
        """The image a replica of `spec` runs on, built if missing. Returns its tag."""
        if spec.predictor.image:
            image = spec.predictor.image
            self._ensure_custom(spec.name, image)
        else:
            family, compute = variant_of(spec)
            image = self._ensure_plan(self.plan_runtime(family, compute), spec.name)
        plan = self.plan_deps(spec, image)
        return image if plan is None else self._ensure_plan(plan, spec.name)

    def build(self, plan: BuildPlan, api: str) -> str:
        """Build `plan` even if its tag exists (`cortexd build`'s last layer: the engine's layer
        cache makes an unchanged one instant, and a changed base is picked up). Returns the tag."""
        self._build(plan, api)
        self._present.add(plan.tag)
        return plan.tag

    def _ensure_plan(self, plan: BuildPlan, api: str) -> str:
        if self._has_image(plan.tag):
            return plan.tag
        if plan.buildargs.get("BASE_IMAGE"):
            self._ensure_base(plan.buildargs["BASE_IMAGE"])
        self._build(plan, api)
        self._present.add(plan.tag)
        return plan.tag

    def _ensure_base(self, base: str) -> None:
        import docker.errors

        if self._has_image(base):
            return
        self._say(f"pulling base image {base} ...")
        try:
            self._client.images.pull(base)
        except docker.errors.APIError as e:
            raise BackendError(
                f"the base image {base} is not on this host and could not be pulled "
                f"({e.explanation or e}). On a host without registry access, make the offline base "
                f"with `docker/make-offline-base.sh` (or `python -m cortexd.backends.images "
                f"make-offline-base`) and set {BASE_IMAGE_ENV}={OFFLINE_BASE_IMAGE}."
            ) from None
        self._present.add(base)

    def _build(self, plan: BuildPlan, api: str) -> None:
        self._say(f"building {plan.tag} ({plan.description}) for api {api!r} ...")
        log: deque[str] = deque(maxlen=200)
        image_id = None
        stream = self._client.api.build(
            fileobj=tar_context(plan.files), custom_context=True, dockerfile=plan.dockerfile,
            tag=plan.tag, buildargs=plan.buildargs, rm=True, forcerm=True, decode=True,
            labels={"cortexd.managed": "true"},
        )
        error = None
        # read the stream to its end even after an error: that returns the connection to
        # docker-py's pool instead of leaking its socket
        for chunk in stream:
            text = chunk.get("stream")
            if text:
                for line in text.splitlines():
                    log.append(line)
                    if line.strip():
                        self._say(f"[{plan.tag}] {line}")
            if "error" in chunk and error is None:
                error = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = aux["ID"]
        if error is not None:
            raise BackendError(build_failure(plan, api, list(log), error))
        self._say(f"built {plan.tag}" + (f" ({image_id[:19]})" if image_id else ""))

    def _ensure_custom(self, api: str, image: str) -> None:
        """A user's predictor.image must carry predictor_runtime: check by importing it once."""
        import docker.errors

        if image in self._checked_custom:
            return
        self._ensure_base(image)  # present, or pulled
        try:
            # create/start/wait rather than containers.run, which leaks its attach socket on failure
            container = self._client.containers.create(
                image, entrypoint=["python", "-c", "import predictor_runtime"],
                network_disabled=True, user="10001:10001",
            )
        except docker.errors.APIError as e:
            raise BackendError(
                f"api {api!r}: predictor.image {image} cannot run cortexd's predictor runtime "
                f"(`python -c 'import predictor_runtime'`: {e.explanation or e}). It needs `python` "
                "on PATH with the predictor_runtime package importable."
            ) from None
        try:
            try:
                container.start()
                code = container.wait(timeout=120).get("StatusCode", 1)
                err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
            except docker.errors.APIError as e:
                code, err = 1, str(e.explanation or e)
        finally:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass
        if code != 0:
            raise BackendError(
                f"api {api!r}: predictor.image {image} does not carry cortexd's predictor runtime "
                f"(`python -c 'import predictor_runtime'` failed: {last_lines(err.splitlines(), 3)}). "
                "Build it FROM a cortexd predictor image (docker images 'cortexd-*'), or install "
                "cortexd into it so that `python -m predictor_runtime` runs."
            )
        self._checked_custom.add(image)


def main(argv: list[str] | None = None) -> int:
    """`python -m cortexd.backends.images make-offline-base [NAME]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cortexd.backends.images")
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-offline-base", help="make a base image from Debian packages (debootstrap)")
    mk.add_argument("name", nargs="?", default=OFFLINE_BASE_IMAGE)
    args = parser.parse_args(argv)
    try:
        script = docker_dir() / "make-offline-base.sh"
    except BackendError as e:
        print(e, file=sys.stderr)
        return 1
    return subprocess.call(["bash", str(script), args.name])


if __name__ == "__main__":
    sys.exit(main())
