"""Replica logs rotate by size and `cortexd logs` (--tail, -f, --since) reads across the rotation.

A predictor that prints a lot, with small limits (CORTEXD_LOG_MAX_SIZE / CORTEXD_LOG_FILES):
every line is seen once by `logs -f` though the files rotate under it, `--tail` and `--since`
read back through the rotated files, and the files never hold more than size x count.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time

from tests.builders import write_project
from tests.real_daemon import REPO, free_port, post_json

MAX_BYTES = 64 * 1024
FILES = 3
LINES_PER_REQUEST = 500  # about 50 KB: most requests cross a rotation

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        r = payload["request"]
        for i in range(payload["lines"]):
            print(f"req {r:03d} line {i:04d} " + "x" * 80)
        return {"printed": payload["lines"]}
"""


def expected(first: int, last: int) -> list[str]:
    return [f"req {r:03d} line {i:04d} " + "x" * 80 for r in range(first, last) for i in range(LINES_PER_REQUEST)]


def printed(lines: list[str]) -> list[str]:
    """The predictor's lines, without the `replica | ` prefix (the runtime's own lines left out)."""
    out = []
    for line in lines:
        text = line.rstrip("\n").split(" | ", 1)[-1]
        if text.startswith("req "):
            out.append(text)
    return out


def _listing(folder) -> list[tuple[str, int, int, float, bytes]]:
    """(name, inode, size, mtime, first bytes) of each file: what a failed --since is read against."""
    out = []
    for p in sorted(folder.iterdir()):
        try:
            st = p.stat()
            out.append((p.name, st.st_ino, st.st_size, st.st_mtime, p.read_bytes()[:40]))
        except OSError:
            continue
    return out


def test_logs_tail_follow_and_since_across_rotations(cli, tmp_path):
    port = free_port()
    write_project(tmp_path / "chatty", f"- name: chatty\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                  f"    path: predictor.py\n  networking:\n    local_port: {port}\n", {"predictor.py": PREDICTOR})
    cli.env.update(CORTEXD_LOG_MAX_SIZE=str(MAX_BYTES), CORTEXD_LOG_FILES=str(FILES))
    cli("up", "-d", "--backend", "process", "--wait", "60", str(tmp_path / "chatty"), check=True)
    url = f"http://127.0.0.1:{port}/chatty"

    follower = subprocess.Popen([sys.executable, "-m", "cortexd", "logs", "chatty", "-f"], env=cli.env,
                                cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    followed: list[str] = []
    reader = threading.Thread(target=lambda: followed.extend(follower.stdout), daemon=True)
    reader.start()
    since = None
    try:
        time.sleep(1.0)  # the follower has read the history and follows
        for r in range(8):
            if r == 6:  # --since: what was written from here on, once the log clock sampled before
                time.sleep(3)  # wide of the daemon's log-clock sampling, even when it runs late
                since = time.time()
                time.sleep(3)
            status, _, body = post_json(url, {"request": r, "lines": LINES_PER_REQUEST})
            assert status == 200, body
            deadline = time.monotonic() + 20
            last = expected(r, r + 1)[-1]
            while last not in printed(list(followed)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert last in printed(list(followed)), (f"`logs -f` did not show request {r}'s last line",
                                                     printed(list(followed))[-1:], len(followed),
                                                     _listing(cli.home / "logs" / "chatty"))
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        reader.join(timeout=10)
        follower.stdout.close()
        follower.stderr.close()

    # -f: every line once, in order, though the file it read was rotated under it
    assert printed(followed) == expected(0, 8)

    files = sorted((cli.home / "logs" / "chatty").iterdir())
    sizes = {f.name: f.stat().st_size for f in files}
    assert all(size <= MAX_BYTES for size in sizes.values()), sizes
    assert len(files) <= FILES and sum(sizes.values()) <= MAX_BYTES * FILES, sizes
    assert any(f.name.endswith(".log.2") for f in files), sizes  # it did rotate, twice or more

    # --tail reads back through the rotated files
    tail = printed(cli("logs", "chatty", "--tail", "900", check=True).out.splitlines())
    assert tail == expected(0, 8)[-900:]

    # --since: exactly what was written after it, across the rotations since
    when = dt.datetime.fromtimestamp(since).isoformat(timespec="milliseconds")
    after = printed(cli("logs", "chatty", "--since", when, check=True).out.splitlines())
    assert after == expected(6, 8), (after[:1], since, when, _listing(cli.home / "logs" / "chatty"),
                                     (cli.home / "daemon.log").read_text()[-3000:])

    # everything kept: the oldest lines were rotated out, none repeated, the newest all there
    whole = printed(cli("logs", "chatty", check=True).out.splitlines())
    assert whole == expected(0, 8)[-len(whole):] and len(whole) < len(expected(0, 8))


DAEMON_LOGGING = r"""
import logging, os, sys
from cortexd.logfiles import DaemonLogHandler

handler = DaemonLogHandler(sys.argv[1], max_bytes=2000, files=3, capture_std=True)
handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
logging.basicConfig(level=logging.INFO, handlers=[handler])
for i in range(300):
    logging.info("record %03d %s", i, "z" * 40)
    if i % 50 == 0:
        print(f"printed {i}", flush=True)  # bypasses logging, as a detached daemon's prints do
raise RuntimeError("a traceback printed at exit")
"""


def test_daemon_log_rotates_and_takes_stdout_and_stderr_with_it(tmp_path):
    log = tmp_path / "daemon.log"
    p = subprocess.run([sys.executable, "-c", DAEMON_LOGGING, str(log)], cwd=str(REPO), check=False,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == "" and p.stderr == ""  # all of it went to daemon.log
    parts = sorted(tmp_path.glob("daemon.log*"))
    assert [x.name for x in parts] == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    assert all(x.stat().st_size <= 2000 + 200 for x in parts), [x.stat().st_size for x in parts]
    newest = log.read_text()
    assert "record 299" in newest and "RuntimeError: a traceback printed at exit" in newest
    assert "printed 250" in "".join(x.read_text() for x in parts)  # in order, in the kept files
