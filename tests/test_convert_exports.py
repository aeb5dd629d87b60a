"""Export shapes that once failed to convert, converted with the real ``onnx-serving
convert``, served, and asked with the real tensorflow-serving-api client; answers compared
with TensorFlow's:

- TF Serving's saved_model_half_plus_three: its SignatureDef records scalars over a graph
  that takes [-1, 1] (and a placeholder of [None]);
- a TF1 classify signature whose ``classes`` are ``tf.strings.as_string`` of top_k indices;
- ``tf.Module``s holding Keras layers as attributes: a JPEG classifier (decoding in a
  map_fn), and a small detector ending in ``combined_non_max_suppression``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from onnx_serving.migration.saved_model import TensorFlowRunner
from tests import saved_models, tf_op_models
from tests.saved_models import HALF_PLUS_TWO_VERSION, convert
from tests.server_process import ServerProcess

MODELS: dict[str, Callable[[Path], None]] = {
    "half_plus_three": saved_models.half_plus_three,
    "classify": saved_models.classify_as_string,
    "keras_jpeg": tf_op_models.keras_jpeg_classifier,
    "detector": tf_op_models.keras_detector,
}
Stub = prediction_service_pb2_grpc.PredictionServiceStub


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def served(root: Path) -> Iterator[tuple[Stub, str]]:
    """The exports built under ``root``/saved (version 123), converted in one run of the
    CLI from a TF Serving config, and served; yields a stub and the CLI's summary."""
    for name, build in MODELS.items():
        build(root / "saved" / name / str(HALF_PLUS_TWO_VERSION))
    config = root / "tf_serving.config"
    config.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{n}" base_path: "{root / "saved" / n}" model_platform: "tensorflow" }}'
        for n in MODELS) + " }")
    result = convert(f"--model_config_file={config}", f"--output_dir={root / 'onnx'}")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    server = ServerProcess([f"--model_config_file={root / 'onnx' / 'models.config'}"],
                           root / "server.log").start()
    with grpc.insecure_channel(server.address) as channel:
        yield Stub(channel), result.stdout
    server.stop()


def tensorflow(root: Path, model: str) -> TensorFlowRunner:
    """The SavedModel run as TF Serving runs it (its graph in a session)."""
    return TensorFlowRunner(root / "saved" / model / str(HALF_PLUS_TWO_VERSION))


def predict(stub: Stub, model: str, signature: str = "serving_default",
            **inputs: object) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return {k: tf.make_ndarray(v) for k, v in stub.Predict(request, 30).outputs.items()}


def example(**features: list[float]) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(float_list=tf.train.FloatList(value=v)) for k, v in features.items()
    }))


def test_half_plus_three_answers_as_tf_serving(served, root) -> None:
    """tensorflow_model_server_test.py's testGoodModelConfig: x = [2.0] (shape [1]) → 4.0,
    though the signature records x as a scalar and the graph takes [-1, 1]."""
    stub, _ = served
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_three"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], shape=[1]))
    response = stub.Predict(request, 30)
    assert list(response.outputs["y"].float_val) == [4.0]
    runner = tensorflow(root, "half_plus_three")
    for x in ([2.0], [1.0, 2.0, 5.0], [[1.0], [3.0]]):
        value = np.array(x, np.float32)
        assert predict(stub, "half_plus_three", x=value)["y"].tolist() == \
            runner.run("serving_default", {"x": value})["y"].tolist()
    z = np.array([1.0, -4.0], np.float32)
    assert predict(stub, "half_plus_three", "placeholder", z=z)["y"].tolist() == \
        runner.run("placeholder", {"z": z})["y"].tolist()


def test_half_plus_three_metadata_keeps_the_recorded_scalars(served, root) -> None:
    stub, _ = served
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_three"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(request, 30).metadata["signature_def"].Unpack(signatures)
    for name, signature in tensorflow(root, "half_plus_three").signature_defs.items():
        for side in ("inputs", "outputs"):
            for alias, info in getattr(signature, side).items():
                assert getattr(signatures.signature_def[name], side)[alias].tensor_shape == \
                    info.tensor_shape, (name, alias)


def test_half_plus_three_regress(served) -> None:
    """testRegress's request, on half_plus_three's regress signature: x = 2.0 → 4.0, though
    the signature records its serialized tf.Example input as DT_FLOAT."""
    stub, summary = served
    assert ("signature tensorflow/serving/regress: inputs is recorded as DT_FLOAT, but its "
            "tensor tf_example:0 is DT_STRING") in summary
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_three"
    request.model_spec.signature_name = "tensorflow/serving/regress"
    request.input.example_list.examples.add().CopyFrom(example(x=[2.0]))
    assert [r.value for r in stub.Regress(request, 30).result.regressions] == [4.0]


def test_classes_from_as_string_answer_as_tensorflow(served, root) -> None:
    stub, summary = served
    assert "| classify | 123 | converted |" in summary
    rng = np.random.default_rng(5)
    examples = [example(x=rng.standard_normal(4).tolist()) for _ in range(3)]
    expected = tensorflow(root, "classify").run("serving_default", {"inputs": np.array(
        [e.SerializeToString() for e in examples], dtype=object)})
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "classify"
    for e in examples:
        request.input.example_list.examples.add().CopyFrom(e)
    result = stub.Classify(request, 30).result
    got = [[(c.label, c.score) for c in row.classes] for row in result.classifications]
    assert [[label for label, _ in row] for row in got] == \
        [[c.decode() for c in row] for row in expected["classes"].tolist()]
    np.testing.assert_allclose([[s for _, s in row] for row in got], expected["scores"],
                               rtol=1e-5)


def test_keras_layers_in_a_module_answer_as_tensorflow(served, root) -> None:
    """JPEG bytes as TF Serving's ResNet client sends them; the reference is TensorFlow's
    eager loader (TF Serving's own graph run fails on this export: keras#20095)."""
    stub, _ = served
    images = tf_op_models.jpegs(3, seed=4)
    signature = tf.saved_model.load(
        str(root / "saved" / "keras_jpeg" / str(HALF_PLUS_TWO_VERSION))
    ).signatures["serving_default"]
    expected = {k: v.numpy() for k, v in signature(image_bytes=tf.constant(images)).items()}
    got = predict(stub, "keras_jpeg", image_bytes=np.array(images, dtype=object))
    assert got["classes"].tolist() == expected["classes"].tolist()
    # TensorFlow's JPEG decoding and the server's agree exactly (docs/migration.md);
    # resize and the layers convert within float rounding.
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-5)
    assert np.ptp(expected["probabilities"], axis=0).max() > 1e-3  # the images tell apart


def detections(outputs: dict[str, np.ndarray], item: int) -> tuple[list[tuple], list[np.ndarray]]:
    """One image's valid detections as a sorted list of (box, score, class) rows, rounded
    (combined NMS orders equal scores as it finds them), and its padding rows."""
    valid = int(outputs["num_detections"][item])
    rows = sorted(tuple(np.round([*outputs["detection_boxes"][item, i],
                                  outputs["detection_scores"][item, i],
                                  outputs["detection_classes"][item, i]], 5).tolist())
                  for i in range(valid))
    padding = [outputs[k][item, valid:] for k in
               ("detection_boxes", "detection_scores", "detection_classes")]
    return rows, padding


def test_detector_module_with_nms_answers_as_tensorflow(served, root) -> None:
    """combined_non_max_suppression's outputs compared as sets of boxes, scores and classes
    per image, with num_detections and the zero padding up to max_total_size; one image
    is blank, so has no detection."""
    stub, _ = served
    images = np.random.default_rng(8).standard_normal((4, 16, 16, 3)).astype(np.float32)
    images[2] = 0.0  # a blank frame: no detection, all padding
    signature = tf.saved_model.load(
        str(root / "saved" / "detector" / str(HALF_PLUS_TWO_VERSION))
    ).signatures["serving_default"]
    expected = {k: v.numpy() for k, v in signature(images=tf.constant(images)).items()}
    got = predict(stub, "detector", images=images)
    assert got["num_detections"].tolist() == expected["num_detections"].tolist()
    assert expected["num_detections"][2] == 0
    assert tf_op_models.KerasDetector.MAX_TOTAL > expected["num_detections"].max() > 0
    for item in range(len(images)):
        (ours, our_padding), (theirs, their_padding) = (
            detections(got, item), detections(expected, item))
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
        for a, b in zip(our_padding, their_padding, strict=True):
            np.testing.assert_array_equal(a, b)
