"""/mnt/project in a replica: the note added to a predictor's traceback when it is not there.

Cortex mounted the project at /mnt/project, and Cortex-era predictors open files there by
absolute path. Where cortexd could not put the project there (the process backend without
namespaces: cortexd/backends/project_mount.py), the daemon sets UNAVAILABLE_ENV to the reason,
and a failure whose exceptions include a FileNotFoundError naming /mnt/project gets a note
saying so and what to do, under its traceback in the replica's log (which `cortexd get` shows
for a failed __init__).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Mapping

MOUNT_POINT = "/mnt/project"
UNAVAILABLE_ENV = "CORTEXD_MNT_PROJECT_UNAVAILABLE"
NAMESPACE_ENV = "CORTEXD_MNT_PROJECT_NAMESPACE"  # the namespace to enter first (mnt_namespace.py)
PROJECT_DIR_ENV = "CORTEX_PROJECT_DIR"  # Cortex set it (to /mnt/project); cortexd: the project folder
REMEDY = ("use the Docker backend (`--backend docker`), which mounts the project at /mnt/project, or "
          "open the project's files by relative paths (the working directory is the project folder) "
          "or under os.environ['CORTEX_PROJECT_DIR']")


# /mnt/project itself or a path under it, in a filename or a library's message
_MOUNT_POINT_PATH = re.compile(re.escape(MOUNT_POINT) + r"(?=$|[/'\"\s:,)])")


def _names_mount_point(e: FileNotFoundError) -> bool:
    named = [e.filename, e.filename2, str(e)]
    return any(_MOUNT_POINT_PATH.search(str(n)) for n in named if n is not None)


def missing_mount_point(exc: BaseException | None) -> bool:
    """Whether `exc` or an exception it was raised from or while handling is a FileNotFoundError
    naming a /mnt/project path."""
    seen = 0
    while exc is not None and seen < 32:  # a bounded walk: chains can be cyclic
        if isinstance(exc, FileNotFoundError) and _names_mount_point(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def note(exc: BaseException | None, environ: Mapping[str, str]) -> str | None:
    """The note for a failure raising `exc` in a replica whose environment is `environ`, or None."""
    reason = environ.get(UNAVAILABLE_ENV)
    if not reason or not missing_mount_point(exc):
        return None
    return (f"note: /mnt/project (where Cortex mounted the project) is not available to this replica: "
            f"{reason}; {REMEDY}.")


def failure_text() -> str:
    """The exception being handled, formatted (traceback.format_exc), with the note when it applies."""
    text = traceback.format_exc().rstrip()
    added = note(sys.exc_info()[1], os.environ)
    return f"{text}\n{added}" if added else text
