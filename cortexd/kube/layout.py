"""Where an API's files live inside its self-contained image, and what the image is called (pure).

`cortexd build` and `cortexd export kubernetes` both read these, so the
manifests name exactly the image the build makes. Layout inside the image:

    /opt/cortexd/project/        the project folder (Cortex's rules: no dot files, no
                                 *.pyc/__pycache__, no cortex.yaml, .cortexignore honoured)
    /opt/cortexd/models/N-NAME/  a local model folder that lies outside the project
    /opt/cortexd/paths/N-NAME/   a python_path outside the project
    /etc/cortexd/spec.json       the API's runtime spec, paths rewritten to the above
    /mnt/project                 a link to /opt/cortexd/project: Cortex put the project at
                                 /mnt/project, and Cortex-era predictors open files there

The tag is `REG/<api>:<hash>`, the hash being the API's spec hash folded with
the content of every file that goes in (as the daemon folds project files into
the spec hash for hot reload) and the cortexd runtime release its Dockerfile
labels: an edited predictor or an upgraded cortexd gets a new tag, so
`kubectl apply` rolls it out (nodes never keep an old image under the tag), and
an unchanged project keeps its tag.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from cortexd.project_files import HostFile, ProjectFilter, image_mode
from cortexd.spec.model import APISpec
from predictor_runtime import inflight
from predictor_runtime.contract import DRAIN_SECONDS_ENV, RuntimeSpec
from predictor_runtime.mnt_project import MOUNT_POINT

ContextFile = bytes | HostFile  # generated content, or a host file streamed into the build context

PROJECT_IN_IMAGE = "/opt/cortexd/project"
MODELS_IN_IMAGE = "/opt/cortexd/models"
PATHS_IN_IMAGE = "/opt/cortexd/paths"
SPEC_IN_IMAGE = "/etc/cortexd/spec.json"
PORT = 8888
UID = 10001  # the predictor images' `cortexd` user (docker/Dockerfile)
# A request may run this long (the local gateway's upstream timeout); SIGTERM drains that long.
REQUEST_TIMEOUT_SECONDS = 60
PRESTOP_SLEEP_SECONDS = 5  # endpoints controllers and ingresses stop routing to the pod meanwhile
TERMINATION_GRACE_SECONDS = PRESTOP_SLEEP_SECONDS + REQUEST_TIMEOUT_SECONDS + 10
INFLIGHT_METRIC = inflight.METRIC  # the gauge the pods export at /metrics: the HPA's signal

_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$")


def registry_problem(registry: str) -> str | None:
    """Why `registry` cannot prefix an image name, or None (e.g. 'ghcr.io/team', '127.0.0.1:5000')."""
    if not _REGISTRY.match(registry.rstrip("/")):
        return (f"--registry {registry!r} is not a registry name: expected HOST[:PORT][/PATH] in "
                "lower case, e.g. ghcr.io/my-team or 127.0.0.1:5000")
    return None


def _is_local(path: str | None) -> bool:
    return bool(path) and "://" not in str(path) and posixpath.isabs(str(path))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def local_model_paths(spec: APISpec) -> list[str]:
    """The API's local model files/folders (s3:// paths stay where they are)."""
    p = spec.predictor
    wanted = [p.model_path]
    if p.models is not None:
        wanted.append(p.models.dir)
        wanted.extend(m.path for m in p.models.paths)
    return sorted({posixpath.normpath(str(w)) for w in wanted if _is_local(w)})


def image_paths(spec: APISpec) -> dict[str, str]:
    """Host absolute path -> its path in the image, for the project and what lies outside it."""
    project = posixpath.normpath(spec.project_dir)
    mapping = {project: PROJECT_IN_IMAGE}
    outside_models = [m for m in local_model_paths(spec) if not _inside(m, project)]
    for i, path in enumerate(outside_models, 1):
        if not any(_inside(path, root) for root in mapping if root != project):
            mapping[path] = f"{MODELS_IN_IMAGE}/{i}-{PurePosixPath(path).name}"
    python_path = posixpath.normpath(spec.predictor.python_path)
    if not any(_inside(python_path, root) for root in mapping):
        mapping[python_path] = f"{PATHS_IN_IMAGE}/1-{PurePosixPath(python_path).name}"
    return mapping


def to_image_path(path: str, mapping: Mapping[str, str]) -> str:
    """A host path rewritten by the longest mapped root that holds it (URLs unchanged)."""
    if not _is_local(path):
        return path
    norm = posixpath.normpath(path)
    for root in sorted(mapping, key=len, reverse=True):
        if _inside(norm, root):
            rest = norm[len(root):].lstrip("/")
            return mapping[root] + ("/" + rest if rest else "")
    raise ValueError(f"{path} is not among the image's paths")


def image_runtime_spec(spec: APISpec) -> RuntimeSpec:
    """The runtime spec baked into the image: APISpec.runtime_spec() with in-image paths."""
    mapping = image_paths(spec)
    return spec.runtime_spec().with_paths(lambda path: to_image_path(path, mapping))


def image_env(spec: APISpec) -> dict[str, str]:
    """Environment baked into the image (ENV): what the runtime needs, whatever runs it."""
    mapping = image_paths(spec)
    python_path = to_image_path(spec.predictor.python_path, mapping)
    paths = dict.fromkeys([python_path, PROJECT_IN_IMAGE])
    return {
        "PYTHONPATH": ":".join(p for p in paths if p),
        "HOME": "/tmp",  # the root filesystem is read-only; /tmp is the pod's tmpfs
        "PYTHONUNBUFFERED": "1",
        DRAIN_SECONDS_ENV: str(REQUEST_TIMEOUT_SECONDS),
    }


def container_env(spec: APISpec, dotenv: Mapping[str, str]) -> dict[str, str]:
    """The container's env in the manifests: the API's `env`, then the project's `.env` over it
    (as the backends layer them: Cortex sourced `.env` after `env`)."""
    return {**spec.predictor.env, **dotenv}


def is_project_file(rel: str, cortex_yamls: set[str], ignored: Any = None) -> bool:
    """Cortex's rules for a project file (path relative to the project, '/'-separated): the
    project-file rules the watcher applies too (cortexd/project_files.py), `ignored` being a
    pathspec.PathSpec of .cortexignore."""
    return not ProjectFilter(ignored=ignored, config_files=frozenset(cortex_yamls)).excludes(rel)


def _sha256(entry: ContextFile) -> bytes:
    return bytes.fromhex(entry.sha256) if isinstance(entry, HostFile) else hashlib.sha256(entry).digest()


def _kind(name: str, entry: ContextFile) -> bytes:
    """What besides its content makes an entry in the image: a link's mark, or a mode other than the
    build context's default (a chmod +x, a 0600 file) -- a chmod is a new image, and a file as
    bytes or as a HostFile of the same content and mode gives the same tag."""
    if not isinstance(entry, HostFile):
        return b""
    if entry.link is not None:
        return b"\0link"
    default = 0o755 if name.endswith(".sh") else 0o644
    if entry.mode is None or image_mode(entry.mode) == default:
        return b""
    return f"\0mode {image_mode(entry.mode):o}".encode()


def content_digest(files: Mapping[str, ContextFile]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + _sha256(files[name]) + _kind(name, files[name]))
    return h.hexdigest()


def image_hash(spec: APISpec, files: Mapping[str, ContextFile]) -> str:
    """12 hex digits: the spec hash folded with the image's files (archive path -> content)."""
    return hashlib.sha256(f"{spec.spec_hash}:{content_digest(files)}".encode()).hexdigest()[:12]


def image_name(registry: str, spec: APISpec, files: Mapping[str, ContextFile]) -> str:
    return f"{registry.rstrip('/')}/{spec.name}:{image_hash(spec, files)}"


def bundle_dockerfile(spec: APISpec, has_models: bool, has_paths: bool, runtime: str = "") -> str:
    """The last layer: project files, models and spec on the API's predictor image."""
    env = " \\\n    ".join(f'{k}="{v}"' for k, v in image_env(spec).items())
    lines = [
        "# cortexd build: one API's self-contained image (cortexd/kube/layout.py)",
        "ARG FROM_IMAGE",
        "FROM ${FROM_IMAGE}",
        "USER root",
        # root's files in the predictor's group: they keep their host modes (project_files.image_mode)
        f"COPY --chown=0:{UID} project/ {PROJECT_IN_IMAGE}/",
    ]
    if has_models:
        lines.append(f"COPY --chown=0:{UID} models/ {MODELS_IN_IMAGE}/")
    if has_paths:
        lines.append(f"COPY --chown=0:{UID} paths/ {PATHS_IN_IMAGE}/")
    lines += [
        f"COPY spec.json {SPEC_IN_IMAGE}",
        # a predictor.image made from an older cortexd image lacks the standalone entry point:
        # fail the build here rather than every pod in the cluster
        'RUN python -c "import predictor_runtime.standalone"',
        # Cortex-era predictors open /mnt/project/...; whatever a predictor.image had there goes
        f"RUN mkdir -p /mnt && rm -rf {MOUNT_POINT} && ln -s {PROJECT_IN_IMAGE} {MOUNT_POINT}",
        f"ENV {env}",
        f'LABEL cortexd.api="{spec.name}" cortexd.spec-hash="{spec.spec_hash}" cortexd.runtime="{runtime}"',
        f"USER {UID}:{UID}",
        f"WORKDIR {PROJECT_IN_IMAGE}",
        f"EXPOSE {PORT}",
        'ENTRYPOINT ["python", "-m", "predictor_runtime.standalone"]',
        "CMD []",
        "",
    ]
    return "\n".join(lines)


def bundle_files(spec: APISpec, host_files: Mapping[str, ContextFile],
                 runtime_spec_json: bytes, runtime: str = "") -> dict[str, ContextFile]:
    """Build-context files of the last layer from {host absolute path: content} of what goes in;
    `runtime` (image_plans.runtime_release) is labelled in its Dockerfile, so the tag follows it."""
    mapping = image_paths(spec)
    out: dict[str, ContextFile] = {}
    for host_path, data in host_files.items():
        in_image = to_image_path(host_path, mapping)
        for prefix, folder in ((PROJECT_IN_IMAGE, "project"), (MODELS_IN_IMAGE, "models"),
                               (PATHS_IN_IMAGE, "paths")):
            if _inside(in_image, prefix):
                out[folder + in_image[len(prefix):]] = data
                break
    out["spec.json"] = runtime_spec_json
    has_models = any(k.startswith("models/") for k in out)
    has_paths = any(k.startswith("paths/") for k in out)
    out["Dockerfile"] = bundle_dockerfile(spec, has_models, has_paths, runtime).encode()
    return out
