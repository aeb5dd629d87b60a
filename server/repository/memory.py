"""Memory an unloaded version held, handed back to the operating system."""

from __future__ import annotations

import ctypes
import gc


def release_unloaded() -> None:
    """Collects what an unload freed (sessions sit in reference cycles) and hands the freed
    heap pages back to the OS: glibc keeps them otherwise, and the process never shrinks."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)
