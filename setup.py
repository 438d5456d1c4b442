from setuptools import setup

# Metadata lives in setup.cfg; config_schema.json ships inside the package
# (copied at build time) so a non-editable install finds it.
import os
import shutil

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "config_schema.json")
dst = os.path.join(here, "cortexd", "config_schema.json")
if os.path.exists(src) and (
    not os.path.exists(dst) or open(src, "rb").read() != open(dst, "rb").read()
):
    shutil.copyfile(src, dst)

setup()
