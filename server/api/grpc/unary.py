"""Unary calls answered straight from gRPC's core, without gRPC Python's server loop.

gRPC Python's server (grpc/_server.py) spends about 0.2 ms of CPU per call in its own
Python: its loop thread hands each call to a pool thread, which asks for the request and
waits on a condition until the loop delivers it, then answers; every step is a thread
taking the GIL from another. For a model that runs in microseconds that is most of the
request (docs/performance.md, "A lane of our own for unary calls"). Here grpc.Server's
own core server (so the same ports, credentials and channel arguments) hands the unary
methods of our services to a completion queue of their own: one thread polls it, asks
for each call's request as the call arrives, parses it (as gRPC Python's loop does), and
gives the call to a worker thread, which answers with one batch (initial metadata,
message and status). Streaming methods (health Watch, reflection) stay with grpc.Server.

A call that costs little is answered on the polling thread itself, with no hand-off at
all (``CallCosts`` says which), where its method allows it: a model RPC that never waits
on other requests (no batching, no shadowing).

What a client sees is what grpc/_server.py gives it: the code, details and trailing
metadata a handler sets or aborts with; UNKNOWN "Exception calling application: ..."
for an exception; INTERNAL for a request that does not parse or an answer that does
not serialize; and the termination callbacks run when the call ends, answered or
cancelled.

This uses gRPC Python's Cython layer and grpc.Server's core server, which are not its
public API. Where a grpcio lacks them, every method stays with grpc.Server (a warning
says so) and the server answers as before, only slower.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from grpc import _compression
from grpc._cython import cygrpc

from onnx_serving.server.api.call_costs import CallCosts, sized

log = logging.getLogger(__name__)

Observe = Callable[[str, grpc.RpcMethodHandler], "grpc.RpcMethodHandler | None"]
# A method's request -> the model it names: methods given one may run on the poller.
Key = Callable[[Any], str]

_NO_FLAGS = 0
# Guards each call's termination callbacks, added by the thread answering the call and
# taken by the poller: held for a list append or swap, so one lock for all calls costs
# nothing in contention.
_LOCK = threading.Lock()
_STATUS = {code: cygrpc.StatusCode(code.value[0]) for code in grpc.StatusCode}
# What each event of a call's own batches is, in its tag: (kind, call).
_RECEIVED, _CLOSED, _SENT = range(3)


def lane_available(server: grpc.Server) -> bool:
    """Whether this grpcio has what the lane needs (the core server of ``server``)."""
    core = getattr(server, "_cy_server", None)
    return all(hasattr(core, name) for name in ("register_method", "request_registered_call",
                                                "register_completion_queue"))


class _Method:
    """A unary method's handler, as the lane calls it, and what its calls cost by model
    and request size."""

    __slots__ = ("behavior", "costs", "deserialize", "key", "path", "serialize")

    def __init__(self, path: str, handler: grpc.RpcMethodHandler, key: Key | None,
                 inline_cpu: float) -> None:
        self.path = path
        self.behavior = handler.unary_unary
        self.deserialize = handler.request_deserializer
        self.serialize = handler.response_serializer
        self.key = key
        self.costs = CallCosts(inline_cpu)


class _Context(grpc.ServicerContext):
    """One call: its core call and what its handler has set, as grpc.ServicerContext."""

    __slots__ = (
        "_aborted",
        "_call",
        "_callbacks",
        "_cancelled",
        "_code",
        "_compression",
        "_deadline",
        "_details",
        "_initial_sent",
        "_metadata",
        "_statused",
        "_trailing",
        "method",
    )

    def __init__(self, event: Any, method: _Method) -> None:
        self.method = method
        self._call = event.call
        self._deadline: float = event.call_details.deadline
        self._metadata = event.invocation_metadata
        self._callbacks: list[Callable[[], None]] | None = []
        self._cancelled = False
        self._statused = False
        self._aborted = False
        self._initial_sent = False
        self._code: grpc.StatusCode | None = None
        self._details: bytes | None = None
        self._trailing: Any = None
        self._compression: grpc.Compression | None = None

    # grpc.ServicerContext and grpc.RpcContext
    def is_active(self) -> bool:
        return not self._cancelled and not self._statused

    def time_remaining(self) -> float:
        return max(self._deadline - time.time(), 0)

    def cancel(self) -> None:
        self._call.cancel()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with _LOCK:
            if self._callbacks is None:
                return False
            self._callbacks.append(callback)
            return True

    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return bytes(self._call.peer()).decode("utf-8", "replace")

    def peer_identities(self) -> Sequence[bytes] | None:
        identities: Sequence[bytes] | None = cygrpc.peer_identities(self._call)
        return identities

    def peer_identity_key(self) -> str | None:
        key = cygrpc.peer_identity_key(self._call)
        return None if key is None else bytes(key).decode("utf-8", "replace")

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        context = cygrpc.auth_context(self._call) or {}
        return {bytes(key).decode("utf-8", "replace") if isinstance(key, bytes) else key: value
                for key, value in context.items()}

    def set_compression(self, compression: grpc.Compression) -> None:
        self._compression = compression

    def disable_next_message_compression(self) -> None:
        """A no-op: the one answer is compressed as the channel says (grpc.Server would send
        it uncompressed); the client reads the same message either way."""

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        if self._cancelled:
            raise grpc.RpcError("the call was cancelled")
        if self._initial_sent:
            raise ValueError("Initial metadata no longer allowed!")
        self._initial_sent = True
        self._call.start_server_batch(
            (cygrpc.SendInitialMetadataOperation(self._initial(initial_metadata), _NO_FLAGS),),
            (_SENT, self))

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailing = trailing_metadata

    def trailing_metadata(self) -> Any:
        return self._trailing

    def abort(self, code: grpc.StatusCode, details: str) -> None:  # type: ignore[override]
        if code == grpc.StatusCode.OK:  # as gRPC Python: OK is no way to fail a call
            log.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code, details = grpc.StatusCode.UNKNOWN, ""
        self._code = code
        self._details = details.encode("utf-8")
        self._aborted = True
        raise _Aborted()

    def abort_with_status(self, status: grpc.Status) -> None:  # type: ignore[override]
        self._trailing = status.trailing_metadata
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details.encode("utf-8")

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> bytes | None:
        return self._details

    # The lane's side
    def answer(self, response: bytes | None) -> None:
        """Sends the status the handler set (OK unless it set one), with ``response``."""
        code = _STATUS[self._code] if self._code is not None else cygrpc.StatusCode.ok
        self._status(code, self._details or b"", response)

    def fail(self, code: grpc.StatusCode, details: bytes) -> None:
        """Ends the call with ``code`` and ``details``, unless its handler set its own."""
        own = self._code
        self._status(_STATUS[own if own is not None else code],
                     self._details if self._details is not None else details, None)

    def aborted(self) -> bool:
        return self._aborted

    def closed(self, cancelled: bool) -> list[Callable[[], None]]:
        """The call is over; its termination callbacks, to run once."""
        self._cancelled = self._cancelled or cancelled
        with _LOCK:
            callbacks, self._callbacks = self._callbacks or [], None
        return callbacks

    def _status(self, code: Any, details: bytes, response: bytes | None) -> None:
        if self._cancelled or self._statused:
            return
        self._statused = True
        operations = [cygrpc.SendStatusFromServerOperation(self._trailing, code, details,
                                                           _NO_FLAGS)]
        if not self._initial_sent:
            self._initial_sent = True
            operations.append(cygrpc.SendInitialMetadataOperation(self._initial(None),
                                                                  _NO_FLAGS))
        if response is not None:
            operations.append(cygrpc.SendMessageOperation(response, _NO_FLAGS))
        self._call.start_server_batch(operations, (_SENT, self))

    def _initial(self, metadata: Any) -> Any:
        if self._compression is None:
            return metadata
        return (_compression.compression_algorithm_to_metadata(self._compression),
                *(metadata or ()))


class _Aborted(Exception):
    """What ``abort`` raises through the handler: the call's status is already set."""


def _parse(context: _Context, payload: bytes) -> tuple[bool, Any]:
    """The request, as grpc/_server.py's loop parses it; (False, None) once failed."""
    deserialize = context.method.deserialize
    try:
        return True, deserialize(payload) if deserialize else payload
    except Exception:
        log.exception("Exception deserializing message!")
        context.fail(grpc.StatusCode.INTERNAL, b"Exception deserializing request!")
        return False, None


def _answer(context: _Context, request: Any, key: Hashable | None) -> None:
    """The rest of a call, as grpc/_server.py's _unary_response_in_pool; a successful
    call's CPU on this thread is counted to its method's ``key``."""
    started = time.thread_time()
    method = context.method
    try:
        response = method.behavior(request, context)
    except Exception as exc:  # the handler's failure is the client's status
        if context.aborted():
            context.fail(grpc.StatusCode.UNKNOWN, b"RPC Aborted")
        elif context.is_active():
            log.exception("Exception calling application: %s", exc)
            context.fail(grpc.StatusCode.UNKNOWN,
                         f"Exception calling application: {exc}".encode())
        return
    try:
        serialized = method.serialize(response) if method.serialize else response
        if not isinstance(serialized, bytes):  # gRPC Python's loop would never answer
            raise TypeError(f"a response of {type(serialized).__name__}, not bytes")
    except Exception:
        log.exception("Exception serializing message!")
        context.fail(grpc.StatusCode.INTERNAL, b"Failed to serialize response!")
        return
    context.answer(serialized)
    if key is not None and context.code() is None:
        method.costs.spent(key, time.thread_time() - started)


class _Lane:
    """The completion queue of our unary methods, its polling thread and its workers."""

    def __init__(self, core: Any, workers: int, inline_cpu: float) -> None:
        self._core = core
        self._inline_cpu = inline_cpu
        self._queue = cygrpc.CompletionQueue()
        core.register_completion_queue(self._queue)
        self._methods: list[_Method] = []
        self._work: queue.SimpleQueue[tuple[_Context, Any, Hashable | None] | None] = \
            queue.SimpleQueue()
        # Workers start as calls need them, as gRPC Python's pool starts its threads: one
        # token per worker that has answered a call and waits for the next. Only the
        # poller starts them, so only it appends to the list.
        self._most = workers
        self._idle: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._poller = threading.Thread(target=self._poll, name="grpc-unary-poller",
                                        daemon=True)
        # The poller's counts: calls asked of the core and not yet given, calls given and
        # not yet closed. Both at 0: the server has shut down and the last call is over.
        self._asked = 0
        self._open = 0
        self._ending = False

    def add(self, path: str, handler: grpc.RpcMethodHandler, key: Key | None) -> None:
        self._core.register_method(path)
        self._methods.append(_Method(path, handler, key, self._inline_cpu))

    def start(self) -> None:
        """Once the core server has started."""
        for method in self._methods:
            self._ask(method)
        self._poller.start()

    def join(self) -> None:
        """Once the core server has shut down: the lane ends with its last call."""
        if self._poller.ident is None:  # never started: the server never was
            return
        self._poller.join()  # then no worker starts any more
        for worker in self._workers:
            worker.join()

    def _ask(self, method: _Method) -> None:
        self._core.request_registered_call(self._queue, self._queue, method.path, method)
        self._asked += 1

    def _poll(self) -> None:
        try:
            while True:
                event = self._queue.poll()
                try:
                    if not self._step(event):
                        break
                except Exception:  # one call's fault must not stop every other call
                    log.exception("The unary lane failed on an event; it goes on")
        finally:
            for _ in self._workers:
                self._work.put(None)

    def _step(self, event: Any) -> bool:
        """Handles one event; False once the queue has shut down."""
        kind = event.completion_type
        if kind == cygrpc.CompletionType.queue_shutdown:
            return False
        if kind != cygrpc.CompletionType.operation_complete:
            return True
        tag = event.tag
        if isinstance(tag, _Method):
            self._asked -= 1
            if event.success:  # else the server is shutting down: ask no more
                self._ask(tag)
                self._arrived(event, tag)
        elif tag[0] is _RECEIVED:
            self._received(tag[1], event.batch_operations[0].message())
        elif tag[0] is _CLOSED:
            self._open -= 1
            for callback in tag[1].closed(event.batch_operations[0].cancelled()):
                try:
                    callback()
                except Exception:
                    log.exception("Exception calling callback!")
        if self._asked == 0 and self._open == 0 and not self._ending:
            self._ending = True
            self._queue.shutdown()
        return True

    def _arrived(self, event: Any, method: _Method) -> None:
        context = _Context(event, method)
        self._open += 1
        call = event.call
        call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS),),
                                (_CLOSED, context))
        call.start_server_batch((cygrpc.ReceiveMessageOperation(_NO_FLAGS),),
                                (_RECEIVED, context))

    def _received(self, context: _Context, payload: bytes | None) -> None:
        if payload is not None:
            parsed, request = _parse(context, payload)
            if not parsed:
                return
            method = context.method
            key = sized(method.key(request), len(payload)) if method.key is not None else None
            if method.costs.cheap(key):
                _answer(context, request, key)
            else:
                self._hand_over((context, request, key))
        elif context.is_active():  # the client closed without sending one
            context.fail(grpc.StatusCode.UNIMPLEMENTED,
                         f'"{context.method.path}" requires exactly one request message.'
                         .encode())

    def _hand_over(self, item: tuple[_Context, Any, Hashable | None]) -> None:
        """To a worker that waits, else to a new one while there are fewer than the most;
        at the most, the call waits for the first worker free. Where no worker runs and
        none can start (the process is out of threads), the poller answers it."""
        try:
            self._idle.get_nowait()
        except queue.Empty:
            if (len(self._workers) < self._most and not self._start_worker()
                    and not self._workers):
                _answer(*item)
                return
        self._work.put(item)

    def _start_worker(self) -> bool:
        worker = threading.Thread(target=self._worker, daemon=True,
                                  name=f"grpc-unary-{len(self._workers)}")
        try:
            worker.start()
        except RuntimeError as exc:  # "can't start new thread": calls wait for those running
            log.error("The unary lane could not start a worker (%s); %d run", exc,
                      len(self._workers))
            return False
        self._workers.append(worker)
        return True

    def _worker(self) -> None:
        while (item := self._work.get()) is not None:
            try:
                _answer(*item)
            except Exception:  # one call's fault must not take a worker away
                log.exception("The unary lane failed to answer a call")
            self._idle.put(None)


class UnaryServer(grpc.Server):
    """``server`` with the unary methods registered by method path answered by a lane of
    up to ``workers`` threads, started as calls need them, each call through ``observe``
    (the request metrics and access log).
    A method for which ``inline`` gives where its request names a model may run on the
    lane's poller, for a model whose calls cost at most ``inline_cpu`` seconds of CPU."""

    def __init__(self, server: grpc.Server, *, workers: int, observe: Observe,
                 inline: Callable[[str], Key | None] = lambda path: None,
                 inline_cpu: float = 0.0) -> None:
        self._server = server
        self._observe = observe
        self._inline = inline
        self._lane: _Lane | None = None
        if lane_available(server):
            self._lane = _Lane(server._cy_server, workers,  # type: ignore[attr-defined]
                               inline_cpu)
        else:
            log.warning("This grpcio (%s) lacks what unary calls need to skip its server "
                        "loop; every call goes through it, at about 0.2 ms of CPU more",
                        grpc.__version__)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler],
                                 ) -> None:
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler],
    ) -> None:
        others = {}
        for name, handler in method_handlers.items():
            path = f"/{service_name}/{name}"
            if self._lane is None or handler.request_streaming or handler.response_streaming:
                others[name] = handler
                continue
            self._lane.add(path, self._observe(path, handler) or handler, self._inline(path))
        if others:
            self._server.add_registered_method_handlers(service_name, others)

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    def start(self) -> None:
        self._server.start()
        if self._lane is not None:
            self._lane.start()

    def stop(self, grace: float | None) -> threading.Event:
        stopped = self._server.stop(grace)
        lane = self._lane
        if lane is None:
            return stopped
        done = threading.Event()

        def both() -> None:
            try:
                stopped.wait()
                lane.join()
            finally:
                done.set()

        threading.Thread(target=both, name="grpc-unary-stop", daemon=True).start()
        return done

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)
