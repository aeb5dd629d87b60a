"""--per_process_gpu_memory_fraction for ONNX Runtime's CUDA provider.

TensorFlow caps its allocator at a fraction of each GPU's memory. The CUDA
provider's counterpart is ``gpu_mem_limit``, in bytes and per session, on the
device its ``device_id`` names: the fraction is turned into bytes of that
device's total memory, read from the CUDA driver. A limit set in runtime.json
wins over the flag.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from onnx_serving.server.errors import ModelLoadError

CUDA = "CUDAExecutionProvider"


def with_memory_limit(
    options: Mapping[str, Any], fraction: float,
    total_memory: Callable[[int], int] | None = None,
) -> dict[str, Any]:
    """The CUDA provider's options with ``gpu_mem_limit`` set from ``fraction``."""
    if fraction <= 0 or "gpu_mem_limit" in options:
        return dict(options)
    device = int(options.get("device_id", 0))
    total = (total_memory or device_memory)(device)
    return {**options, "gpu_mem_limit": int(total * fraction)}


@cache
def device_memory(device: int) -> int:
    """Total memory of a CUDA device in bytes (the driver API: no toolkit needed)."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise ModelLoadError(
            f"--per_process_gpu_memory_fraction needs the CUDA driver (libcuda.so.1): {exc}"
        ) from exc
    handle, total = ctypes.c_int(), ctypes.c_size_t()
    for call, args in ((driver.cuInit, (0,)),
                       (driver.cuDeviceGet, (ctypes.byref(handle), device)),
                       (driver.cuDeviceTotalMem_v2, (ctypes.byref(total), handle))):
        status = call(*args)
        if status != 0:
            raise ModelLoadError(
                f"cannot read the memory of CUDA device {device} for "
                f"--per_process_gpu_memory_fraction (CUDA driver error {status})"
            )
    return total.value
