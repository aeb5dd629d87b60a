"""The benchmark suite: onnx-serving beside its limit, its transport floor and TensorFlow.

    .venv/bin/python -m bench.suite [--quick] [--models ...] [--concurrency ...] [--seconds ...]

One run serves each model with onnx-serving (and, when the server accepts the
flags, onnx-serving with batching), answers the same payload from a bare gRPC
echo server, and runs the model in-process in ONNX Runtime and in TensorFlow,
interleaving them so that a noisy machine hits all alike. docs/performance.md
has the table this prints and how to read it.
"""
