"""The Docker engine as cortexd uses it: the docker-py calls, and where their errors are translated.

DockerEngine is the backend's seam: a small class with one method per thing
DockerBackend asks of the engine (run a container, stop one, list ours, read
logs, stats, the network, `docker info`, an image builder), each a blocking
docker-py call that the backend runs in a thread. Tests of the backend's
bookkeeping fake this class, our own wrapper, never docker-py's client.

docker-py and requests exceptions become CortexdErrors in translate() /
docker_errors(), which DockerBackend wraps around its engine calls (image builds
included; the log copier, container_logs.py, ends quietly instead) and `cortexd build`
around its own; the image builder's expected answers
(no such image, a failed pull, a probe container that fails) become values or a
BackendError in image_calls.py. With the remedy: a dead or unreachable socket is
BackendUnavailable ("Couldn't connect to the Docker engine ... Is it running?"),
an engine without the NVIDIA runtime says how to install it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from cortexd.backends.images import ImageBuilder, Progress
from cortexd.errors import BackendError, BackendUnavailable, CortexdError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

NVIDIA_REMEDY = (
    "Docker cannot give containers GPUs on this host (no NVIDIA runtime in the engine: {detail}). "
    "Install the NVIDIA Container Toolkit (package nvidia-container-toolkit), run "
    "`nvidia-ctk runtime configure --runtime=docker`, and restart dockerd; or set compute.gpu: 0."
)


def engine_address(base_url: str | None = None) -> str:
    return base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def unix_socket_problem(base_url: str | None, timeout: float = 3.0) -> str | None:
    """Why the engine's unix socket does not accept a connection (None if it does, or not unix).

    Checked before docker-py connects: on a missing or dead socket docker-py
    leaks the socket object it opened, and the error it raises says less.
    """
    address = engine_address(base_url)
    if not address.startswith(("unix://", "/")):
        return None
    path = address.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            return f"{e.strerror or e}: {path}"
    return None


def unavailable(base_url: str | None, detail: str) -> BackendUnavailable:
    address = engine_address(base_url)
    if "Permission denied" in detail or "PermissionError" in detail:
        return BackendUnavailable(
            f"Couldn't connect to the Docker engine at {address}: permission denied. Add your user to "
            "the `docker` group (then log in again), or use --backend process."
        )
    return BackendUnavailable(
        f"Couldn't connect to the Docker engine at {address}. Is it running? Start it with `dockerd` "
        f"(or `systemctl start docker`), or use --backend process. ({detail})"
    )


def translate(error: Exception, action: str, base_url: str | None = None) -> CortexdError:
    """docker-py / requests exception -> the CortexdError a user reads."""
    import docker.errors
    import requests.exceptions

    if isinstance(error, CortexdError):
        return error
    if isinstance(error, requests.exceptions.ConnectionError | FileNotFoundError | ConnectionError):
        return unavailable(base_url, str(error))
    if isinstance(error, docker.errors.APIError):
        detail = str(error.explanation or error)
        if "could not select device driver" in detail:
            return BackendError(f"{action}: " + NVIDIA_REMEDY.format(detail=detail))
        return BackendError(f"{action}: {detail}")
    if isinstance(error, docker.errors.DockerException):
        text = str(error)
        if "Error while fetching server API version" in text or "Connection" in text:
            return unavailable(base_url, text)
        return BackendError(f"{action}: {text}")
    if isinstance(error, requests.exceptions.RequestException):
        return BackendError(f"{action}: the Docker engine did not answer ({error})")
    raise error


@contextlib.contextmanager
def docker_errors(action: str, base_url: str | None = None) -> Iterator[None]:
    import docker.errors
    import requests.exceptions

    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
        raise translate(e, action, base_url) from e


def image_missing(error: BaseException | None) -> bool:
    """Whether docker-py said that a container's image does not exist (removed since it was built)."""
    import docker.errors

    return isinstance(error, docker.errors.ImageNotFound)


def connect(base_url: str | None = None, timeout: float | None = None) -> DockerClient:
    """A docker-py client for the engine at base_url (else DOCKER_HOST, else the local socket)."""
    import docker

    problem = unix_socket_problem(base_url)
    if problem:
        raise unavailable(base_url, problem)
    with docker_errors("connecting to the Docker engine", base_url):
        if base_url and timeout:
            # types-docker says int (as docker-py's docstring); it goes to requests and the socket, which take a float
            return docker.DockerClient(base_url=base_url, timeout=timeout)  # type: ignore[arg-type]
        if base_url:
            return docker.DockerClient(base_url=base_url)
        if timeout:
            return docker.from_env(timeout=int(max(1, timeout)))
        return docker.from_env()


def probe(base_url: str | None = None, timeout: float = 3.0) -> str | None:
    """None when an engine answers here; else why not (for `--backend auto`). Blocking, quick."""
    problem = unix_socket_problem(base_url, timeout)
    if problem:
        return str(unavailable(base_url, problem))
    try:
        with docker_errors("probing the Docker engine", base_url):
            import docker

            client = (
                docker.DockerClient(base_url=base_url, timeout=timeout)  # type: ignore[arg-type]  # as in connect()
                if base_url
                else docker.from_env(timeout=int(max(1, timeout)))
            )
            try:
                client.ping()
            finally:
                client.close()
    except CortexdError as e:
        return str(e)
    return None


class DockerEngine:
    """The docker-py calls DockerBackend makes (blocking; the backend runs each in a thread and
    translates what they raise with docker_errors()). Containers are named by container_args;
    a container that is gone reads as None / nothing to do, never as an error.

    client: an existing docker-py client (else one is made on first use, from base_url).
    """

    def __init__(self, base_url: str | None = None, client: DockerClient | None = None):
        self.base_url = base_url
        self._client = client

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = connect(self.base_url)
        return self._client

    @property
    def local(self) -> bool:
        """Whether the engine is on this host's unix socket (so its bridge addresses may be reachable)."""
        return engine_address(self.base_url).startswith(("unix://", "/"))

    def info(self) -> Mapping[str, Any]:
        return self.client.info()

    def image_builder(self, base_image: str | None, progress: Progress, **options: Any) -> ImageBuilder:
        """The builder of predictor images on this engine (images.py)."""
        return ImageBuilder(self.client, base_image, progress, **options)

    # -- the network -------------------------------------------------------------------------------
    def network_attrs(self, name: str) -> Mapping[str, Any] | None:
        import docker.errors

        try:
            return self.client.networks.get(name).attrs
        except docker.errors.NotFound:
            return None

    def create_network(self, name: str, options: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        """Create a bridge network; False when another daemon created it meanwhile (409)."""
        import docker.errors

        try:
            self.client.networks.create(name, driver="bridge", options=dict(options), labels=dict(labels))
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise
            return False
        return True

    # -- containers --------------------------------------------------------------------------------
    def run_container(self, create_args: Mapping[str, Any], archive_dir: str, archive: bytes) -> Mapping[str, Any]:
        """Create a container, copy `archive` (a tar) into `archive_dir`, start it; its inspect data.
        A container that fails after create is removed again (with its volumes)."""
        container = self.client.containers.create(**create_args)
        try:
            container.put_archive(archive_dir, archive)
            container.start()
            container.reload()
        except BaseException:
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)  # v: its spec volume too
            raise
        return container.attrs

    def _find(self, name: str) -> Container | None:
        import docker.errors

        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

    def remove_container(self, name: str, timeout: float) -> None:
        """Stop (SIGTERM, then SIGKILL after `timeout` seconds) and remove a container, if it exists."""
        import docker.errors

        container = self._find(name)
        if container is None:
            return
        with contextlib.suppress(docker.errors.NotFound):
            if container.status in ("running", "restarting", "paused"):
                container.stop(timeout=max(0, round(timeout)))
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)  # v: its spec volume too

    def wait_container(self, container_id: str) -> tuple[int, bool]:
        """(exit code, killed for memory) of a container, once it ended (a worker's; on a client of
        its own: the wait blocks its connection). A container already gone reads as (-1, False)."""
        import docker.errors

        client = connect(self.base_url)
        try:
            container = client.containers.get(container_id)
            code = int(container.wait().get("StatusCode", -1))
            container.reload()
            return code, bool((container.attrs.get("State") or {}).get("OOMKilled"))
        except docker.errors.NotFound:
            return -1, False
        finally:
            client.close()

    def list_containers(self, filters: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The inspect data of every container (running or not) that matches `filters`."""
        found = self.client.containers.list(all=True, filters=dict(filters), ignore_removed=True)
        return [c.attrs for c in found]

    def cpu_seconds(self, name: str) -> float | None:
        """CPU time a running container used so far (cgroup usage, one-shot stats); None if not running."""
        container = self._find(name)
        if container is None or container.status != "running":
            return None
        # types-docker has no overload for stream=False, which returns one dict (not an iterator)
        stats = cast(dict[str, Any], container.stats(stream=False, one_shot=True))
        usage = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        return usage / 1e9 if usage is not None else None

    def container_logs(self, name: str, tail: int | None = None) -> bytes:
        container = self._find(name)
        if container is None:
            return b""
        return container.logs(stdout=True, stderr=True, tail="all" if tail is None else tail)

    @contextlib.contextmanager
    def follow_logs(self, container_id: str, since: float | None = None) -> Iterator[Iterator[bytes]]:
        """The output of a container from `since` (epoch seconds) on, until it ends, on a client of its
        own (a stream blocks its connection); closed when the `with` block ends."""
        client = connect(self.base_url)
        try:
            kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "stream": True, "follow": True}
            if since is not None:
                kwargs["since"] = since
            yield client.containers.get(container_id).logs(**kwargs)
        finally:
            client.close()

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()
