"""Metadata lives in setup.cfg.

Two source-tree resources ship inside the `cortexd` package so that a
non-editable install finds them: config_schema.json (the spec schema) and
docker/ (the predictor images' Dockerfiles and the offline-base script). They
are copied into cortexd/ at build time; the copies are git-ignored.
"""

import os
import shutil

from setuptools import setup

here = os.path.dirname(os.path.abspath(__file__))


def _same(a: str, b: str) -> bool:
    if not os.path.exists(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def _copy_resources() -> None:
    src = os.path.join(here, "config_schema.json")
    dst = os.path.join(here, "cortexd", "config_schema.json")
    if os.path.exists(src) and not _same(src, dst):
        shutil.copyfile(src, dst)
    docker_src = os.path.join(here, "docker")
    docker_dst = os.path.join(here, "cortexd", "docker")
    if os.path.isdir(docker_src):
        shutil.rmtree(docker_dst, ignore_errors=True)
        shutil.copytree(docker_src, docker_dst)


_copy_resources()
setup()
