"""The image builder's calls to docker-py (images.py): whether an image is there, a pull, a short
container run. docker-py's errors become a value or a BackendError here, so images.py, like the
rest of cortexd, never sees them; docker_engine.py does the same for containers and networks.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from cortexd.errors import BackendError

if TYPE_CHECKING:
    from docker import DockerClient


def has_image(client: DockerClient, name: str) -> bool:
    """Whether the engine has image `name` (ImageNotFound: no)."""
    import docker.errors

    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def pull_image(client: DockerClient, name: str) -> str | None:
    """Pull `name`; None when it came, else the engine's explanation."""
    import docker.errors

    try:
        client.images.pull(name)
    except docker.errors.APIError as e:
        return str(e.explanation or e)
    return None


def run_once(client: DockerClient, image: str, argv: list[str], user: str) -> tuple[int, str, str]:
    """Run `argv` in a short container of `image` (no network) and remove it: (exit code, stdout,
    stderr). create/start/wait rather than containers.run, which leaks its attach socket on
    failure. A container that cannot be created is a BackendError with the engine's explanation;
    one that fails to run answers exit code 1 with the explanation as its stderr."""
    import docker.errors

    try:
        container = client.containers.create(image, entrypoint=argv, network_disabled=True, user=user)
    except docker.errors.APIError as e:
        raise BackendError(str(e.explanation or e)) from None
    try:
        container.start()
        code = int(container.wait(timeout=120).get("StatusCode", 1))
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
    except docker.errors.APIError as e:
        code, out, err = 1, "", str(e.explanation or e)
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    return code, out, err
