"""Re-creates model.json: a logistic regression on scikit-learn's bundled iris data.

Run `python train.py` (needs scikit-learn; no download: the data ships with it).
The predictor itself needs only numpy, so the example serves on a fresh machine.
"""

import json

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

iris = load_iris()
model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
print(f"training accuracy: {model.score(iris.data, iris.target):.3f}")
with open("model.json", "w") as f:
    json.dump(
        {
            "features": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
            "labels": list(iris.target_names),
            "coef": model.coef_.round(6).tolist(),
            "intercept": model.intercept_.round(6).tolist(),
        },
        f,
        indent=2,
    )
