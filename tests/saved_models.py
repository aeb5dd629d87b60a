"""Real SavedModels for the migration tests, made with TensorFlow and Keras (no weights fetched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2


class MultiSignature(tf.Module):
    """serving_default (float), "strings" (a string and an int64 input) and "bessel",
    whose op tf2onnx cannot convert."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(np.arange(9, dtype=np.float32).reshape(3, 3) / 10)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.w) + 1.0, "total": tf.reduce_sum(x, axis=1)}

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="text"), tf.TensorSpec([None], tf.int64, name="ids"),
    ])
    def strings(self, text: tf.Tensor, ids: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"echo": tf.identity(text), "doubled": ids * 2}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def bessel(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.math.special.bessel_i0e(x)}


def multi_signature(path: Path, *, with_unconvertible: bool = False) -> None:
    module = MultiSignature()
    signatures = {"serving_default": module.predict, "strings": module.strings}
    if with_unconvertible:
        signatures["bessel"] = module.bessel
    tf.saved_model.save(module, str(path), signatures=signatures)


def keras_named_inputs(path: Path) -> None:
    import keras

    features = keras.Input((4,), name="features")
    mask = keras.Input((4,), name="mask")
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Multiply()([features, mask]))
    model = keras.Model({"features": features, "mask": mask}, keras.layers.Dense(2)(hidden))
    model.export(str(path), verbose=False)


def small_cnn(path: Path) -> None:
    import keras

    image = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(image)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(image, keras.layers.Dense(10, activation="softmax")(x)).export(
        str(path), verbose=False
    )


def lstm(path: Path) -> None:
    import keras

    sequence = keras.Input((10, 8), name="sequence")
    x = keras.layers.LSTM(16)(sequence)
    keras.Model(sequence, keras.layers.Dense(3)(x)).export(str(path), verbose=False)


def transformer_block(path: Path) -> None:
    import keras

    tokens = keras.Input((16, 32), name="tokens")
    attended = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8)(tokens, tokens)
    x = keras.layers.LayerNormalization()(tokens + attended)
    # tanh-approximated GELU: the exact one needs Erfc, which tf2onnx 1.17 cannot convert.
    gelu = keras.layers.Activation(lambda t: keras.activations.gelu(t, approximate=True))
    ffn = keras.layers.Dense(32)(gelu(keras.layers.Dense(64)(x)))
    out = keras.layers.LayerNormalization()(x + ffn)
    keras.Model(tokens, out).export(str(path), verbose=False)


def add_warmup(version_dir: Path, inputs: dict[str, np.ndarray]) -> None:
    """A warmup file as TF Serving users write it: TFRecordWriter and PredictionLog."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    folder = version_dir / "assets.extra"
    folder.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(folder / "tf_serving_warmup_requests")) as writer:
        writer.write(log.SerializeToString())
