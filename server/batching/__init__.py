"""Server-side batching: TF Serving's BatchingParameters and SharedBatchScheduler semantics.

See docs/batching.md for the parameters and how to tell whether batching helps.
"""

from onnx_serving.server.batching.batcher import Batcher, BatchStats, Observe, Run
from onnx_serving.server.batching.options import BatchingOptions, read_batching_parameters
from onnx_serving.server.batching.scheduler import BatchScheduler

__all__ = [
    "BatchScheduler",
    "BatchStats",
    "Batcher",
    "BatchingOptions",
    "Observe",
    "Run",
    "read_batching_parameters",
]
