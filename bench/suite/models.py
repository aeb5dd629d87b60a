"""The benchmark's models: built once as SavedModels, converted once, kept in a cache.

    .venv/bin/python -m bench.suite.models [NAME ...]   # build (or find) them and say where

Everything is made here from code (keras.applications with ``weights=None``,
a small Keras encoder, a tf.Module half_plus_two): nothing comes from a hub.
Each model lives under ``~/.cache/onnx-serving-bench/<name>-<input size>-v<N>/``
as ``saved_model/1/`` (what TF Serving would serve, and what the TensorFlow
contender runs) and ``onnx/1/`` (what ``onnx-serving convert`` made of it,
with ``signatures.json``), so the two sides always hold the same weights. The
SavedModel is built in a child process: Keras leaves TensorFlow's thread pools
set up, and the benchmark process must choose their sizes itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("ONNX_SERVING_BENCH_CACHE", "~/.cache/onnx-serving-bench")).expanduser()
REPO = Path(__file__).resolve().parents[2]
EXAMPLE_HALF_PLUS_TWO = REPO / "examples" / "models" / "half_plus_two"
# Bump when a builder changes, so stale cache entries are not reused.
BUILD_VERSION = 1
DONE = "complete"
SIGNATURE = "serving_default"

# The encoder's shape: BERT's layout, scaled down to run on a laptop.
SEQ_LEN, HIDDEN, HEADS, LAYERS, FFN, VOCAB = 128, 128, 4, 2, 512, 8192


@dataclass(frozen=True)
class ModelSpec:
    name: str
    size: str  # the input size, part of the cache key
    small: bool  # in --quick
    int_high: int = 0  # integer inputs are drawn from [0, int_high)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.size}-v{BUILD_VERSION}"


SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("half_plus_two", "1", small=True),
        ModelSpec("mobilenet_v2", "224x224x3", small=True),
        ModelSpec("resnet50", "224x224x3", small=False),
        ModelSpec("bert_tiny", f"seq{SEQ_LEN}-h{HIDDEN}-l{LAYERS}", small=False, int_high=VOCAB),
    )
}


@dataclass(frozen=True)
class InputSig:
    alias: str  # the key clients send
    onnx_name: str  # the ONNX graph input it feeds
    dtype: np.dtype
    shape: tuple[int, ...]  # -1: any size


@dataclass(frozen=True)
class BenchModel:
    """A model ready to serve: where its ONNX and SavedModel versions are, what it takes."""

    spec: ModelSpec
    onnx_base: Path  # holds one numbered version directory
    saved_model: Path  # the version directory itself
    onnx_file: Path  # the serving signature's graph
    inputs: tuple[InputSig, ...]
    outputs: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    def sample(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs of batch size ``batch``, keyed by alias; the same for every contender."""
        rng = np.random.default_rng(seed)
        out = {}
        for sig in self.inputs:
            shape = tuple(batch if d == -1 else d for d in sig.shape) if sig.shape else (batch,)
            if np.issubdtype(sig.dtype, np.integer):
                out[sig.alias] = rng.integers(0, self.spec.int_high or 100, shape, sig.dtype)
            else:
                out[sig.alias] = rng.standard_normal(shape).astype(sig.dtype)
        return out


# --- builders: each writes one SavedModel version directory ---------------------------


def _half_plus_two(path: Path) -> None:
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": 0.5 * x + 2.0}

    module = HalfPlusTwo()
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: module.predict})


def _application(factory: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import keras

        image = keras.Input((224, 224, 3), name="image")
        model = getattr(keras.applications, factory)(input_tensor=image, weights=None)
        model.export(str(path), verbose=False)

    return build


def _bert_tiny(path: Path) -> None:
    import keras

    class PositionEmbedding(keras.layers.Layer):
        """Learned positions added to the token embeddings, as BERT's."""

        def build(self, input_shape: tuple[int, ...]) -> None:
            self.positions = self.add_weight(shape=(input_shape[-2], input_shape[-1]))

        def call(self, x: object) -> object:
            return x + self.positions

    keras.utils.set_random_seed(0)
    ids = keras.Input((SEQ_LEN,), dtype="int64", name="input_ids")
    x = keras.layers.Embedding(VOCAB, HIDDEN)(ids)
    x = keras.layers.LayerNormalization()(PositionEmbedding()(x))
    # tanh-approximated GELU: the exact one needs Erfc, which tf2onnx cannot convert.
    gelu = keras.layers.Activation(lambda t: keras.activations.gelu(t, approximate=True))
    for _ in range(LAYERS):
        attended = keras.layers.MultiHeadAttention(HEADS, HIDDEN // HEADS)(x, x)
        x = keras.layers.LayerNormalization()(x + attended)
        ffn = keras.layers.Dense(HIDDEN)(gelu(keras.layers.Dense(FFN)(x)))
        x = keras.layers.LayerNormalization()(x + ffn)
    first = keras.layers.Lambda(lambda t: t[:, 0, :])(x)
    pooled = keras.layers.Dense(HIDDEN, activation="tanh", name="pooler")(first)
    keras.Model(ids, pooled).export(str(path), verbose=False)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "half_plus_two": _half_plus_two,
    "mobilenet_v2": _application("MobileNetV2"),
    "resnet50": _application("ResNet50"),
    "bert_tiny": _bert_tiny,
}


# --- the cache --------------------------------------------------------------------------


def ensure(name: str, *, log: Callable[[str], None] = print) -> BenchModel:
    """The cached model, building and converting it first if it is not there yet."""
    spec = SPECS[name]
    folder = CACHE / spec.key
    if not (folder / DONE).is_file():
        log(f"building {name} into {folder} (once; later runs reuse it)")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        _run([sys.executable, "-m", "bench.suite.models", "--build-one", name, str(folder)])
        if name != "half_plus_two":  # its ONNX is the repository's example
            _run([sys.executable, "-m", "onnx_serving.server", "convert",
                  str(folder / "saved_model"), str(folder / "onnx"), f"--model_name={name}"])
        (folder / DONE).write_text("")
    onnx_base = EXAMPLE_HALF_PLUS_TWO if name == "half_plus_two" else folder / "onnx"
    return _describe(spec, onnx_base, folder / "saved_model" / "1")


def _run(command: list[str]) -> None:
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}"
                           f"{done.stderr[-3000:]}")


def _describe(spec: ModelSpec, onnx_base: Path, saved_model: Path) -> BenchModel:
    """Reads the serving signature from signatures.json: aliases, ONNX names, dtypes."""
    from onnx_serving.codec.tensors import numpy_dtype
    from onnx_serving.protos.tensorflow.core.framework import types_pb2

    (version,) = (p for p in onnx_base.iterdir() if p.name.isdigit())
    signature = json.loads((version / "signatures.json").read_text())["signature_def"][SIGNATURE]
    inputs = tuple(
        InputSig(
            alias,
            info["name"],
            np.dtype(numpy_dtype(types_pb2.DataType.Value(info["dtype"]))),
            tuple(info.get("tensor_shape") or ()),
        )
        for alias, info in sorted(signature["inputs"].items())
    )
    onnx_file = version / signature.get("model_file", "model.onnx")
    outputs = tuple(sorted(signature["outputs"]))
    return BenchModel(spec, onnx_base, saved_model, onnx_file, inputs, outputs)


def _build_one(name: str, folder: Path) -> None:
    import tensorflow as tf

    tf.random.set_seed(0)
    target = folder / "saved_model" / "1"
    target.parent.mkdir(parents=True, exist_ok=True)
    BUILDERS[name](target)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--build-one"]:
        _build_one(argv[1], Path(argv[2]))
        return
    for name in argv or list(SPECS):
        model = ensure(name)
        print(f"{name}: {model.onnx_file} (inputs {[i.alias for i in model.inputs]}, "
              f"outputs {list(model.outputs)})")


if __name__ == "__main__":
    main(sys.argv[1:])
