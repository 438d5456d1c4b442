"""Writes the example's TensorFlow SavedModel: a logistic regression on scikit-learn's iris data.

    python make_model.py                        # -> model/ (next to this file)
    python make_model.py --out DIR --version 2  # -> DIR/2/

Needs scikit-learn and tensorflow (set-up only). No download: the iris data
ships with scikit-learn. The weights are fitted with scikit-learn and put in a
tf.Module whose serving signature takes one float input per feature
(sepal_length, sepal_width, petal_length, petal_width; shape [N]) and returns
class_ids (int64 [N, 1]) and probabilities (float [N, 3]), like the canned
estimator Cortex's TensorFlow iris example used.
"""

import argparse
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class IrisModel(tf.Module):
    def __init__(self, coef: np.ndarray, intercept: np.ndarray):
        super().__init__()
        self.w = tf.Variable(coef.T.astype(np.float32))
        self.b = tf.Variable(intercept.astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name=n) for n in FEATURES])
    def serve(self, sepal_length, sepal_width, petal_length, petal_width):
        x = tf.stack([sepal_length, sepal_width, petal_length, petal_width], axis=1)
        probabilities = tf.nn.softmax(tf.matmul(x, self.w) + self.b)
        class_ids = tf.expand_dims(tf.argmax(probabilities, axis=1), 1)
        return {"class_ids": class_ids, "probabilities": probabilities}


def write_model(folder: str) -> float:
    """Train on iris, save the SavedModel into `folder` (replaced atomically); returns the accuracy."""
    iris = load_iris()
    model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
    module = IrisModel(model.coef_, model.intercept_)
    tmp = folder.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
    os.replace(tmp, folder)
    return float(model.score(iris.data, iris.target))


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(here, "model"), help="model folder (default: ./model)")
    parser.add_argument("--version", type=int, help="write into the integer version subfolder OUT/VERSION")
    args = parser.parse_args()
    folder = os.path.join(args.out, str(args.version)) if args.version else args.out
    accuracy = write_model(folder)
    print(f"wrote {folder} (training accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
