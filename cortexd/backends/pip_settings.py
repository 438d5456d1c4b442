"""The host's pip settings, carried into Docker image builds (pure, but for reading pip and files).

A build container has none of the host's pip configuration, so what matters
for installing (index URLs, trusted hosts, timeouts, the CA bundle of a proxy,
find-links) is rewritten into a pip.conf for the build context:
pip_settings_for_build() turns `pip config list` output and PIP_* variables into
PipSettings (tested in tests/unit/test_pip_settings.py); pip_context_files()
and find_links_files() are the files that go into the context. Settings that
cannot work inside a build (host paths, the host's loopback) are dropped with
a notice. A project's pip.conf (Cortex's way to a private index) is layered
over the host's for its requirements layer, ranked as the process backend
ranks it (as PIP_* variables over the host's files); a find-links folder inside
the project is copied into the build. merged_pip_settings() is also how the
process backend hands the same settings to uv (environment_build.py).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cortexd.credentials import redact_credentials
from cortexd.errors import DependencyError

PIP_DIR_IN_IMAGE = "/etc/cortexd/pip"
CERT_IN_IMAGE = f"{PIP_DIR_IN_IMAGE}/cert.pem"
FIND_LINKS_IN_IMAGE = f"{PIP_DIR_IN_IMAGE}/find-links"
_TRUE = ("1", "true", "yes", "on")

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
    (below) and to hand the same settings to uv on the process backend (environment_build.py)."""
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
    project: a project pip.conf as PIP_* variables (environment_plan.project_pip_env, paths
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
        kept = [v for v in (_in_build(key, v, root, find_links, notices) for v in values) if v]
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
    build_args = _proxy_build_args(env, notices)
    conf = "[global]\n" + "".join(line + "\n" for line in lines)
    # notices name settings, and a URL's credentials are not for the daemon's log or the live view
    return PipSettings(conf=conf, cert_file=cert_file, build_args=build_args,
                       notices=tuple(redact_credentials(n) for n in notices), find_links=tuple(find_links))


def _in_build(key: str, v: str, root: str | None, find_links: list[tuple[str, str]],
              notices: list[str]) -> str | None:
    """What one value of pip setting `key` becomes inside an image build (None: dropped, with a
    notice): a find-links folder inside the project is copied into the context (appended to
    `find_links`); another local path, or a loopback URL, cannot be reached from a build."""
    local = v.startswith("file:") or (key == "find-links" and "://" not in v)
    path = v.removeprefix("file://") if v.startswith("file://") else v
    in_project = root is not None and os.path.join(os.path.abspath(path), "").startswith(root)
    if key == "find-links" and local and in_project:
        folder = f"pip/find-links/{len(find_links)}"
        in_image = f"{FIND_LINKS_IN_IMAGE}/{len(find_links)}"
        if path.endswith((".html", ".htm")):
            in_image += "/" + os.path.basename(path)
        find_links.append((path, folder))
        return in_image
    if local:
        notices.append(f"pip {key} {v} is a path on this host that does not exist inside image "
                       "builds; builds do without it")
        return None
    if key in ("index-url", "extra-index-url", "proxy", "find-links") and _is_loopback_url(v):
        notices.append(f"pip {key} {v} points at this host's loopback, which a build container "
                       "cannot reach; builds do without it")
        return None
    return v


def _proxy_build_args(env: Mapping[str, str], notices: list[str]) -> dict[str, str]:
    """The host's proxy variables, as build args (a loopback proxy is noticed: a build cannot reach it)."""
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
    return build_args


def host_pip_config_list(env: Mapping[str, str]) -> str:
    """`pip config list` of this host ("" without pip: PIP_* variables still count)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, timeout=60, env=dict(env), check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


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
