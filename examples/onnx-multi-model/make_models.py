"""Writes the example's three ONNX iris models into models/<name>/<version>/iris.onnx.

    python make_models.py            # models/logreg/1, models/logreg/2, models/tree/1, models/tree-small/1
    python make_models.py --out DIR

Needs scikit-learn and skl2onnx (set-up only); reuses ../onnx-iris/make_model.py.
"""

import argparse
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "onnx-iris"))

from make_model import write_model

LAYOUT = [("logreg", 1, "logreg"), ("logreg", 2, "logreg"), ("tree", 1, "tree"), ("tree-small", 1, "tree")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(here, "models"))
    args = parser.parse_args()
    for name, version, kind in LAYOUT:
        path = os.path.join(args.out, name, str(version), "iris.onnx")
        accuracy = write_model(path, kind)
        print(f"wrote {path} (training accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
