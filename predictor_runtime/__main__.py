"""`python -m predictor_runtime --spec SPEC.json --host HOST --port PORT` (see server.main)."""

import os
import sys

from predictor_runtime.mnt_project import NAMESPACE_ENV

if os.environ.get(NAMESPACE_ENV):
    # /mnt/project for a non-root daemon's replica (mnt_namespace.py): before the server's
    # imports, as a user namespace needs a process of one thread
    from predictor_runtime.mnt_namespace import enter_from_environ

    enter_from_environ(os.environ)

from predictor_runtime.server import main

if __name__ == "__main__":
    sys.exit(main())
