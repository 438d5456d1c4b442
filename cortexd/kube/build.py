"""`cortexd build`: one self-contained image per API, built and pushed with docker-py (I/O shell).

The image is the API's predictor image exactly as the Docker backend makes it
(cortexd.backends.images.ImageBuilder.ensure: family x cpu/gpu on the base
image, the project's requirements.txt / dependencies.sh layer, or the API's
predictor.image), plus one layer (layout.bundle_files): the project files,
local models and the runtime spec, run by predictor_runtime.standalone as
uid 10001. Its name is layout.image_name(), the one the exported manifests
carry.

Push: docker-py's push, which reads the registry credentials from the Docker
config (~/.docker/config.json, credential helpers included) as `docker push`
does. Each layer's progress is said as it changes; a refused push raises
ExportError with the registry's answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cortexd.backends.docker import DockerBackend
from cortexd.backends.docker_engine import docker_errors
from cortexd.backends.image_plans import BuildPlan
from cortexd.backends.images import ImageBuilder
from cortexd.errors import BackendUnavailable, ExportError
from cortexd.kube import layout
from cortexd.kube.bundle import read_image_files
from cortexd.kube.export import check_request, image_files_for
from cortexd.spec.model import APISpec
from cortexd.spec.units import format_bytes

if TYPE_CHECKING:
    from docker import DockerClient

Say = Callable[[str], None]


@dataclass(frozen=True)
class BuiltImage:
    api: str
    image: str  # REG/<api>:<hash>
    pushed: bool


def bundle_plan(spec: APISpec, from_image: str, image: str, files: dict[str, layout.ContextFile]) -> BuildPlan:
    return BuildPlan(tag=image, dockerfile="Dockerfile", buildargs={"FROM_IMAGE": from_image}, files=files,
                     description=f"api {spec.name!r}: project, models and spec on {from_image}")


class PushProgress:
    """Turns docker-py's push stream into a few lines: each layer's status when it changes."""

    def __init__(self, say: Say):
        self._say = say
        self._last: dict[str, str] = {}

    def feed(self, chunk: dict[str, Any]) -> str | None:
        """One decoded chunk; returns the error the registry answered, if this chunk is one."""
        if "error" in chunk:
            return (chunk.get("errorDetail") or {}).get("message") or str(chunk["error"])
        status = chunk.get("status") or ""
        layer = chunk.get("id")
        if not layer:
            if status:
                self._say(f"  {status}")
            return None
        detail = chunk.get("progressDetail") or {}
        if status == "Pushing" and detail.get("total"):
            quarter = min(4, int(4 * detail.get("current", 0) / detail["total"]))
            status = f"Pushing {format_bytes(detail['total'], 1)}: {25 * quarter}%"
        if self._last.get(layer) != status:
            self._last[layer] = status
            self._say(f"  {layer}: {status}")
        return None


def push(client: DockerClient, image: str, say: Say) -> None:
    repository, _, tag = image.rpartition(":")
    registry = repository.split("/", 1)[0]
    say(f"pushing {image} ...")
    progress = PushProgress(say)
    error = None
    with docker_errors(f"pushing {image}"):
        # read the whole stream (as ImageBuilder does) so the connection goes back to the pool
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
            found = progress.feed(chunk)
            if found and error is None:
                error = found
    if error is not None:
        raise ExportError(f"pushing {image} failed; the registry {registry} answered: {error}")
    say(f"pushed {image}")


def build_images(apis: list[APISpec], registry: str | None, do_push: bool, say: Say,
                 base_image: str | None = None, client: DockerClient | None = None) -> list[BuiltImage]:
    registry = check_request(registry, "deployment")
    # look at every API's files first (sizes and digests, read in chunks, never held): a missing
    # model is said before any build starts; then each API is built on its own, its context
    # streamed from disk into a temporary file (image_plans.tar_context)
    collected = [(spec, read_image_files(spec)) for spec in apis]
    if client is None:
        problem = DockerBackend.probe()
        if problem is not None:
            # probe() words it for `cortexd up`, whose process backend is no remedy here
            raise BackendUnavailable("cortexd build needs the Docker engine: "
                                     + problem.replace(", or use --backend process", ""))
        import docker

        with docker_errors("connecting to the Docker engine"):
            client = docker.from_env(timeout=600)
    builder = ImageBuilder(client, base_image=base_image, progress=say)
    built = []
    for spec, files in collected:
        context = image_files_for(spec, files)
        image = layout.image_name(registry, spec, context)
        say(f"api {spec.name!r}: {len(files.files)} file(s), {format_bytes(files.project_size, 1)}"
            f" from {spec.project_dir}")
        for m in files.models:
            say(f"  model {m.path}: {m.files} file(s), {format_bytes(m.size, 1)} -> {m.in_image}")
        for warning in files.warnings:
            say(f"  warning: {warning}")
        with docker_errors(f"building the image of api {spec.name!r}"):
            from_image = builder.ensure(spec)
            builder.build(bundle_plan(spec, from_image, image, context), spec.name)
        say(f"api {spec.name!r}: built {image}")
        if do_push:
            push(client, image, say)
        built.append(BuiltImage(spec.name, image, do_push))
    return built
