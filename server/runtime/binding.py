"""IO bindings kept across requests, with output buffers reused from one request to the next.

Making an IOBinding and binding every output on each request costs more than
ONNX Runtime's plain ``run()`` saves on the CPU. Here each slot keeps its
binding, and the output buffers bound to it, from one request to the next; a
request only binds its inputs where they lie (numpy memory: no copy on the CPU,
one copy to the device on CUDA). Outputs are written straight into host
buffers, the memory the response is encoded from.

Output shapes are not known before a run, so they are learned per input shape:
the first run of a combination lets ONNX Runtime allocate, later ones write
into buffers of the shapes it gave. An output whose shape depends on the
input's *values* (NonZero, say) makes ONNX Runtime refuse the buffer; that
run is repeated with ONNX Runtime allocating, and the combination stays so.

The arrays a run yields belong to its slot: they are valid until the ``with``
block ends, when the slot, buffers and all, goes back for the next request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeAlias

import numpy as np
import onnxruntime as ort

from onnx_serving.server.runtime.deadline import Deadline, run_options

Feed: TypeAlias = np.ndarray | ort.OrtValue
# Input names and shapes, then the outputs asked for.
_Key: TypeAlias = tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[str, ...]]
# What ONNX Runtime's errors become (the session's translation, so messages match run()'s).
Translate: TypeAlias = Callable[[Exception], Exception]
# An output ONNX Runtime allocated, by name, as an array.
Convert: TypeAlias = Callable[[str, ort.OrtValue], np.ndarray]

MAX_SHAPES = 256
"""Input-shape combinations remembered per session; beyond them ONNX Runtime allocates."""


class _Slot:
    """One binding and the buffers currently bound to it."""

    def __init__(self, binding: ort.IOBinding) -> None:
        self.binding = binding
        self.key: _Key | None = None
        self.buffers: list[np.ndarray] | None = None  # None: ONNX Runtime allocates

    def bind_outputs(
        self, key: _Key, dtypes: Sequence[np.dtype], shapes: Sequence[tuple[int, ...]] | None
    ) -> None:
        self.binding.clear_binding_outputs()
        names = key[1]
        if shapes is None:
            self.buffers = None
            for name in names:
                self.binding.bind_output(name, "cpu")
        else:
            self.buffers = [np.empty(s, dtype=d) for s, d in zip(shapes, dtypes, strict=True)]
            for name, buffer in zip(names, self.buffers, strict=True):
                self.binding.bind_output(
                    name, "cpu", 0, buffer.dtype, buffer.shape, buffer.ctypes.data
                )
        self.key = key


class BoundRunner:
    """Runs one session through kept bindings; one slot per request in flight."""

    def __init__(
        self,
        session: ort.InferenceSession,
        host_dtypes: Mapping[str, np.dtype],
        errors: tuple[type[Exception], ...],
        translate: Translate,
        convert: Convert,
        gate: AbstractContextManager[Any],
    ) -> None:
        """``host_dtypes``: outputs that may get a reused numpy buffer (not strings, not
        types numpy cannot hand ONNX Runtime); the others are always allocated by it, and
        ``convert`` turns them into arrays. ``gate`` is held around each run."""
        self._session = session
        self._host_dtypes = dict(host_dtypes)
        self._errors = errors
        self._translate = translate
        self._convert = convert
        self._gate = gate
        self._free: list[_Slot] = []
        # Output shapes by input shapes; None where the values decide them.
        self._shapes: dict[_Key, list[tuple[int, ...]] | None] = {}

    def lease(
        self, feeds: Mapping[str, Feed], outputs: Sequence[str], keys: Sequence[str],
        deadline: Deadline | None = None,
    ) -> _Lease:
        """Runs on entering; gives the outputs by ``keys`` until the block ends."""
        return _Lease(self, feeds, tuple(outputs), keys, deadline)

    def _take(self) -> _Slot:
        try:
            return self._free.pop()  # atomic under the GIL, like the append in _give
        except IndexError:
            return _Slot(self._session.io_binding())

    def _give(self, slot: _Slot) -> None:
        slot.binding.clear_binding_inputs()  # the request's memory is not kept
        self._free.append(slot)

    def _run(
        self, slot: _Slot, feeds: Mapping[str, Feed], outputs: tuple[str, ...],
        deadline: Deadline | None,
    ) -> list[Any]:
        binding = slot.binding
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        key = (tuple([(n, _shape(v)) for n, v in feeds.items()]), outputs)
        shapes = self._shapes.get(key)
        # An output ONNX Runtime allocated stays bound after the run, and would be taken
        # as a buffer for the next: those are bound afresh every time.
        if shapes is None or slot.key != key or slot.buffers is None:
            dtypes = [self._host_dtypes[n] for n in outputs] if shapes is not None else []
            slot.bind_outputs(key, dtypes, shapes)
        try:
            with self._gate, run_options(deadline) as options:
                self._session.run_with_iobinding(binding, options)
        except self._errors as exc:
            if slot.buffers is None:
                raise self._translate(exc) from exc
            slot.bind_outputs(key, (), None)  # perhaps a shape the values decide: let it
            try:
                with self._gate, run_options(deadline) as options:
                    self._session.run_with_iobinding(binding, options)
            except self._errors as again:
                raise self._translate(again) from again
            self._shapes[key] = None
        if slot.buffers is not None:
            return slot.buffers
        values: list[ort.OrtValue] = binding.get_outputs()
        if key not in self._shapes and len(self._shapes) < MAX_SHAPES:
            self._shapes[key] = self._learned(outputs, values)
        return [self._convert(n, v) for n, v in zip(outputs, values, strict=True)]

    def _learned(
        self, outputs: Sequence[str], values: Sequence[ort.OrtValue]
    ) -> list[tuple[int, ...]] | None:
        """The shapes to preallocate for next time, or None where buffers cannot serve."""
        shapes = [tuple(v.shape()) for v in values]
        if any(n not in self._host_dtypes for n in outputs) or any(0 in s for s in shapes):
            return None
        return shapes


class _Lease:
    """One request's use of a slot: a plain class, as this is on every request's path."""

    __slots__ = ("_deadline", "_feeds", "_keys", "_outputs", "_runner", "_slot")

    def __init__(
        self, runner: BoundRunner, feeds: Mapping[str, Feed], outputs: tuple[str, ...],
        keys: Sequence[str], deadline: Deadline | None,
    ) -> None:
        self._runner, self._feeds, self._outputs, self._keys = runner, feeds, outputs, keys
        self._deadline = deadline
        self._slot: _Slot | None = None

    def __enter__(self) -> dict[str, np.ndarray]:
        slot = self._slot = self._runner._take()
        try:
            values = self._runner._run(slot, self._feeds, self._outputs, self._deadline)
        except BaseException:
            self._release()
            raise
        return dict(zip(self._keys, values, strict=True))

    def __exit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        if self._slot is not None:
            self._runner._give(self._slot)
            self._slot = None


def _shape(value: Feed) -> tuple[int, ...]:
    return value.shape if isinstance(value, np.ndarray) else tuple(value.shape())
