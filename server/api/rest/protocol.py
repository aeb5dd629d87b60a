"""uvicorn's httptools protocol with the bounds a production HTTP server keeps per connection.

uvicorn closes a kept-alive connection only once it has answered on it, and
never one that is silent from the start, sends its headers a byte at a time
(slowloris) or stops halfway through its body; httptools buffers headers of
any size. Each of those holds a file descriptor and memory for ever. Here:

- a connection with no request under way (new, or between requests) is
  closed after the idle timeout (uvicorn's ``timeout_keep_alive``, armed on
  connect too);
- a request's line, headers and body must all arrive within the read timeout
  from its first byte (a total, so a trickle cannot extend it): else 408;
- its line and headers may take at most ``max_header_bytes``: else 431 (as
  h11's ``max_incomplete_event_size``, which httptools lacks);
- at most ``max_connections`` connections are open: one more is answered 503
  and closed at once (uvicorn's ``limit_concurrency`` answers 503 but keeps
  the connection, and its descriptor).

TF Serving (libevent's evhttp) has none of these limits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from onnx_serving.server.flags import ServerOptions


@dataclass(frozen=True)
class HttpLimits:
    idle_timeout_s: float
    read_timeout_s: float
    max_header_bytes: int
    max_connections: int
    max_gzip_bytes: int  # what a gzip body may inflate to (read by the handler)

    @classmethod
    def from_options(cls, options: ServerOptions) -> HttpLimits:
        return cls(
            idle_timeout_s=options.rest_api_idle_timeout_in_ms / 1000,
            read_timeout_s=options.rest_api_read_timeout_in_ms / 1000,
            max_header_bytes=options.rest_api_max_header_bytes,
            max_connections=options.rest_connections,
            max_gzip_bytes=options.rest_api_max_gzip_bytes,
        )


class BoundedProtocol(HttpToolsProtocol):
    """Made for one server by ``bounded_protocol``, which sets its limits."""

    limits: ClassVar[HttpLimits]
    _read_timer: asyncio.TimerHandle | None = None
    _reading_head = False
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "Too many open connections")
            return
        self._await_next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)
        self._unset_keepalive_if_required()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or self.parser is None:
            return
        if self._reading_head:
            # A head still incomplete: its bytes so far (complete heads are measured in
            # on_headers_complete), so that no head buffers past the limit and one read.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse_head()
                return
        if self._read_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._await_next_request()  # bytes that began no request (blank lines)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = 0
        self._stop_read_timer()
        self._read_timer = self.loop.call_later(self.limits.read_timeout_s, self._read_timed_out)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse_head()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():  # not after a refusal, in the same read
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_read_timer()
        if not self.transport.is_closing():
            super().on_message_complete()

    def _await_next_request(self) -> None:
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if not self._reading_head and self.cycle.response_started:
            self.transport.close()  # answered before its body came: too late for a 408
            return
        self._refuse(408, "The request did not arrive within "
                          f"{self.limits.read_timeout_s * 1000:.0f} ms "
                          "(--rest_api_read_timeout_in_ms)")

    def _refuse_head(self) -> None:
        self._refuse(431, "Request line and headers are larger than the limit of "
                          f"{self.limits.max_header_bytes} bytes (--rest_api_max_header_bytes)")

    def _refuse(self, status: int, message: str) -> None:
        """Answers ``status`` with ``message`` as text, then closes the connection."""
        body = message.encode("ascii") + b"\n"
        self.transport.write(b"".join([
            STATUS_LINE[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]))
        self.transport.close()


def bounded_protocol(limits: HttpLimits) -> type[BoundedProtocol]:
    """The protocol class for uvicorn's ``http``, with these limits."""

    class Bounded(BoundedProtocol):
        pass

    Bounded.limits = limits
    return Bounded

