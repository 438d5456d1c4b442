# Cortex 0.23's TensorFlow iris predictor, unchanged: the payload dict is the model input,
# and outputs come back as flat lists keyed by output name.
labels = ["setosa", "versicolor", "virginica"]


class TensorFlowPredictor:
    def __init__(self, tensorflow_client, config):
        self.client = tensorflow_client

    def predict(self, payload):
        prediction = self.client.predict(payload)
        predicted_class_id = int(prediction["class_ids"][0])
        return labels[predicted_class_id]
