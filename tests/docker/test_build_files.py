"""What `cortexd build` puts in an image, read back from the image as its predictor's user sees it:
modes kept (an executable stays one, a 0600 file is readable by the predictor and no one else),
links inside the project kept as links, and the project at /mnt/project too, where Cortex put it.
A link out of the project is refused before any build:
tests/unit/test_kube_bundle.py, tests/integration/test_export_cli.py.
"""

from __future__ import annotations

import json
import re

from tests.builders import write_project

PREDICTOR = """\
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return 1
"""
CONFIG = "- name: files\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
PROBE = """
import json, os, stat, subprocess
p = "/opt/cortexd/project"
def mode(f):
    st = os.stat(f)
    return [oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid]
print(json.dumps({
    "tool": mode(p + "/bin/tool"), "secret": mode(p + "/secret.json"), "plain": mode(p + "/predictor.py"),
    "ran": subprocess.run([p + "/bin/tool"], capture_output=True, text=True).stdout.strip(),
    "secret_read": open(p + "/secret.json").read(),
    "link": os.readlink(p + "/labels"), "via_link": open(p + "/labels/labels.txt").read(),
    "mnt_project": open("/mnt/project/data/labels.txt").read(),  # where Cortex put the project
}))
"""


def test_a_built_image_keeps_modes_and_links(cli, docker_client, base_image, shared_dir):
    project = write_project(shared_dir / "build-files", CONFIG, {
        "predictor.py": PREDICTOR, "secret.json": '{"k": 1}'})
    (project / "bin").mkdir()
    (project / "bin" / "tool").write_text("#!/bin/sh\necho tool-ran\n")
    (project / "data").mkdir()
    (project / "data" / "labels.txt").write_text("setosa")
    (project / "labels").symlink_to("data")
    for p in [project, *project.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    (project / "bin" / "tool").chmod(0o755)
    (project / "secret.json").chmod(0o600)
    built = cli("build", str(project), "--registry", "127.0.0.1:5000/cortexd-tests", "--base-image", base_image,
                timeout=600)
    assert built.code == 0, built.out[-3000:] + built.err
    (image,) = re.findall(r"api 'files': (\S+:[0-9a-f]{12})$", built.out, re.MULTILINE)
    try:
        out = docker_client.containers.run(image, entrypoint=["python", "-c", PROBE], user="10001:10001",
                                           remove=True, network_disabled=True)
        seen = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        docker_client.images.remove(image, force=True)
    assert seen["tool"] == ["0o755", 0, 10001] and seen["ran"] == "tool-ran"
    assert seen["secret"] == ["0o640", 0, 10001] and seen["secret_read"] == '{"k": 1}'  # not 0644
    assert seen["plain"] == ["0o644", 0, 10001]
    assert seen["link"] == "data" and seen["via_link"] == "setosa"
    assert seen["mnt_project"] == "setosa"
