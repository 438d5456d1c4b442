"""A new user's machine, for the tests that run the README's quickstart and the isolation attack.

What a newcomer has: a copy of this checkout (what git would hand them: tracked and untracked,
not ignored), a fresh venv with `pip install .` (not editable), a freshly created unprivileged
user (useradd) for the same as non-root, and the README's quickstart commands read from
README.md itself, so the README cannot drift from what is tested.

Each install is the real one (about 25 s on this machine kind); the fixtures that use these are
session-scoped (tests/conftest.py).
"""

from __future__ import annotations

import grp
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.builders import REPO

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: every user can run it (pyenv's under /root cannot)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Quickstart:
    """The README's quickstart: its commands (continuation lines joined, comments dropped) and
    the answer it promises after `# -> ` (that the curl prints)."""

    commands: tuple[str, ...]
    expected: str


def read_quickstart(readme: Path = REPO / "README.md") -> Quickstart:
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README.md's Quickstart has no ```sh block"
    commands: list[str] = []
    expected = ""
    pending = ""
    for line in block.group(1).splitlines():
        stripped = line.strip()
        if stripped.startswith("# ->"):
            expected = stripped[len("# ->"):].strip()
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        commands.append(pending + stripped)
        pending = ""
    return Quickstart(tuple(commands), expected)


def copy_checkout(dest: Path) -> Path:
    """What a user who cloned this repository has: git's tracked and untracked, not ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = os.fsdecode(raw)
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the working tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


@dataclass(frozen=True)
class NewUser:
    """A user made for the test with useradd (no sudo, no groups), and how to run as them."""

    name: str
    uid: int
    gid: int
    home: Path
    extra_groups: tuple[int, ...] = field(default=())

    def env(self, **more: str) -> dict[str, str]:
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "PATH": BASE_PATH,
                "LANG": "C.UTF-8", **more}

    def run(self, command: str, *, cwd: Path, env: Mapping[str, str], timeout: float = 300,
            groups: tuple[int, ...] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=cwd, env=dict(env), user=self.uid,
                              group=self.gid, extra_groups=list(groups if groups is not None else self.extra_groups),
                              capture_output=True, text=True, timeout=timeout, check=False)


def create_user(root: Path) -> NewUser:
    """useradd a fresh user whose home is under `root` (0755, so it can be entered)."""
    name = f"cxdnew{secrets.token_hex(3)}"
    home = root / name
    subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                    "--user-group", name], check=True, capture_output=True, timeout=60)
    import pwd

    entry = pwd.getpwnam(name)
    return NewUser(name, entry.pw_uid, entry.pw_gid, home)


def remove_user(user: NewUser) -> None:
    subprocess.run(["pkill", "-KILL", "-u", user.name], capture_output=True, timeout=30, check=False)
    subprocess.run(["userdel", "--remove", user.name], capture_output=True, timeout=60, check=False)


def docker_group() -> int | None:
    try:
        return grp.getgrnam("docker").gr_gid
    except KeyError:
        return None


def fresh_root(prefix: str) -> Path:
    """A new folder every user can enter (pytest's tmp folders are 0700)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def install_venv(python: str, where: Path, source: Path, *, user: NewUser | None = None) -> Path:
    """`python -m venv where && where/bin/pip install .` in `source`, as `user` (None: as this
    process), the way the README says: not editable. Returns the venv's bin folder."""
    command = f"{python} -m venv {where} && {where}/bin/pip install -q --disable-pip-version-check ."
    if user is None:
        env = {**os.environ, "PATH": BASE_PATH}
        env.pop("PYTHONPATH", None)
        result = subprocess.run(["bash", "-c", command], cwd=source, env=env, capture_output=True,
                                text=True, timeout=600, check=False)
    else:
        result = user.run(command, cwd=source, env=user.env(), timeout=600)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return where / "bin"


def runnable_by_others(python: str = SYSTEM_PYTHON) -> bool:
    """Whether a user other than root can run `python` (a root daemon can drop privileges)."""
    try:
        subprocess.run([python, "-c", "pass"], user=65534, group=65534, extra_groups=[],
                       capture_output=True, timeout=30, check=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def can_make_users() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("useradd") is not None
