"""Real SavedModels for the migration tests, made with TensorFlow and Keras (no weights fetched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

HALF_PLUS_TWO_VERSION = 123  # TF Serving's test data's version


def convert(*args: object) -> subprocess.CompletedProcess[str]:
    """``onnx-serving convert`` as a user runs it: the CLI, in its own process."""
    command = [sys.executable, "-m", "onnx_serving.server", "convert", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def converted_half_plus_two(root: Path) -> Path:
    """half_plus_two built under ``root``/saved and converted into ``root``/onnx; returns the
    converted model's base path."""
    half_plus_two(root / "saved" / "half_plus_two" / str(HALF_PLUS_TWO_VERSION))
    result = convert(root / "saved" / "half_plus_two", root / "onnx" / "half_plus_two")
    if result.returncode != 0:
        raise RuntimeError(f"convert failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    return root / "onnx" / "half_plus_two"


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

    keras.utils.set_random_seed(7)  # fixed weights: int8 quantization's error is checked
    image = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(image)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(image, keras.layers.Dense(10, activation="softmax")(x)).export(
        str(path), verbose=False
    )


def small_mobilenet(path: Path) -> None:
    """Keras 3's own MobileNetV2 (weights=None, 0.35 wide, 32 pixels): big enough that
    tf2onnx's two conversions of serve and serving_default differ in generated names."""
    import keras

    keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=4,
        classifier_activation=None,
    ).export(str(path), verbose=False)


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


def half_plus_two(path: Path) -> None:
    """TF Serving's half_plus_two test model, built the way its TF1 exporter builds it:
    y = 0.5 x + 2, y2 = 0.5 x + 3, y3 = 0.5 x2 + 3 over a placeholder of serialized
    tf.Example, with Predict's serving_default taking the parsed ``x`` directly."""
    v1 = tf.compat.v1
    builder = v1.saved_model.builder.SavedModelBuilder(str(path))
    with tf.Graph().as_default(), v1.Session() as session:
        a, b, c = (v1.Variable(v, name=n) for v, n in ((0.5, "a"), (2.0, "b"), (3.0, "c")))
        examples = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.parse_example(examples, {
            "x": v1.FixedLenFeature([1], tf.float32),
            "x2": v1.FixedLenFeature([1], tf.float32, default_value=[0.0]),
        })
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(a * x + b, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        a2, c2 = v1.Variable(0.5, name="a2"), v1.Variable(3.0, name="c2")
        y3 = tf.identity(a2 * x2 + c2, name="y3")
        session.run(v1.global_variables_initializer())
        info = v1.saved_model.utils.build_tensor_info
        constants = v1.saved_model.signature_constants

        def signature(inputs: dict, outputs: dict, method: str) -> object:
            return v1.saved_model.signature_def_utils.build_signature_def(
                {k: info(t) for k, t in inputs.items()},
                {k: info(t) for k, t in outputs.items()}, method)

        regress, classify = constants.REGRESS_METHOD_NAME, constants.CLASSIFY_METHOD_NAME
        builder.add_meta_graph_and_variables(session, [v1.saved_model.tag_constants.SERVING],
                                             signature_def_map={
            "regress_x_to_y": signature({"inputs": examples}, {"outputs": y}, regress),
            "regress_x_to_y2": signature({"inputs": examples}, {"outputs": y2}, regress),
            "regress_x2_to_y3": signature({"inputs": x2}, {"outputs": y3}, regress),
            "classify_x_to_y": signature({"inputs": examples}, {"scores": y}, classify),
            "serving_default": signature({"x": x}, {"y": y}, constants.PREDICT_METHOD_NAME),
        })
    builder.save()


def _tf1_export(path: Path, build: object) -> None:
    """A TF1 SavedModel: ``build(session)`` makes the graph and returns its signatures."""
    v1 = tf.compat.v1
    builder = v1.saved_model.builder.SavedModelBuilder(str(path))
    with tf.Graph().as_default(), v1.Session() as session:
        signatures = build(session)  # type: ignore[operator]
        session.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(
            session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
            main_op=v1.tables_initializer(),
        )
    builder.save()


def _signature(inputs: dict, outputs: dict, method: str) -> object:
    v1 = tf.compat.v1
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method
    )


def mnist_tutorial(path: Path) -> None:
    """The shape of TF Serving's mnist tutorial export (mnist_saved_model.py): softmax
    regression over 784 parsed floats; ``predict_images`` takes the parsed ``x``, the
    classify ``serving_default`` takes tf.Examples and maps top-k indices to class names
    through a lookup table. Random weights stand in for its training."""
    v1 = tf.compat.v1
    constants = v1.saved_model.signature_constants

    def build(session: object) -> dict:
        examples = v1.placeholder(tf.string, name="tf_example")
        parsed = v1.parse_example(examples, {"x": v1.FixedLenFeature([784], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        rng = np.random.default_rng(7)
        w = v1.Variable(rng.standard_normal((784, 10)).astype(np.float32) * 0.05)
        b = v1.Variable(rng.standard_normal(10).astype(np.float32) * 0.1)
        y = tf.nn.softmax(tf.matmul(x, w) + b, name="y")
        values, indices = tf.nn.top_k(y, 10)
        table = v1.lookup.StaticHashTable(v1.lookup.KeyValueTensorInitializer(
            tf.range(10, dtype=tf.int64), tf.constant([str(i) for i in range(10)])), "")
        classes = table.lookup(tf.cast(indices, tf.int64))
        return {
            "predict_images": _signature({"images": x}, {"scores": y},
                                         constants.PREDICT_METHOD_NAME),
            "serving_default": _signature({"inputs": examples},
                                          {"classes": classes, "scores": values},
                                          constants.CLASSIFY_METHOD_NAME),
        }

    _tf1_export(path, build)


def _estimator_features(examples: tf.Tensor) -> tf.Tensor:
    """What an Estimator's input layer makes of its tf.Examples: two numeric columns
    (one with a default) and a var-length id list, as [batch, 3] floats."""
    v1 = tf.compat.v1
    parsed = tf.io.parse_example(examples, {
        "age": v1.FixedLenFeature([1], tf.float32),
        "hours": v1.FixedLenFeature([1], tf.float32, default_value=[40.0]),
        "ids": v1.VarLenFeature(tf.int64),
    })
    ids = tf.cast(tf.sparse.to_dense(parsed["ids"]), tf.float32)
    return tf.concat([parsed["age"], parsed["hours"] / 10.0,
                      tf.reduce_sum(ids, axis=1, keepdims=True)], axis=1)


def estimator_classifier(path: Path) -> None:
    """An Estimator-style linear classifier export: serving_default and classification
    (Classify: classes, scores) and predict, all over serialized tf.Example."""
    v1 = tf.compat.v1
    constants = v1.saved_model.signature_constants

    def build(session: object) -> dict:
        examples = v1.placeholder(tf.string, shape=[None], name="input_example_tensor")
        features = _estimator_features(examples)
        w = v1.Variable([[0.3, -0.2], [0.1, 0.4], [-0.05, 0.2]], name="weights")
        logits = tf.matmul(features, w) + v1.Variable([0.1, -0.1], name="bias")
        scores = tf.nn.softmax(logits)
        classes = tf.tile(tf.constant([[b"0", b"1"]]), [tf.shape(logits)[0], 1])
        classify = _signature({"inputs": examples}, {"classes": classes, "scores": scores},
                              constants.CLASSIFY_METHOD_NAME)
        return {
            "serving_default": classify, "classification": classify,
            "predict": _signature({"examples": examples}, {
                "logits": logits, "probabilities": scores,
                "class_ids": tf.argmax(logits, axis=1)[:, None],
            }, constants.PREDICT_METHOD_NAME),
        }

    _tf1_export(path, build)


def estimator_regressor(path: Path) -> None:
    """An Estimator-style linear regressor export: serving_default and regression
    (Regress: outputs) and predict, all over serialized tf.Example."""
    v1 = tf.compat.v1
    constants = v1.saved_model.signature_constants

    def build(session: object) -> dict:
        examples = v1.placeholder(tf.string, shape=[None], name="input_example_tensor")
        features = _estimator_features(examples)
        predictions = tf.matmul(features, v1.Variable([[0.5], [0.25], [-0.125]])) + 1.0
        regress = _signature({"inputs": examples}, {"outputs": predictions},
                             constants.REGRESS_METHOD_NAME)
        return {
            "serving_default": regress, "regression": regress,
            "predict": _signature({"examples": examples}, {"predictions": predictions},
                                  constants.PREDICT_METHOD_NAME),
        }

    _tf1_export(path, build)


class _ParsingRegressor(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable([[0.5], [0.25], [-0.125]])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def regress(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": tf.matmul(_estimator_features(examples), self.w)}


def tf2_parsing_regressor(path: Path) -> None:
    """A TF2 export whose signature function parses tf.Example itself (ParseExampleV2
    inside a tf.function), with a regression method name, as TF2 users write them."""
    module = _ParsingRegressor()
    signature = module.regress.get_concrete_function()
    tf.saved_model.save(module, str(path), signatures={"serving_default": signature})


def half_plus_three(path: Path) -> None:
    """TF Serving's checked-in saved_model_half_plus_three in its shape: y = 0.5 x + 3 with
    ``x`` parsed from tf.Example (a [-1, 1] tensor), whose SignatureDef records ``x`` and
    ``y`` as scalars (its TensorInfos carry no tensor_shape), and a regress signature keyed
    "tensorflow/serving/regress". ``placeholder`` records a scalar too over a placeholder
    of shape [None]. TF Serving never checks the recorded shapes (its clients send [1]),
    nor dtypes: the regress signature records its tf.Example input as DT_FLOAT."""
    v1 = tf.compat.v1
    constants = v1.saved_model.signature_constants

    def scalar(signature: object) -> object:
        for side in (signature.inputs, signature.outputs):  # type: ignore[attr-defined]
            for info in side.values():
                info.tensor_shape.Clear()
        return signature

    def build(session: object) -> dict:
        examples = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.parse_example(examples, {"x": v1.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        a, b = v1.Variable(0.5, name="a"), v1.Variable(3.0, name="b")
        y = tf.identity(a * x + b, name="y")
        z = v1.placeholder(tf.float32, shape=[None], name="z")
        regress = _signature({"inputs": examples}, {"outputs": y}, constants.REGRESS_METHOD_NAME)
        regress.inputs["inputs"].dtype = tf.float32.as_datatype_enum  # type: ignore[attr-defined]
        return {
            "serving_default": scalar(_signature({"x": x}, {"y": y},
                                                 constants.PREDICT_METHOD_NAME)),
            "placeholder": scalar(_signature({"z": z}, {"y": a * z + b},
                                             constants.PREDICT_METHOD_NAME)),
            constants.REGRESS_METHOD_NAME: regress,
        }

    _tf1_export(path, build)


def classify_as_string(path: Path) -> None:
    """A TF1 classify signature whose ``classes`` are ``tf.strings.as_string`` of the
    ``top_k`` indices (the mnist tutorial's shape, without its lookup table)."""
    v1 = tf.compat.v1
    constants = v1.saved_model.signature_constants

    def build(session: object) -> dict:
        examples = v1.placeholder(tf.string, shape=[None], name="tf_example")
        x = v1.parse_example(examples, {"x": v1.FixedLenFeature([4], tf.float32)})["x"]
        w = v1.Variable(np.random.default_rng(7).standard_normal((4, 5)).astype(np.float32))
        scores, indices = tf.nn.top_k(tf.nn.softmax(tf.matmul(x, w)), 3)
        classify = _signature({"inputs": examples},
                              {"classes": tf.strings.as_string(indices), "scores": scores},
                              constants.CLASSIFY_METHOD_NAME)
        return {"serving_default": classify}

    _tf1_export(path, build)
