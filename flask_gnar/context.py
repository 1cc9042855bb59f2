"""The context of the work in hand: the request id and the trace it belongs to.

One home for what logging, peer calls and SQS need to know about "the request
being handled": the id a client sent (or one made for it) and, when
:class:`~flask_gnar.GnarTracing` is active, the span of the trace the work is part
of. Logging reads it (:class:`RequestContextFilter`), the peer client sends it,
SQS messages carry it.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from flask import Flask, Response, after_this_request, g, has_request_context, request

from .state import get_state

if TYPE_CHECKING:  # pragma: no cover
    import requests

REQUEST_ID_HEADER = "X-Request-ID"
#: The message attributes that carry a trace through SQS (W3C Trace Context names).
TRACE_ATTRIBUTE_NAMES = ("traceparent", "tracestate")

_INCOMING_REQUEST_ID = re.compile(r"[\w.:@/+=-]{1,200}")

T = TypeVar("T")


# --- request ids ----------------------------------------------------------------------


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id of the request being handled, or ``None`` outside a request.

    Settled on first use (a peer call, a log line): a well-formed incoming
    ``X-Request-ID`` is reused, else one is made. Requests that never need one
    pay nothing for it.
    """
    if not has_request_context():
        return None
    request_id: str | None = g.get("gnar_request_id")
    if request_id is None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _INCOMING_REQUEST_ID.fullmatch(incoming) else new_request_id()
        g.gnar_request_id = request_id
        after_this_request(partial(return_request_id, request_id))
    return request_id


def return_request_id(request_id: str, response: Response) -> Response:
    """The client gets back the id that was used (to find the request in the logs)."""
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


# --- the active span ------------------------------------------------------------------


def current_span_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the active span as 32 and 16 lower-case hex digits.

    ``None`` when no span is active. OpenTelemetry is only looked at once something
    imported it: without it no span can be active, and nothing is imported here.
    """
    trace_api = sys.modules.get("opentelemetry.trace")
    if trace_api is None:
        return None
    span_context = trace_api.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


class RequestContextFilter(logging.Filter):
    """Adds ``record.request_id`` (``""`` outside a request) and, while a span is
    active, ``record.trace_id`` and ``record.span_id`` (``""`` otherwise)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = current_request_id() or ""
        if not getattr(record, "trace_id", None):
            ids = current_span_ids()
            record.trace_id, record.span_id = ids if ids else ("", "")
        return True


#: The name this filter had when it only added request ids.
RequestIdFilter = RequestContextFilter


def install_context_filter() -> None:
    """Our filter on every root handler (once): every library's records get the ids."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, RequestContextFilter) for existing in handler.filters):
            handler.addFilter(RequestContextFilter())


install_request_id_filter = install_context_filter


# --- what a tracing extension offers the rest ----------------------------------------


class TraceHooks(Protocol):
    """What :class:`~flask_gnar.GnarTracing` does for peer calls and SQS messages.

    Found at ``app.extensions["gnar"].tracing`` (``None`` when tracing is off).
    """

    def peer_call(
        self,
        service: str,
        method: str,
        url: str,
        headers: dict[str, str],
        send: Callable[[], requests.Response],
    ) -> requests.Response:
        """Run ``send`` in a client span whose context is put into ``headers`` first."""

    def message_attributes(
        self, queue_name: str, attributes: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """``attributes`` plus the current trace context (``traceparent``, ``tracestate``)."""

    def handle_message(
        self, queue_name: str, message: Mapping[str, Any], callback: Callable[[Any], T]
    ) -> T:
        """Run ``callback(message)`` in a span of the trace the message carries."""


def trace_hooks(app: Flask) -> TraceHooks | None:
    """The app's tracing, or ``None`` when tracing is off (or not initialised)."""
    return get_state(app).tracing


def traced_message_attributes(
    app: Flask, queue_name: str, attributes: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """The MessageAttributes of a message sent now: the trace context added when tracing."""
    hooks = trace_hooks(app)
    return attributes if hooks is None else hooks.message_attributes(queue_name, attributes)


def run_traced_callback(
    app: Flask, queue_name: str, callback: Callable[[Any], T], message: Mapping[str, Any]
) -> T:
    """``callback(message)``, in a span of the message's trace when tracing."""
    hooks = trace_hooks(app)
    return callback(message) if hooks is None else hooks.handle_message(queue_name, message, callback)


def with_trace_attribute_names(names: list[str] | None) -> list[str]:
    """The MessageAttributeNames to receive: the caller's, plus the trace context's."""
    names = list(names or [])
    if any(name in ("All", ".*") for name in names):
        return names
    return names + [name for name in TRACE_ATTRIBUTE_NAMES if name not in names]
