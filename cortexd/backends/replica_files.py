"""A process replica's folders on the host: its private folder and its API's persistent HOME.

The process backend's launcher (replica_launch.py) makes both before it spawns a replica:
- a private folder outside the daemon's home (the daemon's home is 0700, which a replica of
  another user could not enter): the replica's runtime spec, readable by its user alone (it
  holds predictor.config's values), and its TMPDIR, 0700 (private_dir(); stop() removes it
  off the loop);
- in the private folder, the unix socket the gateway reaches the replica on (gateway_socket());
- a HOME that persists across replica starts, so ~/.cache is downloaded once (api_home()):
  under the user's cache folder, or for a root daemon with unprivileged replicas under
  SHARED_REPLICA_HOMES, named by the API's uid (replica_uids.py), which belongs to that API
  for as long as its daemon's home exists.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from cortexd.backends.isolation import ReplicaUser

PRIVATE_PREFIX = "cortexd-replica-"


def private_dir(replica_id: str, user: ReplicaUser) -> Path:
    """A new folder of the replica's own, in the system's temporary folder: its runtime spec
    (read-only) and its TMPDIR `tmp` (writable by the replica's user only). Mode 0711: the
    replica's user can reach both without listing it; nobody else can enter its TMPDIR."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{replica_id}-"))
    folder.chmod(0o711)
    tmp = folder / "tmp"
    tmp.mkdir(mode=0o700)
    if user.drops(os.getuid()):
        os.chown(tmp, user.uid, user.gid)
    return folder


def write_private(path: Path, text: str, user: ReplicaUser) -> None:
    """A new file readable by `user` alone (0400), from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    if user.drops(os.getuid()):
        os.chown(path, user.uid, user.gid)


# sockaddr_un's sun_path holds 108 bytes with the final NUL
MAX_SOCKET_PATH = 107


def gateway_socket(folder: Path) -> socket.socket | None:
    """A unix stream socket bound (not listening) at folder/gw/sock, for the replica to serve
    on beside its port (`--unix-fd`): the gateway's hop to a process replica, about 5 us less
    CPU per exchange on each side than loopback TCP (bench/socket_floor.py).

    The daemon binds it and passes it down, so the replica needs no path of its own (whatever its
    user or mount namespace) and `gw` (0700) is the daemon's: only the daemon's user reaches it.
    Linux only, where a unix socket closed with bytes unread resets its peer (ECONNRESET) as a
    TCP socket does: the gateway retries a request the replica never read on that proof
    (upstream.py). None where that does not hold or the path is too long for a socket address:
    the gateway uses the port."""
    path = folder / "gw" / "sock"
    if not sys.platform.startswith("linux") or len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return None
    path.parent.mkdir(mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    return sock


def remove_private_dir(folder: Path | None) -> None:
    """(blocking: a predictor's TMPDIR can be large; stop() runs it in a thread)"""
    if folder is not None and folder.name.startswith(PRIVATE_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)


# a root daemon's replica HOMEs (next to its environment cache, settings.SHARED_ENV_CACHE):
# its own home is closed to the replicas' users. An isolated API's HOME is named by its uid
# (replica_uids.py), which belongs to that API for as long as its daemon's home exists.
SHARED_REPLICA_HOMES = Path("/var/cache/cortexd/replica-homes")


def default_homes_dir(user: ReplicaUser, daemon_uid: int) -> Path:
    """Where the APIs' persistent HOMEs live: shared for a root daemon with unprivileged
    replicas, else the user's cache folder (outside the daemon's home)."""
    if user.drops(daemon_uid):
        return SHARED_REPLICA_HOMES
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "cortexd" / "replica-homes"


def api_home(homes_dir: Path, name: str, user: ReplicaUser) -> Path:
    """The persistent HOME of an API's replicas (kept across replica starts, so ~/.cache, the
    Hugging Face and torch hub caches, is downloaded once): homes_dir/<name>, 0700, owned by
    the replicas' user (what an earlier owner left in it too); homes_dir itself 0711 (entered,
    never listed, by that user)."""
    homes_dir.mkdir(parents=True, exist_ok=True)
    homes_dir.chmod(0o711)
    home = homes_dir / name
    home.mkdir(mode=0o700, exist_ok=True)
    st = home.lstat()
    if home.is_symlink() or not home.is_dir():
        raise OSError(f"{home} is not a folder")
    if user.drops(os.getuid()) and (st.st_uid, st.st_gid) != (user.uid, user.gid):
        for path in [home, *home.rglob("*")]:
            os.chown(path, user.uid, user.gid, follow_symlinks=False)
    home.chmod(0o700)
    return home


def remove_homes(homes_dir: Path, names: list[str]) -> None:
    """(blocking) The HOMEs of uids given up (replica_uids.py drops them with their daemon)."""
    for name in names:
        path = homes_dir / name
        if not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
