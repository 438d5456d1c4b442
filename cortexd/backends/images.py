"""Predictor images for the Docker backend: building them with docker-py (ImageBuilder).

Every API runs on one image per predictor family and compute variant
(`cortexd-python-cpu:<hash>`, `cortexd-onnx-gpu:<hash>`...) built from
docker/Dockerfile on a configurable base; a project's requirements.txt and
dependencies.sh, plus the Cortex 0.23 pre-installed packages its code imports that
neither its requirements nor the image provide (core/preinstalled.py, the same scan
as the process backend's), become one more image (`cortexd-python-cpu-deps:<hash>`)
on top. conda-packages.txt is refused there: the images have no conda.
What to build is decided in image_plans.py (pure build plans, tagged by content
hash, so an image that exists is up to date and is never rebuilt: ensure() checks
the engine before building anything); the host's and the project's pip settings
are carried into the builds by pip_settings.py.

The offline base image (a base made from Debian packages, for hosts that
cannot pull python:3.11-slim) is made by docker/make-offline-base.sh, which
`cortexd make-base-image` runs through make_offline_base().
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cortexd.backends.environment_plan import project_imports, project_pip_env
from cortexd.backends.image_calls import has_image, pull_image, run_once
from cortexd.backends.image_plans import (
    BuildPlan,
    build_failure,
    conda_refusal,
    deps_plan,
    deps_repository,
    docker_dir,
    last_lines,
    project_dependency_files,
    runtime_files,
    runtime_plan,
    tar_context,
    variant_of,
)
from cortexd.backends.pip_settings import (
    PipSettings,
    find_links_files,
    host_pip_config_list,
    pip_context_files,
    pip_settings_for_build,
)
from cortexd.core.preinstalled import Addition, preinstalled_additions
from cortexd.core.requirements import requirement_names
from cortexd.credentials import redact_credentials
from cortexd.errors import BackendError
from cortexd.spec.model import APISpec

if TYPE_CHECKING:
    from docker import DockerClient

DEFAULT_BASE_IMAGE = "python:3.11-slim"
OFFLINE_BASE_IMAGE = "cortexd/base:bookworm"
BASE_IMAGE_ENV = "CORTEXD_BASE_IMAGE"

Progress = Callable[[str], None]

# a replica image's python says which of these modules it can import (nothing is imported)
_PROBE = "import importlib.util as u, json, sys; print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"


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
        client: DockerClient,
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

    def preinstalled(self, spec: APISpec, image: str, names: set[str]) -> list[Addition]:
        """Cortex 0.23's pre-installed packages that the project imports and that neither its
        requirements (`names`: canonical, across its -r includes) nor `image` provide (the image
        is asked once per module it may lack)."""
        imports, own = project_imports(spec)
        candidates = preinstalled_additions(imports, spec.predictor.type, names, lambda m: False, own)
        if not candidates:
            return []
        present = self._image_modules(image, sorted({a.import_name for a in candidates}))
        return preinstalled_additions(imports, spec.predictor.type, names, present.__contains__, own)

    def _image_modules(self, image: str, modules: list[str]) -> set[str]:
        """Which of `modules` the image's python finds (one short container, none per cached answer)."""
        unknown = [m for m in modules if (image, m) not in self._modules]
        if unknown:
            found: list[str] | None = None
            try:
                code, out, _ = run_once(self._client, image, ["python", "-c", _PROBE, *unknown], "10001:10001")
                if code == 0:
                    found = json.loads(out.strip().splitlines()[-1])
            except (BackendError, ValueError, IndexError) as e:
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
        project, tree = project_dependency_files(spec.project_dir)
        additions = self.preinstalled(spec, image, requirement_names(tree.lines))
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
        if name in self._present:
            return True
        if not has_image(self._client, name):
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
        if self._has_image(base):
            return
        self._say(f"pulling base image {base} ...")
        failed = pull_image(self._client, base)
        if failed is not None:
            raise BackendError(
                f"the base image {base} is not on this host and could not be pulled "
                f"({failed}). On a host without registry access, make the offline base "
                f"with `cortexd make-base-image` (docker/make-offline-base.sh) and set "
                f"{BASE_IMAGE_ENV}={OFFLINE_BASE_IMAGE}."
            )
        self._present.add(base)

    def _build(self, plan: BuildPlan, api: str) -> None:
        self._say(f"building {plan.tag} ({plan.description}) for api {api!r} ...")
        log: deque[str] = deque(maxlen=200)
        image_id = None
        # the context is sent with the request; closing it afterwards removes a temporary file
        with tar_context(plan.files) as context:
            stream = self._client.api.build(
                fileobj=context, custom_context=True, dockerfile=plan.dockerfile,
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
                    line = redact_credentials(line)  # a RUN step's output may name an index URL
                    log.append(line)
                    if line.strip():
                        self._say(f"[{plan.tag}] {line}")
            if "error" in chunk and error is None:
                error = redact_credentials((chunk.get("errorDetail") or {}).get("message") or chunk["error"])
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = aux["ID"]
        if error is not None:
            raise BackendError(build_failure(plan, api, list(log), error))
        self._say(f"built {plan.tag}" + (f" ({image_id[:19]})" if image_id else ""))

    def _ensure_custom(self, api: str, image: str) -> None:
        """A user's predictor.image must carry predictor_runtime: check by importing it once."""
        if image in self._checked_custom:
            return
        self._ensure_base(image)  # present, or pulled
        try:
            code, _, err = run_once(self._client, image, ["python", "-c", "import predictor_runtime"], "10001:10001")
        except BackendError as e:
            raise BackendError(
                f"api {api!r}: predictor.image {image} cannot run cortexd's predictor runtime "
                f"(`python -c 'import predictor_runtime'`: {e}). It needs `python` "
                "on PATH with the predictor_runtime package importable."
            ) from None
        if code != 0:
            raise BackendError(
                f"api {api!r}: predictor.image {image} does not carry cortexd's predictor runtime "
                f"(`python -c 'import predictor_runtime'` failed: {last_lines(err.splitlines(), 3)}). "
                "Build it FROM a cortexd predictor image (docker images 'cortexd-*'), or install "
                "cortexd into it so that `python -m predictor_runtime` runs."
            )
        self._checked_custom.add(image)


def make_offline_base(name: str = OFFLINE_BASE_IMAGE) -> int:
    """Run docker/make-offline-base.sh for image `name` (output on this terminal); its exit code."""
    script = docker_dir() / "make-offline-base.sh"
    return subprocess.call(["bash", str(script), name])
