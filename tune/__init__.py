"""``onnx-serving tune``: measures a model under a given load over server settings
(instances, threads, spinning, graph optimization, batching) and writes the best as
its runtime.json and batching parameters (docs/tuning.md)."""
