"""One API's predictor attacks another project's API on the same root daemon (issue 15).

Before, every process replica of a root daemon ran as `nobody`: a predictor SIGKILLed another
API's replicas, wrote a `.pth` into its environment (its `.env` secret went out on the next
restart), poisoned the host-wide uv cache (a project deployed later ran its code), and read
and wrote other APIs' TMPDIR, HOME and runtime specs; nothing bounded its processes or memory.

Here an attacker predictor tries each of those moves against a victim API of another project
(and to write its own project through /mnt/project, where Cortex put it: issue 17),
while a client sends the victim requests the whole time. Every move must be refused, the victim
must answer every request, a restarted victim and a project deployed afterwards must not run
anything the attacker planted, and the attacker's processes and memory stop at its limits.

The daemon runs as root from a venv of the system's Python (the `system_venv` fixture): that is
what lets a root daemon give replicas uids of their own (pyenv's Python, under /root, cannot be
run by them; the quickstart tests cover that case).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.builders import write_project
from tests.newcomer import fresh_root
from tests.real_daemon import CLI, free_port, http, post_json

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon drops privileges; this is its test")

ATTACKER = r'''
import ctypes, glob, json, os, signal, sys, time


def victims(uid):
    """Every process of the victim API (of that uid): its cmdline names its spec."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"--spec" in args and b"cortexd-replica-victim-" in args[args.index(b"--spec") + 1] \
                and status_uid(entry) == uid:
            found[int(entry)] = [a.decode() for a in args if a]
    return found


def attempt(action):
    try:
        action()
        return "done"
    except OSError as e:
        return f"refused: {type(e).__name__}"


def write(path, text="x"):
    with open(path, "w") as f:
        f.write(text)


MS_REMOUNT, MS_BIND, MNT_DETACH = 0x20, 0x1000, 2


def syscall(result):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def status_uid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])


PLANT = "import os; os.environ['CXD_PWNED'] = 'yes'\n"
HOG = """
with open("/proc/self/oom_score_adj", "w") as f:
    f.write("1000")
block = bytearray(4 * 2**30)
for i in range(0, len(block), 4096):
    block[i] = 1
"""


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        out = {"uid": os.getuid(), "moves": {}}
        moves = out["moves"]
        victim_uid = payload["victim_uid"]
        procs = victims(victim_uid)
        out["victims"] = len(procs)
        pid, args = next(iter(procs.items()))
        # 1. kill the victim's replicas, in a loop
        outcome = set()
        for _ in range(20):
            for p in victims(victim_uid):
                outcome.add(attempt(lambda: os.kill(p, signal.SIGKILL)))
            time.sleep(0.05)
        moves["kill"] = sorted(outcome)
        # 2. its environment variables (its .env secret)
        moves["environ"] = attempt(lambda: open(f"/proc/{pid}/environ", "rb").read())
        # 3. its runtime spec (predictor.config's values)
        spec = args[args.index("--spec") + 1]
        moves["spec"] = attempt(lambda: open(spec).read())
        # 4. its TMPDIR: read and write
        tmp = os.path.join(os.path.dirname(spec), "tmp")
        moves["tmpdir_list"] = attempt(lambda: os.listdir(tmp))
        moves["tmpdir_write"] = attempt(lambda: write(os.path.join(tmp, "planted")))
        # 5. its HOME (named by its uid next to ours): read and write
        homes = os.path.dirname(os.environ["HOME"])
        victim_home = os.path.join(homes, str(victim_uid))
        moves["homes_list"] = attempt(lambda: os.listdir(homes))
        moves["home_list"] = attempt(lambda: os.listdir(victim_home))
        moves["home_write"] = attempt(lambda: write(os.path.join(victim_home, "planted")))
        # 6. a .pth into its environment (runs at its next start)
        env = os.path.dirname(os.path.dirname(args[0]))
        sites = glob.glob(os.path.join(env, "lib", "python*", "site-packages"))
        out["victim_site"] = sites
        moves["pth"] = attempt(lambda: write(os.path.join(sites[0], "cxd_pwned.pth"), PLANT))
        moves["sitecustomize"] = attempt(lambda: write(os.path.join(sites[0], "sitecustomize.py"), PLANT))
        # 7. the environment cache: a file next to the environments, a build's home
        cache = os.path.dirname(os.path.realpath(env))
        moves["cache_write"] = attempt(lambda: write(os.path.join(cache, "planted")))
        moves["builds_list"] = attempt(lambda: os.listdir(os.path.join(cache, ".builds")))
        moves["shared_installer_home"] = attempt(lambda: write(os.path.join(cache, ".home", "planted")))
        moves["root_uv_cache"] = attempt(lambda: os.makedirs("/root/.cache/uv/planted", exist_ok=True))
        # 8. its own project, through /mnt/project (issue 17): write it, remount it writable, unmount it
        libc = ctypes.CDLL(None, use_errno=True)
        moves["mnt_project_write"] = attempt(lambda: write("/mnt/project/planted"))
        moves["mnt_project_remount"] = attempt(lambda: syscall(libc.mount(
            None, b"/mnt/project", None, MS_REMOUNT | MS_BIND, None)))
        moves["mnt_project_umount"] = attempt(lambda: syscall(libc.umount2(b"/mnt/project", MNT_DETACH)))
        # 9. processes: as many as it can (its pids limit stops it)
        children = []
        try:
            for _ in range(1000):
                children.append(os.posix_spawn("/bin/sleep", ["sleep", "120"], {}))
        except OSError as e:
            out["fork_error"] = type(e).__name__
        out["forked"] = len(children)
        for child in children:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        # 10. memory: a process of its own takes 4x compute.mem (the kernel's OOM killer stops it;
        # it offers itself first, so the worker lives to answer). Spawned, not forked: a fork of
        # this threaded worker could deadlock on a lock another thread held
        hog = os.posix_spawn(sys.executable, [sys.executable, "-c", HOG], dict(os.environ))
        _, status = os.waitpid(hog, 0)
        out["hog"] = "killed" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else "allocated"
        return out
'''

VICTIM = '''
import os


class PythonPredictor:
    def __init__(self, config):
        self.token = config["token"]
        with open(os.path.join(os.environ["HOME"], "victim-data"), "w") as f:
            f.write("mine")

    def predict(self, payload):
        return {"uid": os.getuid(), "pwned": os.environ.get("CXD_PWNED"), "version": VERSION}


VERSION = 1
'''

LATER = '''
import os
import six  # from its own requirements.txt: a build after the attack


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"uid": os.getuid(), "pwned": os.environ.get("CXD_PWNED"), "six": six.__version__}
'''


def api_yaml(name: str, path: str, port: int, extra: str = "") -> str:
    return (f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: {path}\n"
            f"{extra}  networking:\n    local_port: {port}\n")


def readable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.xdist_group("newcomer")  # system_venv's `pip install .`: once, never beside another
def test_an_attacker_predictor_cannot_touch_another_projects_api(system_venv):
    root = fresh_root("cxd-attack-")
    home = Path(root / "home")
    cli = CLI(home, program=[str(system_venv / "cortexd")])
    victim_port, attacker_port, later_port = free_port(), free_port(), free_port()
    victim = write_project(root / "victim", api_yaml(
        "victim", "predictor.py", victim_port,
        "    config:\n      token: config-secret\n"), {
        "predictor.py": VICTIM, ".env": "VICTIM_SECRET=dotenv-secret\n",
        "requirements.txt": "packaging\n"})
    attacker = write_project(root / "attacker", api_yaml(
        "attacker", "predictor.py", attacker_port) + "  compute:\n    mem: 1G\n", {"predictor.py": ATTACKER})
    readable(root)
    served: list[int] = []
    stop = threading.Event()
    try:
        up = cli("up", "-d", "--backend", "process", "--wait", "120", str(victim), timeout=180)
        assert up.code == 0, up.out + up.err + cli.daemon_log()
        deployed = cli("deploy", str(attacker), timeout=180)
        assert deployed.code == 0, deployed.out + deployed.err
        cli.wait_for(lambda s: all(a["status"] == "live" for a in s["apis"]) and len(s["apis"]) == 2,
                     timeout=120, what="both APIs live")
        before = json.loads(post_json(f"http://127.0.0.1:{victim_port}/victim", {})[2])

        def client() -> None:
            while not stop.is_set():
                served.append(post_json(f"http://127.0.0.1:{victim_port}/victim", {}, timeout=30)[0])
                time.sleep(0.02)

        sender = threading.Thread(target=client, daemon=True)
        sender.start()
        status, _, body = post_json(f"http://127.0.0.1:{attacker_port}/attacker",
                                    {"victim_uid": before["uid"]}, timeout=120)
        stop.set()
        sender.join(60)
        assert status == 200, body
        seen = json.loads(body)
        victim_api, attacker_api = cli.api("victim"), cli.api("attacker")

        # each API a uid of its own, from the dynamic range, never root
        assert seen["uid"] != before["uid"] and min(seen["uid"], before["uid"]) >= 70000, seen
        assert victim_api["isolation"]["isolated"] and attacker_api["isolation"]["isolated"]
        assert seen["victims"] >= 1
        # every move refused
        moves = seen["moves"]
        assert moves["kill"] == ["refused: PermissionError"], moves
        for move, outcome in moves.items():
            if move != "kill":
                assert outcome.startswith("refused"), (move, outcome, seen)
        # the victim answered every request meanwhile, and never restarted
        assert served and set(served) == {200}, served
        assert victim_api["replicas"]["restarts"] == 0 and victim_api["status"] == "live"
        # limits: its processes stop at the pids limit, its memory at compute.mem
        assert "pids" in attacker_api["isolation"]["limits"]
        if "cgroup" in attacker_api["isolation"]["limits"]["pids"]:
            assert seen["forked"] < 1000 and seen.get("fork_error") == "BlockingIOError", seen
        if "cgroup" in attacker_api["isolation"]["limits"]["memory"]:
            assert seen["hog"] == "killed", seen

        # the victim restarted (a new version rolls out) runs nothing the attacker planted
        (victim / "predictor.py").write_text(VICTIM.replace("VERSION = 1", "VERSION = 2"))
        deadline = time.monotonic() + 120
        after = before
        while time.monotonic() < deadline and after.get("version") != 2:
            code, _, raw = post_json(f"http://127.0.0.1:{victim_port}/victim", {}, timeout=30)
            after = json.loads(raw) if code == 200 else after
            time.sleep(0.2)
        assert after["version"] == 2 and after["pwned"] is None, after
        # nor does a project deployed afterwards, with a build of its own
        later = write_project(root / "later", api_yaml("later", "predictor.py", later_port),
                              {"predictor.py": LATER, "requirements.txt": "six==1.16.0\n"})
        readable(later)
        deployed = cli("deploy", str(later), timeout=300)
        assert deployed.code == 0, deployed.out + deployed.err
        cli.wait_for(lambda s: any(a["name"] == "later" and a["status"] == "live" for a in s["apis"]),
                     timeout=300, what="the later project live")
        code, _, raw = http("POST", f"http://127.0.0.1:{later_port}/later", b"{}",
                            {"Content-Type": "application/json"})
        later_seen = json.loads(raw)
        assert code == 200 and later_seen["pwned"] is None and later_seen["six"] == "1.16.0", later_seen
        assert later_seen["uid"] not in (seen["uid"], before["uid"])
    finally:
        stop.set()
        if (home / "cortexd.sock").exists():
            cli("down", timeout=90)
        shutil.rmtree(root, ignore_errors=True)
