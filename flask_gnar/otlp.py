"""GnarTracing's lean spans and their OTLP/HTTP export (imported only when tracing is on).

OpenTelemetry's SDK span costs about 25 µs to start and end and its OTLP encoder
about 27 µs a span, more than a whole request of a small Flask route on bjoern.
flask-gnar's spans implement the OpenTelemetry API's :class:`~opentelemetry.trace.Span`
(so ``trace.get_current_span()``, propagators and log correlation see them) with
none of the SDK's per-attribute checks and locks; the SDK's samplers (its four
fixed ones decided as they would decide), id generator and resource detection
are used as they are. Ended spans wait in a per-process buffer and are encoded a
batch at a time, straight to OTLP protobuf, and posted (``OTEL_BSP_*`` and
``OTEL_EXPORTER_OTLP_*`` apply): by the request that fills a batch when the
kept-alive connection is idle, else by a thread of that process.
"""

from __future__ import annotations

import collections
import gzip
import http.client
import logging
import os
import select
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from opentelemetry import trace
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PBResource
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util import types

from .exceptions import ConfigError

log = logging.getLogger(__name__)

SpanSink = Callable[["LeanSpan"], None]
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"


# --- the span ---------------------------------------------------------------------------


class LeanSpan(trace.Span):
    """A recording span: plain fields, handed to ``sink`` once when it ends."""

    __slots__ = (
        "name", "context", "parent_id", "kind", "attributes", "events", "start_time",
        "end_time", "error", "status_message", "_sink",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent_id: int,
        kind: SpanKind,
        attributes: dict[str, Any],
        sink: SpanSink,
    ) -> None:
        self.name = name
        self.context = context
        self.parent_id = parent_id
        self.kind = kind
        self.attributes = attributes
        self.events: tuple[tuple[str, Mapping[str, Any], int], ...] = ()
        self.start_time = time.time_ns()
        self.end_time: int | None = None
        self.error = False
        self.status_message = ""
        self._sink = sink

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self.end_time is None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self.end_time is None:
            self.attributes.update(attributes)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self.end_time is None:
            self.events += ((name, dict(attributes or {}), timestamp or time.time_ns()),)

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None:
            return
        code = status.status_code if isinstance(status, Status) else status
        if isinstance(status, Status):
            description = status.description
        if code is StatusCode.ERROR:
            self.error, self.status_message = True, description or ""
        elif code is StatusCode.OK:
            self.error, self.status_message = False, ""

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self.add_event(
            "exception",
            {
                "exception.type": type(exception).__qualname__,
                "exception.message": str(exception),
                "exception.stacktrace": "".join(traceback.format_exception(exception)),
                **(attributes or {}),
            },
            timestamp,
        )

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is None:
            self.end_time = end_time or time.time_ns()
            self._sink(self)

    def __repr__(self) -> str:
        return f"<LeanSpan {self.name!r} {self.context.trace_id:032x}/{self.context.span_id:016x}>"


class LeanTracer:
    """Starts spans with the SDK's sampler and id generator; ended spans go to ``sink``.

    The SDK's fixed samplers (``always_on``, ``always_off`` and their ``parentbased_``
    forms) are decided here as they would decide, without asking them: their
    answer depends on the parent's sampled flag at most, and asking costs a
    ``SamplingResult`` per span.
    """

    def __init__(self, sampler: Sampler, sink: SpanSink) -> None:
        self.sampler = sampler
        self.sink = sink
        self.ids = RandomIdGenerator()
        self._fixed = fixed_decision(sampler)

    def start_span(
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> trace.Span:
        """A span whose parent is the span in ``context`` (default: the current one)."""
        return self.start(name, context, kind, dict(attributes) if attributes else {})

    def start(self, name: str, context: Any, kind: SpanKind, attributes: dict[str, Any]) -> trace.Span:
        """:meth:`start_span`, the span keeping ``attributes`` (the caller's own dict)."""
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, parent_id, trace_state = parent.trace_id, parent.span_id, parent.trace_state
        else:
            trace_id, parent_id, trace_state = self.ids.generate_trace_id(), 0, EMPTY_TRACE_STATE
        fixed = self._fixed
        if fixed is not None:
            sample_root, follow_parent = fixed
            sampled = parent.trace_flags.sampled if follow_parent and parent.is_valid else sample_root
            recording = sampled
        else:
            decision = self.sampler.should_sample(context, trace_id, name, kind, attributes)
            sampled = decision.decision is Decision.RECORD_AND_SAMPLE
            recording = decision.decision is not Decision.DROP
            if decision.trace_state is not None:
                trace_state = decision.trace_state
            if decision.attributes and recording:
                attributes.update(decision.attributes)
        span_context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            False,
            SAMPLED if sampled else NOT_SAMPLED,
            trace_state,
        )
        if not recording:
            return NonRecordingSpan(span_context)
        return LeanSpan(name, span_context, parent_id, kind, attributes, self.sink)

    @contextmanager
    def start_as_current_span(
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> Iterator[trace.Span]:
        """The span, current while the block runs; an exception is recorded and re-raised."""
        span = self.start_span(name, context, kind, attributes)
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                yield span
            except BaseException as error:
                if span.is_recording():
                    span.record_exception(error)
                    span.set_attribute("error.type", type(error).__qualname__)
                    span.set_status(Status(StatusCode.ERROR, str(error)))
                raise


SAMPLED, NOT_SAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
EMPTY_TRACE_STATE = TraceState()


def fixed_decision(sampler: Sampler) -> tuple[bool, bool] | None:
    """(sample a root span, follow a parent's sampled flag) for the SDK's fixed
    samplers; ``None`` for the others, which are asked."""
    from opentelemetry.sdk.trace import sampling

    return {
        id(sampling.ALWAYS_ON): (True, False),
        id(sampling.ALWAYS_OFF): (False, False),
        id(sampling.DEFAULT_ON): (True, True),
        id(sampling.DEFAULT_OFF): (False, True),
    }.get(id(sampler))


# --- the buffer and its export thread --------------------------------------------------


def env_int(name: str, default: int, low: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low:
        raise ConfigError(name, f"expected a whole number of at least {low}, got {raw!r}")
    return value


@dataclass(frozen=True)
class BatchSettings:
    """``OTEL_BSP_*``: how long spans wait and how many are sent at once."""

    schedule_delay_millis: int = 5000
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    export_timeout_millis: int = 30000

    @classmethod
    def from_environment(cls) -> BatchSettings:
        settings = cls(
            schedule_delay_millis=env_int("OTEL_BSP_SCHEDULE_DELAY", 5000, low=1),
            max_queue_size=env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048, low=1),
            max_export_batch_size=env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, low=1),
            export_timeout_millis=env_int("OTEL_BSP_EXPORT_TIMEOUT", 30000, low=1),
        )
        if settings.max_export_batch_size > settings.max_queue_size:
            raise ConfigError(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                f"must not exceed OTEL_BSP_MAX_QUEUE_SIZE ({settings.max_queue_size})",
            )
        return settings


class SpanBuffer:
    """Ended spans of one process, exported in batches: a full one by the request that
    fills it when the exporter can send it at once (``send_now``), the rest by a
    thread of that process. Past ``OTEL_BSP_MAX_QUEUE_SIZE`` waiting, spans are dropped."""

    def __init__(self, export: Callable[[list[LeanSpan]], None], settings: BatchSettings) -> None:
        self.export = export
        self.settings = settings
        self.dropped = 0
        self._items: collections.deque[LeanSpan] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._idle = threading.Condition()
        self._exporting = False
        self._flushing = False
        self._thread = threading.Thread(target=self._run, name="gnar-span-export", daemon=True)
        self._thread.start()

    def add(self, span: LeanSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        items = self._items
        if len(items) >= self.settings.max_queue_size:
            self.dropped += 1
            return
        items.append(span)
        if len(items) == self.settings.max_export_batch_size:
            send_now = getattr(self.export, "send_now", None)
            if send_now is None or not send_now(items, self.settings.max_export_batch_size):
                self._wake.set()

    def _run(self) -> None:
        delay = self.settings.schedule_delay_millis / 1000
        while not self._stopping:
            woken = self._wake.wait(delay)
            self._wake.clear()
            flushing, self._flushing = self._flushing, False
            # woken by a full batch: send full batches only (a partial one waits for
            # the timer, or every few spans that end meanwhile would cost a request)
            self._export_pending(everything=flushing or not woken)
        self._export_pending(everything=True)
        close = getattr(self.export, "close", None)
        if close is not None:
            close()

    def _export_pending(self, everything: bool) -> None:
        with self._idle:
            self._exporting = True
        size = self.settings.max_export_batch_size
        try:
            remaining = len(self._items) if everything else 0
            while remaining > 0 or len(self._items) >= size:
                batch = take(self._items, size)
                if not batch:  # a request sent them meanwhile
                    break
                remaining -= len(batch)
                try:
                    self.export(batch)
                except Exception:
                    log.warning("exporting %d span(s) failed", len(batch), exc_info=True)
            settle = getattr(self.export, "settle", None)
            if everything and settle is not None:
                settle()
        finally:
            with self._idle:
                self._exporting = False
                self._idle.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Export what is buffered now; ``False`` if it took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._items or self._exporting:
            self._flushing = True
            self._wake.set()
            with self._idle:
                self._idle.wait(0.05)
            if time.monotonic() > deadline:
                return False
        return True

    def shutdown(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def take(items: collections.deque[LeanSpan], size: int) -> list[LeanSpan]:
    """Up to ``size`` spans off the front of ``items``, which another thread may be
    emptying at the same time."""
    batch: list[LeanSpan] = []
    try:
        while len(batch) < size:
            batch.append(items.popleft())
    except IndexError:
        pass
    return batch


# --- OTLP/HTTP protobuf ----------------------------------------------------------------
# A batch is encoded at once, each span straight into the bytes of one OTLP ``Span``
# message behind one envelope: done in a loop, that costs less than half of what
# encoding each span as it ends does (measured:
# bench/tracing_path.py). Field numbers: opentelemetry/proto/trace/v1/trace.proto.


def varint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    return AnyValue(string_value=str(value))


TRACE_STATE, PARENT_ID, NAME = b"\x1a", b"\x22\x08", b"\x2a"
ATTRIBUTE, EVENT, STATUS = b"\x4a", b"\x5a", b"\x7a"
FIRST, SECOND = b"\x0a", b"\x12"  # fields 1 and 2 of the envelope messages
#: trace_id (field 1, 16 bytes) and span_id (field 2, 8 bytes) as one big-endian number
IDS_HEAD = (0x0A10 << 208) | (0x1208 << 64)
#: kind (field 6), then start and end (fields 7 and 8, fixed64)
KIND_TIMES = struct.Struct("<BBBQBQ")
#: flags (field 16, fixed32)
FLAGS = struct.Struct("<BBI")
ERROR_STATUS_CODE = trace_pb2.Status.STATUS_CODE_ERROR
CACHED_TYPES = frozenset({str, bool, int, float})


class SpanEncoder:
    """Spans to OTLP protobuf; attribute pairs that repeat (the method, the route, the
    status) are encoded once and reused."""

    CACHE_LIMIT = 4096

    def __init__(self, resource: Resource, scope_name: str) -> None:
        self._pairs: dict[tuple[str, type, Any], bytes] = {}
        resource_message = PBResource(
            attributes=[KeyValue(key=k, value=any_value(v)) for k, v in resource.attributes.items()]
        )
        self._resource = length_delimited(FIRST, resource_message.SerializeToString())
        self._scope = length_delimited(FIRST, InstrumentationScope(name=scope_name).SerializeToString())

    def attribute(self, key: str, value: Any) -> bytes:
        kind = type(value)
        if kind not in CACHED_TYPES:
            return length_delimited(ATTRIBUTE, KeyValue(key=key, value=any_value(value)).SerializeToString())
        cache_key = (key, kind, value)
        encoded = self._pairs.get(cache_key)
        if encoded is None:
            if len(self._pairs) >= self.CACHE_LIMIT:
                self._pairs.clear()
            pair = KeyValue(key=key, value=any_value(value)).SerializeToString()
            encoded = self._pairs[cache_key] = length_delimited(ATTRIBUTE, pair)
        return encoded

    def span(self, span: LeanSpan) -> bytes:
        """One ``Span`` message, length-prefixed as a ``ScopeSpans.spans`` entry."""
        trace_id, span_id, _, flags, trace_state, _ = span.context
        name = span.name.encode()
        parts = [(IDS_HEAD | (trace_id << 80) | span_id).to_bytes(28, "big")]
        if trace_state:
            parts.append(length_delimited(TRACE_STATE, trace_state.to_header().encode()))
        if span.parent_id:
            parts += [PARENT_ID, span.parent_id.to_bytes(8, "big")]
        parts += [NAME, varint(len(name)), name]
        # OTLP counts kinds from UNSPECIFIED = 0
        parts.append(KIND_TIMES.pack(0x30, span.kind.value + 1, 0x39, span.start_time, 0x41,
                                     span.end_time or span.start_time))
        attribute = self.attribute
        parts += [attribute(key, value) for key, value in span.attributes.items()]
        if span.events:
            parts += [self.event(*event) for event in span.events]
        if span.error:
            status = trace_pb2.Status(code=ERROR_STATUS_CODE, message=span.status_message)
            parts.append(length_delimited(STATUS, status.SerializeToString()))
        parts.append(FLAGS.pack(0x85, 0x01, flags))
        body = b"".join(parts)
        return SECOND + varint(len(body)) + body

    @staticmethod
    def event(name: str, attributes: Mapping[str, Any], timestamp: int) -> bytes:
        event = trace_pb2.Span.Event(
            name=name,
            time_unix_nano=timestamp,
            attributes=[KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()],
        )
        return length_delimited(EVENT, event.SerializeToString())

    def request(self, spans: list[LeanSpan]) -> bytes:
        """An ``ExportTraceServiceRequest`` of ``spans``."""
        encode = self.span
        scope_spans = self._scope + b"".join([encode(span) for span in spans])
        resource_spans = self._resource + length_delimited(SECOND, scope_spans)
        return length_delimited(FIRST, resource_spans)


def otlp_variable(name: str) -> tuple[str, str]:
    """``OTEL_EXPORTER_OTLP_TRACES_<NAME>``, else ``OTEL_EXPORTER_OTLP_<NAME>``: (variable, value)."""
    for variable in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = os.environ.get(variable, "").strip()
        if value:
            return variable, value
    return "", ""


def otlp_endpoint() -> str:
    variable, value = otlp_variable("ENDPOINT")
    if not value:
        return DEFAULT_ENDPOINT
    if not value.startswith(("http://", "https://")):
        raise ConfigError(variable, f"expected an http:// or https:// URL, got {value!r}")
    if variable == "OTEL_EXPORTER_OTLP_ENDPOINT":
        return value.rstrip("/") + "/v1/traces"
    return value


def otlp_headers() -> dict[str, str]:
    variable, value = otlp_variable("HEADERS")
    headers = {}
    for pair in filter(None, (item.strip() for item in value.split(","))):
        key, equals, header_value = pair.partition("=")
        if not equals or not key.strip():
            raise ConfigError(variable, f"expected key=value pairs separated by commas, got {pair!r}")
        headers[unquote(key.strip())] = unquote(header_value.strip())
    return headers


def otlp_timeout() -> float:
    variable, value = otlp_variable("TIMEOUT")
    if not value:
        return 10.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ConfigError(variable, f"expected a positive number of seconds, got {value!r}")
    return seconds


def otlp_compression() -> bool:
    variable, value = otlp_variable("COMPRESSION")
    if value not in ("", "none", "gzip"):
        raise ConfigError(variable, f"expected gzip or none, got {value!r}")
    return value == "gzip"


#: How long the request thread may spend sending a batch or reading a reply that has begun
#: to arrive; past it the connection is dropped (the export thread opens a new one).
SEND_NOW_SECONDS = 0.05


class OTLPHTTPExport:
    """Posts batches to the OTLP/HTTP endpoint (protobuf): from the export thread, and
    full batches from the request thread while the connection is idle (:meth:`send_now`).

    A plain ``http://`` endpoint that no proxy variable applies to (the usual
    collector next to the service) gets one kept-alive :mod:`http.client`
    connection, a fifth of the CPU of a ``requests`` post; ``https://`` and proxied
    endpoints are posted with ``requests`` (its certificates, its proxies).
    """

    @staticmethod
    def check_settings() -> None:
        """Fail at start-up on a malformed ``OTEL_EXPORTER_OTLP_*`` value."""
        otlp_endpoint(), otlp_headers(), otlp_timeout(), otlp_compression()

    def __init__(self, encoder: SpanEncoder) -> None:
        self.encoder = encoder
        self.endpoint = otlp_endpoint()
        self.headers = {"Content-Type": "application/x-protobuf", **otlp_headers()}
        self.timeout = otlp_timeout()
        self.gzip = otlp_compression()
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        parts = urlsplit(self.endpoint)
        self.direct = parts.scheme == "http" and not requests.utils.get_environ_proxies(self.endpoint)
        self._address = (parts.hostname or "localhost", parts.port or 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._connection: http.client.HTTPConnection | None = None
        self._session: requests.Session | None = None
        self._failing = False
        #: Held by whichever thread uses the connection; the request thread never waits for it.
        self._lock = threading.Lock()
        #: A post the request thread sent whose reply nobody has read yet (its span count).
        self._reply_pending = 0

    def __call__(self, spans: list[LeanSpan]) -> None:
        with self._lock:
            self._read_pending_reply(self.timeout)
            self._outcome(len(spans), self._post_direct if self.direct else self._post, spans)

    def send_now(self, items: collections.deque[LeanSpan], size: int) -> bool:
        """From the request thread, as a batch fills: send it without waiting for anything.

        Only on the kept-alive connection, idle (the last reply already arrived) and
        open; otherwise ``False`` and the export thread posts it. Waking that thread
        costs a bjoern worker more CPU than the post (GIL hand-offs), so a healthy
        receiver gets every full batch this way and the thread only runs its timer.
        """
        if not self.direct or not self._lock.acquire(blocking=False):
            return False
        try:
            connection = self._connection
            if connection is None or not self._read_pending_reply(0.0) or closed_by_peer(connection):
                return False
            batch = take(items, size)
            try:
                self._outcome(len(batch), lambda body: self._send_without_reply(body, len(batch)), batch)
            except Exception:  # never the request's failure
                log.warning("exporting %d span(s) failed", len(batch), exc_info=True)
            return True
        finally:
            self._lock.release()

    def settle(self) -> None:
        """Wait for the reply to a post the request thread sent (a flush, the timer, stop)."""
        with self._lock:
            self._read_pending_reply(self.timeout)

    def _outcome(self, count: int, post: Callable[[bytes], int | None], spans: list[LeanSpan]) -> None:
        body = self.encoder.request(spans)
        if self.gzip:
            body = gzip.compress(body)
        try:
            status = post(body)
            ok, reason = status is None or status < 300, f"HTTP {status}"
        except (OSError, http.client.HTTPException) as error:  # requests' errors are OSErrors
            ok, reason = False, str(error) or type(error).__name__
        self._report(ok, count, reason)

    def _report(self, ok: bool, count: int, reason: str) -> None:
        if not ok and not self._failing:
            log.warning("could not export %d span(s) to %s: %s", count, self.endpoint, reason)
        self._failing = not ok

    def _send_without_reply(self, body: bytes, count: int) -> None:
        connection = self._connection
        assert connection is not None and connection.sock is not None
        connection.sock.settimeout(SEND_NOW_SECONDS)
        try:
            connection.request("POST", self._target, body, self.headers)
        except BaseException:
            self._drop_connection()
            raise
        connection.sock.settimeout(self.timeout)
        self._reply_pending = count

    def _read_pending_reply(self, wait: float) -> bool:
        """Read the reply to the request thread's last post; ``False`` if it has not
        arrived (``wait`` 0: read only a reply that is there already)."""
        count = self._reply_pending
        connection = self._connection
        if not count or connection is None or connection.sock is None:
            self._reply_pending = 0
            return True
        if not readable(connection.sock, wait):
            if wait == 0:
                return False
            self._drop_connection()  # the receiver never answered
            self._report(False, count, f"no reply within {wait:g} s")
            return True
        self._reply_pending = 0
        try:
            connection.sock.settimeout(max(wait, SEND_NOW_SECONDS))
            response = connection.getresponse()
            response.read()
            connection.sock.settimeout(self.timeout)
        except (OSError, http.client.HTTPException) as error:
            self._drop_connection()
            self._report(False, count, str(error) or type(error).__name__)
            return True
        if response.will_close:
            self._drop_connection()
        self._report(response.status < 300, count, f"HTTP {response.status}")
        return True

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._reply_pending = 0
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Close the kept-alive connection (the export thread does, as it stops)."""
        self.settle()
        with self._lock:
            self._drop_connection()
        if self._session is not None:
            self._session.close()

    def _post(self, body: bytes) -> int:
        if self._session is None:
            self._session = requests.Session()
        response = self._session.post(self.endpoint, data=body, headers=self.headers, timeout=self.timeout)
        return response.status_code

    def _post_direct(self, body: bytes) -> int:
        connection = self._connection
        if connection is None or closed_by_peer(connection):
            if connection is not None:
                connection.close()
            connection = self._connection = http.client.HTTPConnection(*self._address, timeout=self.timeout)
        try:
            connection.request("POST", self._target, body, self.headers)
            response = connection.getresponse()
            response.read()
        except BaseException:
            self._connection = None
            connection.close()
            raise
        if response.will_close:
            self._connection = None
            connection.close()
        return response.status


def closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether a kept-alive connection is readable before a request: closed by the
    receiver (an idle timeout), so the post goes on a new one rather than failing."""
    return connection.sock is None or readable(connection.sock, 0.0)


def readable(sock: Any, wait: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(wait * 1000))


class ConsoleExport:
    """``OTEL_TRACES_EXPORTER=console``: the SDK's console exporter, on SDK spans."""

    def __init__(self, resource: Resource, scope_name: str) -> None:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope as Scope

        self.resource = resource
        self.scope = Scope(scope_name)
        self.exporter = ConsoleSpanExporter()

    def __call__(self, spans: list[LeanSpan]) -> None:
        from opentelemetry.sdk.trace import Event, ReadableSpan

        self.exporter.export([
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=SpanContext(span.context.trace_id, span.parent_id, False) if span.parent_id else None,
                resource=self.resource,
                attributes=span.attributes,
                events=[Event(name, attributes, timestamp) for name, attributes, timestamp in span.events],
                kind=span.kind,
                status=Status(StatusCode.ERROR, span.status_message) if span.error else Status(),
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=self.scope,
            )
            for span in spans
        ])
