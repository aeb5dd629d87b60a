"""How fast is the server's tf.Example parse stage? Against TensorFlow's own parse_example.

    .venv/bin/python bench/example_parsing.py [--batch 64] [--rounds 200]

An Estimator-like spec: 8 fixed-length float features, 2 int64 ones (one with a
default), a 16-float embedding and a var-length string list. Both sides parse the
same serialized batch, alternating round by round; the median per batch is
reported, with TensorFlow's eager op (what a SavedModel's ParseExampleV2 runs)
as the reference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from onnx_serving.server.runtime.example_parse import read_parse_spec


def spec() -> tuple[dict[str, object], dict[str, object]]:
    config: dict[str, object] = {f"f{i}": tf.io.FixedLenFeature([1], tf.float32) for i in range(8)}
    config["count"] = tf.io.FixedLenFeature([1], tf.int64)
    config["bucket"] = tf.io.FixedLenFeature([1], tf.int64, default_value=[0])
    config["embedding"] = tf.io.FixedLenFeature([16], tf.float32)
    config["tags"] = tf.io.VarLenFeature(tf.string)
    dense = [{"key": f"f{i}", "dtype": "DT_FLOAT", "shape": [1], "name": f"f{i}"}
             for i in range(8)]
    dense += [
        {"key": "count", "dtype": "DT_INT64", "shape": [1], "name": "count"},
        {"key": "bucket", "dtype": "DT_INT64", "shape": [1], "default": [0], "name": "bucket"},
        {"key": "embedding", "dtype": "DT_FLOAT", "shape": [16], "name": "embedding"},
    ]
    sparse = [{"key": "tags", "dtype": "DT_STRING", "indices": "ti", "values": "tv",
               "dense_shape": "ts"}]
    return config, {"input": "examples", "dense": dense, "sparse": sparse}


def examples(batch: int, rng: np.random.Generator) -> np.ndarray:
    serialized = []
    for i in range(batch):
        feature = {f"f{j}": tf.train.Feature(float_list=tf.train.FloatList(value=[rng.random()]))
                   for j in range(8)}
        feature["count"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))
        if i % 2:
            feature["bucket"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))
        feature["embedding"] = tf.train.Feature(
            float_list=tf.train.FloatList(value=rng.random(16)))
        feature["tags"] = tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[b"tag"] * int(rng.integers(0, 4))))
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        serialized.append(example.SerializeToString())
    return np.array(serialized, dtype=object)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    config, ours_spec = spec()
    ours = read_parse_spec(ours_spec, "bench")
    batch = examples(args.batch, np.random.default_rng(0))
    tensor = tf.constant(batch, tf.string)
    times: dict[str, list[float]] = {"onnx-serving": [], "tensorflow": []}
    for _ in range(args.rounds):
        started = time.perf_counter()
        ours.parse(batch)
        times["onnx-serving"].append(time.perf_counter() - started)
        started = time.perf_counter()
        tf.io.parse_example(tensor, config)
        times["tensorflow"].append(time.perf_counter() - started)
    medians = {side: statistics.median(t) * 1e6 for side, t in times.items()}
    for side, median in medians.items():
        print(f"{side:>12}: {median:8.1f} us per batch of {args.batch} "
              f"({median / args.batch:.2f} us per example)")
    print(f"ratio onnx-serving / tensorflow: {medians['onnx-serving'] / medians['tensorflow']:.2f}")


if __name__ == "__main__":
    main()
