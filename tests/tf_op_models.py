"""SavedModels whose graphs decode images or work on text, as TF Serving users export them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tensorflow as tf


def _decoded_images(image_bytes: tf.Tensor) -> tf.Tensor:
    """Each JPEG decoded, resized to 32x32 and scaled to [-1, 1] in a map_fn, as TF
    Serving's ResNet export does (traced into the caller's graph)."""

    def preprocess(encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jpeg(encoded, channels=3)
        return tf.image.resize(image, [32, 32]) / 127.5 - 1.0

    return tf.map_fn(preprocess, image_bytes, fn_output_signature=tf.float32)


class JpegClassifier(tf.Module):
    """TF Serving's ResNet example in miniature: ``image_bytes`` (encoded JPEGs) decoded,
    resized and normalized inside a map_fn, then a CNN; ``classes`` and ``probabilities``."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(7)
        self.kernel = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
        self.dense = tf.Variable(rng.normal(0, 3.0, (8, 5)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = _decoded_images(image_bytes)
        features = tf.nn.relu(tf.nn.conv2d(images, self.kernel, 2, "SAME"))
        logits = tf.reduce_mean(features, [1, 2]) @ self.dense
        return {"classes": tf.argmax(logits, 1), "probabilities": tf.nn.softmax(logits)}


def jpeg_classifier(path: Path) -> None:
    module = JpegClassifier()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


class Text(tf.Module):
    """String ops as exports use them; ``substr`` has no ONNX counterpart."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([None], tf.string, name="tag")])
    def serve(self, text: tf.Tensor, tag: tf.Tensor) -> dict[str, tf.Tensor]:
        clean = tf.strings.regex_replace(tf.strings.strip(text), "[0-9]+", "#")
        return {
            "joined": tf.strings.join([tf.strings.upper(tag), clean], separator=": "),
            "lower": tf.strings.lower(text),
            "first_word": tf.strings.split(clean, " ").to_tensor("")[:, 0],
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def prefix(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"prefix": tf.strings.substr(text, 0, 2)}


def text(path: Path) -> None:
    module = Text()
    tf.saved_model.save(module, str(path),
                        signatures={"serving_default": module.serve, "prefix": module.prefix})


def jpegs(count: int, seed: int, fmt: str = "JPEG") -> list[bytes]:
    """Photos stand-ins: gradients, a disc and noise, sizes varied, 4:2:0 chroma."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    encoded = []
    for _ in range(count):
        height, width = (int(s) for s in rng.integers(40, 160, 2))
        y, x = np.mgrid[0:height, 0:width]
        disc = ((y - height * rng.uniform(0.2, 0.8)) ** 2 + (x - width * rng.uniform(0.2, 0.8)) ** 2
                < (min(height, width) * rng.uniform(0.1, 0.4)) ** 2)
        base = np.stack([x * rng.uniform(0.5, 3), y * rng.uniform(0.5, 3), (x + y) * 1.0], -1)
        base[disc] = rng.uniform(0, 255, 3)
        pixels = np.clip(base % 256 + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
        encoded.append(buffer.getvalue())
    return encoded


class KerasJpegClassifier(tf.Module):
    """A tf.Module holding a keras.Sequential as ``self.model``, its serving function
    decoding JPEG bytes in a map_fn then calling the model, as Keras 3 users write TF
    Serving's ResNet export (its graph reads the layers' variables through handles the
    SavedModel's restore op leaves out: keras-team/keras#20095)."""

    def __init__(self) -> None:
        import keras

        super().__init__()
        keras.utils.set_random_seed(7)
        self.model = keras.Sequential([
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),
        ])
        self.model.build((None, 32, 32, 3))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = _decoded_images(image_bytes)
        logits = self.model(images) * 10.0
        return {"classes": tf.argmax(logits, 1), "probabilities": tf.nn.softmax(logits)}


def keras_jpeg_classifier(path: Path) -> None:
    module = KerasJpegClassifier()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


class KerasDetector(tf.Module):
    """A small detector: Keras layers held as an attribute give per-cell boxes and class
    scores, and the signature ends in ``tf.image.combined_non_max_suppression``, the
    outputs of TF Object Detection exports (padded to ``max_total_size``, with
    ``num_detections`` valid). A blank frame scores nothing."""

    MAX_TOTAL = 12

    def __init__(self) -> None:
        import keras

        super().__init__()
        keras.utils.set_random_seed(11)
        self.backbone = keras.Sequential([
            keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(4 + 3, 1),  # a box and three class scores per cell
        ])
        self.backbone.build((None, 16, 16, 3))

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32, name="images")])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        cells = tf.reshape(self.backbone(images), [tf.shape(images)[0], -1, 7])
        boxes = tf.sigmoid(cells[:, :, None, :4])
        blank = tf.reduce_max(tf.abs(images), [1, 2, 3]) == 0  # a frame with nothing in it
        scores = tf.where(blank[:, None, None], 0.0, tf.sigmoid(cells[:, :, 4:]))
        detected = tf.image.combined_non_max_suppression(
            boxes, scores, max_output_size_per_class=5, max_total_size=self.MAX_TOTAL,
            iou_threshold=0.5, score_threshold=0.6,
        )
        return {"detection_boxes": detected.nmsed_boxes,
                "detection_scores": detected.nmsed_scores,
                "detection_classes": detected.nmsed_classes,
                "num_detections": detected.valid_detections}


def keras_detector(path: Path) -> None:
    module = KerasDetector()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
