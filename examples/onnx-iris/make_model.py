"""Writes the example's ONNX model: a logistic regression on scikit-learn's bundled iris data.

    python make_model.py                      # -> model/iris.onnx (next to this file)
    python make_model.py --out DIR --version 2  # -> DIR/2/iris.onnx

Needs scikit-learn and skl2onnx (set-up only; the API itself needs onnxruntime).
No download: the iris data ships with scikit-learn. The model takes one input
"input" of shape [N, 4] (float) and returns [label (int64 [N]), probabilities
(float [N, 3])], so a predictor reads the class id as prediction[0][0].
"""

import argparse
import os

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeClassifier

MODELS = {
    "logreg": lambda: LogisticRegression(max_iter=1000),
    "tree": lambda: DecisionTreeClassifier(max_depth=4, random_state=0),
    # a heavier model of the same interface (two 256-unit layers), for benchmarks
    "mlp": lambda: MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=300, random_state=0),
    "mlp-large": lambda: MLPClassifier(hidden_layer_sizes=(1024, 1024, 1024), max_iter=50, random_state=0),
}


def write_model(path: str, kind: str = "logreg") -> float:
    """Train `kind` on iris, write it as ONNX to `path`; returns the training accuracy."""
    iris = load_iris()
    x = iris.data.astype(np.float32)
    model = MODELS[kind]().fit(x, iris.target)
    onx = convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 4]))],
                          options={id(model): {"zipmap": False}})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(onx.SerializeToString())
    os.replace(tmp, path)
    return float(model.score(x, iris.target))


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(here, "model"), help="model folder (default: ./model)")
    parser.add_argument("--version", type=int, help="write into the integer version subfolder OUT/VERSION")
    parser.add_argument("--kind", choices=sorted(MODELS), default="logreg")
    args = parser.parse_args()
    folder = os.path.join(args.out, str(args.version)) if args.version else args.out
    accuracy = write_model(os.path.join(folder, "iris.onnx"), args.kind)
    print(f"wrote {os.path.join(folder, 'iris.onnx')} (training accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
