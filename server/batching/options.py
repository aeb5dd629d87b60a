"""Batching parameters: TF Serving's BatchingParameters file, its defaults and its checks.

The file is protobuf text format, exactly as ``--batching_parameters_file``
reads it in tensorflow_model_server. Unset fields take SharedBatchScheduler's
defaults; checks and their messages follow TF Serving's so an error reads the
same on both servers.
"""

from __future__ import annotations

import bisect
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from onnx_serving.protos.tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import (
    BatchingParameters,
)
from onnx_serving.server.errors import ConfigError, InvalidArgument
from onnx_serving.server.repository.model_config import read_text_proto

DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10
DEFAULT_THREAD_POOL_NAME = "batch_threads"


def _cpu_count() -> int:
    """CPUs this process may run on (SharedBatchScheduler's default thread count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class BatchingOptions:
    """One BatchingParameters, defaults filled in and checked on construction."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    """Largest request accepted, in rows; also the largest batch unless splitting."""
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    """How long an open batch waits, from its first request, before it runs part-full."""
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    """Batches waiting per queue (running ones not counted) before UNAVAILABLE."""
    num_batch_threads: int = field(default_factory=_cpu_count)
    """Threads running batches; at most this many ``run`` calls at once."""
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()
    """Sizes a batch is padded up to; empty means any size runs as is."""
    pad_variable_length_inputs: bool = False
    """Pad non-batch dimensions so requests of different lengths share batches."""
    enable_large_batch_splitting: bool = False
    """Split requests so that no batch exceeds ``execution_batch_size``."""
    max_execution_batch_size: int | None = None
    """Largest batch run when splitting; None means ``max_batch_size``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_batch_sizes", tuple(self.allowed_batch_sizes))
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            value = getattr(self, name)
            if value < 1:
                raise InvalidArgument(f"{name} must be positive; was {value}")
        if self.batch_timeout_micros < 0:
            raise InvalidArgument(
                f"batch_timeout_micros must be non-negative; was {self.batch_timeout_micros}"
            )
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            if self.max_execution_batch_size < 1:
                raise InvalidArgument(
                    "max_execution_batch_size must be positive; was "
                    f"{self.max_execution_batch_size}"
                )
            if self.max_batch_size < self.max_execution_batch_size:
                raise InvalidArgument(
                    "When enable_large_batch_splitting is true, max_batch_size must be greater "
                    f"than or equal to max_execution_batch_size; max_batch_size was "
                    f"{self.max_batch_size}, max_execution_batch_size "
                    f"{self.max_execution_batch_size}"
                )
        self._check_allowed_batch_sizes()

    def _check_allowed_batch_sizes(self) -> None:
        sizes = self.allowed_batch_sizes
        if not sizes:
            return
        if sizes[0] < 1 or any(b <= a for a, b in itertools.pairwise(sizes)):
            raise InvalidArgument(
                "allowed_batch_sizes entries must be positive and monotonically increasing; "
                f"were {list(sizes)}"
            )
        if sizes[-1] != self.max_batch_size:
            raise InvalidArgument(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{sizes[-1]}; expected {self.max_batch_size}"
            )

    @property
    def execution_batch_size(self) -> int:
        """The most rows one ``run`` call receives before padding."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    def padded_size(self, rows: int) -> int:
        """The smallest allowed batch size holding ``rows`` (``rows`` itself when none does)."""
        sizes = self.allowed_batch_sizes
        index = bisect.bisect_left(sizes, rows)
        return sizes[index] if index < len(sizes) else rows

    @classmethod
    def from_proto(cls, message: BatchingParameters) -> BatchingOptions:
        """Options from a parsed BatchingParameters; unset wrapper fields take the defaults."""

        def get(name: str, default: int) -> int:
            return int(getattr(message, name).value) if message.HasField(name) else default

        def optional(name: str) -> int | None:
            return int(getattr(message, name).value) if message.HasField(name) else None

        splitting = message.HasField("enable_large_batch_splitting") and (
            message.enable_large_batch_splitting.value
        )
        max_enqueued = get("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES)
        if max_enqueued == 0 and not splitting:
            # TF Serving quietly treats 0 as 1 here, and existing configs rely on it.
            max_enqueued = 1
        threads = optional("num_batch_threads")
        return cls(
            max_batch_size=get("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
            batch_timeout_micros=get("batch_timeout_micros", DEFAULT_BATCH_TIMEOUT_MICROS),
            max_enqueued_batches=max_enqueued,
            num_batch_threads=_cpu_count() if threads is None else threads,
            thread_pool_name=(
                message.thread_pool_name.value
                if message.HasField("thread_pool_name")
                else DEFAULT_THREAD_POOL_NAME
            ),
            allowed_batch_sizes=tuple(message.allowed_batch_sizes),
            pad_variable_length_inputs=message.pad_variable_length_inputs,
            enable_large_batch_splitting=splitting,
            max_execution_batch_size=optional("max_execution_batch_size"),
        )


def read_batching_parameters(path: str | Path) -> BatchingOptions:
    """Parses a ``--batching_parameters_file``; every error names the file (and line)."""
    path = Path(path)
    message = BatchingParameters()
    read_text_proto(path, message, "batching parameters")
    try:
        return BatchingOptions.from_proto(message)
    except InvalidArgument as exc:
        raise ConfigError(f"Invalid batching parameters in {path}: {exc.message}") from exc
