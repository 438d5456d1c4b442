"""`python -m predictor_runtime --spec SPEC.json --host HOST --port PORT` (see server.main)."""

import sys

from predictor_runtime.server import main

if __name__ == "__main__":
    sys.exit(main())
