"""The request log's writer: records to rotating TFRecord files, off the request's path.

A sampled request puts a record on a queue bounded in records and in the bytes of
the tensors they hold; a full queue drops the record and counts it, never waits.
One thread turns records into protobuf (``Record.build``) and appends them to
files, starting a new file when one reaches its size or the warmup limit of
records, and deleting the oldest beyond the count kept, so the logs are bounded
in total.

A log that cannot be written (a full disk, a read-only or missing directory)
never stops the server or the writer: the records not yet in the file are
dropped and counted, the file is cut back to its last whole record, and the
records of the next ``retry_seconds`` are dropped without a try; then a new
file is opened. One ERROR line says so, then at most one a minute with the
count dropped since, and an INFO line when writing works again. At shutdown
what is queued gets ``close_seconds`` to be written; the rest is dropped.

A ``filename_prefix`` in an object store (gs://, s3://), which cannot append, gets its
files written in the local cache and uploaded each once complete (rotated, or at
shutdown); a file that cannot be uploaded is logged and left in the cache.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnx_serving.codec.served_model import MAX_RECORDS
from onnx_serving.codec.tfrecord import frame_record
from onnx_serving.protos.tensorflow_serving.apis import prediction_log_pb2
from onnx_serving.server.repository.storage import (
    Location,
    ObjectUrl,
    remove,
    spool_prefix,
    upload,
)

log = logging.getLogger(__name__)

_FLUSH_BYTES = 1 << 20  # records are written in runs of about this size, or when none wait
_REPORT_SECONDS = 60.0  # at most one ERROR line per log file this often
Observe = Callable[[str, bool], None]


@dataclass(frozen=True)
class RequestLogOptions:
    max_file_bytes: int = 64 << 20
    max_files: int = 10  # per filename_prefix and server process; the oldest go first
    queue_size: int = 1024  # records waiting to be written; more are dropped
    queue_bytes: int = 64 << 20  # the tensors those records hold; more are dropped
    retry_seconds: float = 1.0  # after a failed write, records are dropped this long
    close_seconds: float = 5.0  # at shutdown, the queue is written this long at most


# What a record is built from, on the writer thread.
Build = Callable[[], prediction_log_pb2.PredictionLog]


@dataclass(frozen=True)
class Record:
    model: str
    prefix: Location  # the filename_prefix of the files it goes to
    build: Build
    size: int  # bytes of the arrays it keeps alive until written


class RecordWriter:
    """Records to their files on one thread; ``observe(model, written)`` counts each."""

    def __init__(self, options: RequestLogOptions, observe: Observe) -> None:
        self._options = options
        self._observe = observe
        self._queue = _Backlog(options.queue_size, options.queue_bytes)
        self._files: dict[Location, _LogFile] = {}
        self._unencodable = _Reporter("Request log: records that could not be encoded")
        self._drain_until: float | None = None  # set by close
        self._thread = threading.Thread(target=self._write, name="request-log", daemon=True)
        self._thread.start()

    def put(self, record: Record) -> None:
        """Queued, or dropped and counted when the queue is full; never waits."""
        if not self._queue.put(record):
            self._observe(record.model, False)

    def close(self) -> None:
        """Writes what is queued (for ``close_seconds`` at most), then closes the files.

        Returns within about that bound whatever the disk does: a writer stuck in a
        write is left behind (a daemon thread) with a logged error.
        """
        seconds = self._options.close_seconds
        self._drain_until = time.monotonic() + seconds
        self._queue.close()
        self._thread.join(seconds + 1.0)
        if self._thread.is_alive():
            log.error("Request log writer still busy after %.1f s at shutdown; left behind",
                      seconds)

    def _write(self) -> None:
        dropped = 0
        while (record := self._queue.get()) is not None:
            if self._drain_until is not None and time.monotonic() > self._drain_until:
                self._observe(record.model, False)
                dropped += 1
                continue
            try:
                self._write_one(record)
            except Exception:  # the writer outlives any one record, whatever went wrong
                log.exception("Request log of model %s: record dropped", record.model)
                self._observe(record.model, False)
            if self._queue.empty():
                self._flush()  # readable as soon as the queue runs dry
        if dropped:
            log.warning("Request log: %d queued records dropped at shutdown, after %.1f s",
                        dropped, self._options.close_seconds)
        for file in self._files.values():
            file.close()

    def _write_one(self, record: Record) -> None:
        file = self._files.get(record.prefix)
        if file is None:
            file = self._files[record.prefix] = _LogFile(
                record.prefix, self._options, self._observe
            )
        if not file.writable():  # failed a moment ago: no use encoding it
            file.drop(record.model)
            return
        try:
            data = frame_record(record.build().SerializeToString())
        except ValueError as exc:  # a value the codec refuses
            self._observe(record.model, False)
            self._unencodable.failed(str(exc), 1)
            return
        file.append(data, record.model)

    def _flush(self) -> None:
        for file in self._files.values():
            file.flush()


class _Backlog:
    """Records waiting for the writer, bounded in count and in bytes; a put never waits."""

    def __init__(self, records: int, size: int) -> None:
        self._records, self._size = max(1, records), max(1, size)
        self._items: collections.deque[Record] = collections.deque()
        self._bytes = 0
        self._closed = False
        self._ready = threading.Condition()

    def put(self, record: Record) -> bool:
        """False when full (or closed): the record is dropped."""
        with self._ready:
            full = len(self._items) >= self._records or self._bytes + record.size > self._size
            if self._closed or full:
                return False
            self._items.append(record)
            self._bytes += record.size
            self._ready.notify()
            return True

    def get(self) -> Record | None:
        """The next record; None once closed and empty."""
        with self._ready:
            while not self._items and not self._closed:
                self._ready.wait()
            if not self._items:
                return None
            record = self._items.popleft()
            self._bytes -= record.size
            return record

    def empty(self) -> bool:
        with self._ready:
            return not self._items

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class _Reporter:
    """ERROR lines for one kind of failure: the first at once, then at most one every
    ``_REPORT_SECONDS`` with the count of records dropped meanwhile, so a log that cannot
    be written costs a line a minute, not one per request."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._dropped = 0
        self._next_report = 0.0
        self._failing = False

    def failed(self, reason: str, dropped: int) -> None:
        self._dropped += dropped
        now = time.monotonic()
        if now < self._next_report:
            return
        log.error("%s: %s; %d records dropped%s (:onnx_serving:request_log_records"
                  '{outcome="dropped"} counts them all)', self._what, reason, self._dropped,
                  " since the last report" if self._failing else "")
        self._failing = True
        self._dropped = 0
        self._next_report = now + _REPORT_SECONDS

    def dropped(self, count: int) -> None:
        """Records dropped without a try (while waiting to retry): told in the next line."""
        self._dropped += count

    def recovered(self) -> None:
        if self._failing:
            log.info("%s: writing again; %d more records were dropped before", self._what,
                     self._dropped)
            self._failing, self._dropped, self._next_report = False, 0, 0.0


class _LogFile:
    """One filename_prefix's files, ``<prefix>-<time>-<pid>-<n>.tfrecord``, at most
    ``max_files`` of them (the oldest are deleted).

    Records are buffered and written unbuffered in runs; a record counts as written once
    its bytes are in the file. A failed write keeps the records of the run that reached the
    file whole, drops the rest, cuts the file back to its whole records (a TFRecord reader
    stops at a torn one) and closes it; the records of the next ``retry_seconds`` are
    dropped, then the next one opens a new file.
    """

    def __init__(self, prefix: Location, options: RequestLogOptions, observe: Observe) -> None:
        self._prefix = prefix
        self._local = spool_prefix(prefix) if isinstance(prefix, ObjectUrl) else prefix
        self._options = options
        self._observe = observe
        self._trouble = _Reporter(f"Request log {prefix}")
        self._stream: io.FileIO | None = None
        self._path: Path | None = None
        self._size = 0  # whole records in the file
        self._records = 0  # in the file or pending
        self._pending = bytearray()
        self._pending_models: list[str] = []
        self._pending_lengths: list[int] = []
        self._count = 0
        self._retry_at = 0.0
        self._kept: collections.deque[Path] = collections.deque()

    def writable(self) -> bool:
        return self._stream is not None or time.monotonic() >= self._retry_at

    def drop(self, model: str) -> None:
        self._observe(model, False)
        self._trouble.dropped(1)

    def append(self, data: bytes, model: str) -> None:
        used = self._size + len(self._pending)
        if self._stream is not None and (
            (used + len(data) > self._options.max_file_bytes and used > 0)
            or self._records >= MAX_RECORDS
        ):
            self.flush()
            self.close()
        if self._stream is None and not self._open():
            self.drop(model)
            return
        self._pending += data
        self._pending_models.append(model)
        self._pending_lengths.append(len(data))
        self._records += 1
        if len(self._pending) >= _FLUSH_BYTES:
            self.flush()

    def _open(self) -> bool:
        self._count += 1
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(f"{self._local}-{stamp}-{os.getpid()}-{self._count:05d}.tfrecord")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = io.FileIO(path, "wb")
        except OSError as exc:
            self._retry_at = time.monotonic() + self._options.retry_seconds
            self._trouble.failed(f"cannot open {path.name}: {exc}", 0)
            return False
        self._path = path
        self._size = self._records = 0
        self._kept.append(path)
        while len(self._kept) > max(1, self._options.max_files):
            self._unlink(self._kept.popleft())
        return True

    def flush(self) -> None:
        if self._stream is None or not self._pending:
            return
        pending, models = self._pending, self._pending_models
        lengths = self._pending_lengths
        self._pending, self._pending_models, self._pending_lengths = bytearray(), [], []
        view = memoryview(pending)
        written = 0
        try:
            while written < len(pending):  # an unbuffered write may take part of it
                written += self._stream.write(view[written:])
        except OSError as exc:
            # The records that reached the disk whole before it failed are kept.
            whole = 0
            for length in itertools.accumulate(lengths):
                if length > written:
                    break
                whole += 1
            kept = sum(lengths[:whole])
            self._written(models[:whole], kept)
            self._fail(exc, models[whole:])
            return
        self._written(models, len(pending))
        self._trouble.recovered()

    def _written(self, models: list[str], size: int) -> None:
        self._size += size
        for model in models:
            self._observe(model, True)

    def _fail(self, exc: OSError, models: list[str]) -> None:
        for model in models:
            self._observe(model, False)
        assert self._stream is not None and self._path is not None
        # Best effort: a file that cannot be cut or closed is left as the disk allows.
        with contextlib.suppress(OSError):
            os.ftruncate(self._stream.fileno(), self._size)
        self._close_stream()
        if self._size == 0:  # nothing whole in it: no empty files left behind
            self._unlink(self._path)
            self._kept.remove(self._path)
        self._retry_at = time.monotonic() + self._options.retry_seconds
        self._trouble.failed(f"cannot write {self._path.name}: {exc}", len(models))

    def close(self) -> None:
        self.flush()
        complete = self._path if self._stream is not None else None
        self._close_stream()
        if complete is not None and isinstance(self._prefix, ObjectUrl):
            try:
                upload(complete, self._prefix.parent / complete.name)
            except OSError as exc:
                log.error("Request log: cannot upload %s to %s: %s; left there", complete,
                          self._prefix.parent, exc)
                return
            with contextlib.suppress(OSError):  # the upload is what counts
                complete.unlink()

    def _close_stream(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):  # unbuffered: nothing is lost by a failed close
                self._stream.close()
            self._stream = None

    def _unlink(self, path: Path) -> None:
        """Deletes a log file (its upload too, for a prefix in an object store)."""
        try:
            path.unlink(missing_ok=True)
            if isinstance(self._prefix, ObjectUrl):
                remove(self._prefix.parent / path.name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # else never uploaded: nothing to delete
                log.warning("Request log: cannot delete %s: %s", path, exc)
