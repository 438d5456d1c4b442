import json
import os

import numpy as np

# variables declared in global scope can be used in both functions
model = {}


def init(metadata):
    with open(os.path.join(os.path.dirname(__file__), metadata["model"])) as f:
        model.update(json.load(f))


def predict(sample, metadata):
    x = np.array([float(sample[name]) for name in model["features"]])
    scores = np.array(model["coef"]) @ x + np.array(model["intercept"])
    return model["labels"][int(np.argmax(scores))]
