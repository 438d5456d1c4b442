"""A package index on 127.0.0.1 for tests that install requirements without the network.

`local_index(root, releases)` writes tiny pure-Python wheels (made here as zip files: no build
tool runs) and a PEP 503 simple index over them whose links carry `data-requires-python`, as
PyPI's do, and releases built for an old Python only (a `cp36` tag), so pip and uv decide
"this release has no build for this Python" as they would for a 2020 pin. `served(root)` serves
it over HTTP on 127.0.0.1 (a thread of the test process), as a private index is reached. A
project points at it with its own pip.conf (`index_pip_conf`); a test that must see no other
index also gives its daemon no pip configuration of the host (`hermetic_pip`).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import html
import http.server
import os
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Release:
    """One wheel: name, version, its Requires-Python (None: any), its dependencies and its tag
    (`cp36-cp36m-any`: a build for Python 3.6 only, as a 2020 release has)."""

    name: str
    version: str
    requires_python: str | None = None
    requires: tuple[str, ...] = ()
    tag: str = "py3-none-any"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(folder: Path, release: Release) -> Path:
    """A wheel whose module `<name>` has VERSION = its version."""
    module = release.name.replace("-", "_")
    dist_info = f"{module}-{release.version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {release.name}", f"Version: {release.version}"]
    if release.requires_python:
        metadata.append(f"Requires-Python: {release.requires_python}")
    metadata += [f"Requires-Dist: {r}" for r in release.requires]
    files = {
        f"{module}/__init__.py": f"VERSION = {release.version!r}\n".encode(),
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist_info}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: cortexd-tests\nRoot-Is-Purelib: true\n"
                               f"Tag: {release.tag}\n").encode(),
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    path = folder / f"{module}-{release.version}-{release.tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def local_index(root: Path, releases: list[Release]) -> Path:
    """Wheels of `releases` under root/files and a simple index over them; its folder."""
    files, simple = root / "files", root / "simple"
    files.mkdir(parents=True, exist_ok=True)
    by_name: dict[str, list[tuple[Release, Path]]] = {}
    for release in releases:
        by_name.setdefault(release.name, []).append((release, build_wheel(files, release)))
    for name, built in by_name.items():
        links = []
        for release, path in built:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            needs = (f' data-requires-python="{html.escape(release.requires_python)}"'
                     if release.requires_python else "")
            links.append(f'<a href="../../files/{path.name}#sha256={digest}"{needs}>{path.name}</a><br/>')
        (simple / name).mkdir(parents=True, exist_ok=True)
        (simple / name / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    (simple / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "\n".join(
        f'<a href="{n}/">{n}</a><br/>' for n in sorted(by_name)) + "\n</body></html>\n")
    return simple


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # pip's requests are not the test's output


@contextlib.contextmanager
def served(root: Path) -> Iterator[str]:
    """Serve `root` (local_index's folder) on 127.0.0.1; yields the simple index's URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


def index_pip_conf(url: str) -> str:
    """A project pip.conf whose index is `url` (Cortex's way to a private index)."""
    return f"[global]\nindex-url = {url}\n"


def hermetic_pip(env: dict[str, str]) -> dict[str, str]:
    """`env` without the host's pip settings (its PIP_* variables and configuration files), so
    a daemon started with it installs from the project's pip.conf alone: no other index, no
    network."""
    out = {k: v for k, v in env.items() if not k.startswith(("PIP_", "UV_"))}
    out["PIP_CONFIG_FILE"] = os.devnull
    return out
