import json
import os

import numpy as np


class PythonPredictor:
    def __init__(self, config):
        with open(os.path.join(os.path.dirname(__file__), config["model"])) as f:
            model = json.load(f)
        self.features = model["features"]
        self.labels = model["labels"]
        self.coef = np.array(model["coef"])
        self.intercept = np.array(model["intercept"])

    def predict(self, payload):
        x = np.array([float(payload[name]) for name in self.features])
        scores = self.coef @ x + self.intercept
        return self.labels[int(np.argmax(scores))]
