# Several ONNX models behind one API: ?model=NAME (&version=N) picks one, as in Cortex 0.23's
# multi-model examples. With cache_size 2 and three models, the least recently used one is
# unloaded when a third is asked for (GET on the endpoint shows which are in memory).
labels = ["setosa", "versicolor", "virginica"]


class ONNXPredictor:
    def __init__(self, onnx_client, config):
        self.client = onnx_client

    def predict(self, payload, query_params):
        model_name = query_params.get("model", "logreg")
        model_version = query_params.get("version", "latest")
        model_input = [payload["sepal_length"], payload["sepal_width"],
                       payload["petal_length"], payload["petal_width"]]
        prediction = self.client.predict(model_input, model_name, model_version)
        return {"model": model_name, "version": model_version, "label": labels[prediction[0][0]]}
