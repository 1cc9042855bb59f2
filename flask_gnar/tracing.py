"""GnarTracing: W3C Trace Context through OpenTelemetry (the ``flask-gnar[tracing]`` extra).

Off unless ``GNAR_TRACING`` is true; off, it registers nothing and costs nothing.
On, every request runs in a server span that continues an incoming
``traceparent``/``tracestate``; ``gnar.peer`` calls, SQS messages sent and handled
and database queries get spans of their own, and carry the context on.

OpenTelemetry's own variables choose the exporter (``OTEL_TRACES_EXPORTER``,
``OTEL_EXPORTER_OTLP_*``) and the sampler (``OTEL_TRACES_SAMPLER``,
``OTEL_TRACES_SAMPLER_ARG``). Each app has its own tracer and span buffer, made in
each process that serves (after the fork: an export thread does not survive one);
nothing is set process-wide, so ``gnar.external`` and other apps send no context.
The spans themselves are :mod:`flask_gnar.otlp`'s lean ones.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import Flask

from . import signals
from .config import Settings, parse_bool
from .exceptions import ConfigError
from .extension import GnarExtension
from .state import GnarState

if TYPE_CHECKING:  # pragma: no cover
    import requests
    from opentelemetry.propagators.textmap import Getter, Setter
    from opentelemetry.sdk.trace.sampling import Sampler
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from opentelemetry.trace import Span

    from .otlp import LeanSpan, LeanTracer, SpanBuffer

log = logging.getLogger(__name__)

T = TypeVar("T")

INSTRUMENTATION_NAME = "flask_gnar"
#: SQS takes at most this many message attributes.
MAX_MESSAGE_ATTRIBUTES = 10
#: OpenTelemetry's built-in samplers (the names of ``OTEL_TRACES_SAMPLER``).
SAMPLERS = frozenset({
    "always_on", "always_off", "traceidratio",
    "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
})
EXPORTERS = frozenset({"otlp", "console", "none"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


# --- OpenTelemetry's variables, checked at start-up ----------------------------------


def otel_setting(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def exporter_names() -> list[str]:
    """``OTEL_TRACES_EXPORTER`` (a comma-separated list; ``otlp`` by default)."""
    names = [name.strip().lower() for name in otel_setting("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown or not names:
        raise ConfigError(
            "OTEL_TRACES_EXPORTER",
            f"unknown exporter(s) {', '.join(map(repr, unknown))}; accepted: otlp, console, none",
        )
    return [name for name in names if name != "none"]


def check_otlp_protocol() -> None:
    """flask-gnar exports OTLP over HTTP with protobuf (``http/protobuf``, the default)."""
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = otel_setting(variable)
        if value and value != "http/protobuf":
            raise ConfigError(variable, f"flask-gnar exports http/protobuf only, got {value!r}")
        if value:
            return


def sampler_from_environment() -> Sampler:
    from opentelemetry.sdk.trace import sampling

    name = otel_setting("OTEL_TRACES_SAMPLER", "parentbased_always_on").lower()
    if name not in SAMPLERS:
        raise ConfigError(
            "OTEL_TRACES_SAMPLER", f"unknown sampler {name!r}; accepted: {', '.join(sorted(SAMPLERS))}"
        )
    if name.endswith("traceidratio"):
        raw = otel_setting("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(raw)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG", f"expected a ratio from 0 to 1, got {raw!r}")
        root = sampling.TraceIdRatioBased(ratio)
        return sampling.ParentBased(root) if name.startswith("parentbased") else root
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "parentbased_always_on": sampling.DEFAULT_ON,
        "parentbased_always_off": sampling.DEFAULT_OFF,
    }[name]


# --- carriers ------------------------------------------------------------------------


class EnvironGetter:
    """Reads ``traceparent`` from a WSGI environ (``HTTP_TRACEPARENT``).

    A header sent on several lines reaches the app as the server joined it
    (bjoern joins them without a separator): whatever that makes is parsed as
    it is, so a joined ``traceparent`` is malformed and starts a new trace, and a
    joined ``tracestate`` that is not valid is dropped, as Trace Context says.
    """

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key[5:].lower().replace("_", "-") for key in carrier if key.startswith("HTTP_")]


class MessageAttributeGetter:
    """Reads ``traceparent`` from an SQS message's String ``MessageAttributes``."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        attribute = carrier.get(key)
        if not isinstance(attribute, Mapping) or not isinstance(attribute.get("StringValue"), str):
            return None
        return [attribute["StringValue"]]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


class DictSetter:
    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[key] = value


# --- one provider per serving process -------------------------------------------------


class ProcessTracer:
    """The app's tracer and span buffer, made anew in each process that uses them.

    ``start`` runs from the app's start hook (in each worker, after the fork: an
    export thread does not survive one); a process that handles requests without
    ``serve()`` (a test client, another server that forks) gets its own on first use.
    """

    def __init__(self, service_name: str, sampler: Sampler, exporter_names: list[str]) -> None:
        from .otlp import BatchSettings, OTLPHTTPExport

        self.service_name = service_name
        self.sampler = sampler
        self.exporter_names = exporter_names
        self.batch_settings = BatchSettings.from_environment()
        if "otlp" in exporter_names:
            check_otlp_protocol()
            OTLPHTTPExport.check_settings()
        self._pid: int | None = None
        self._tracer: LeanTracer | None = None
        self._buffers: list[SpanBuffer] = []
        self._lock = threading.Lock()

    def tracer(self) -> LeanTracer:
        tracer = self._tracer
        if tracer is None or self._pid != os.getpid():
            return self._start()
        return tracer

    def start(self) -> None:
        """Make this process's tracer and export thread (the app's start hook)."""
        self._start()

    def _start(self) -> LeanTracer:
        from opentelemetry.sdk.resources import Resource

        from .otlp import ConsoleExport, LeanTracer, OTLPHTTPExport, SpanBuffer, SpanEncoder

        with self._lock:
            if self._tracer is not None and self._pid == os.getpid():
                return self._tracer
            resource = Resource.create({"service.name": self.service_name, "process.pid": os.getpid()})
            buffers: list[SpanBuffer] = []
            if "otlp" in self.exporter_names:
                encoder = SpanEncoder(resource, INSTRUMENTATION_NAME)
                buffers.append(SpanBuffer(OTLPHTTPExport(encoder), self.batch_settings))
            if "console" in self.exporter_names:
                console = ConsoleExport(resource, INSTRUMENTATION_NAME)
                buffers.append(SpanBuffer(console, self.batch_settings))
            self._buffers = buffers
            self._tracer = LeanTracer(self.sampler, fan_out(buffers))
            self._pid = os.getpid()
            return self._tracer

    def stop(self) -> None:
        """Export what is pending and stop this process's export thread."""
        with self._lock:
            buffers, mine = self._buffers, self._pid == os.getpid()
            self._buffers, self._tracer, self._pid = [], None, None
        if mine:
            for buffer in buffers:
                buffer.shutdown(self.batch_settings.export_timeout_millis / 1000)

    def flush(self, timeout: float = 30.0) -> bool:
        return all([buffer.flush(timeout) for buffer in self._buffers])


def fan_out(buffers: list[SpanBuffer]) -> Callable[[LeanSpan], None]:
    """Where an ended span goes: nowhere, the one buffer, or each of them."""
    if not buffers:
        return lambda span: None
    if len(buffers) == 1:
        return buffers[0].add

    def add(span: LeanSpan) -> None:
        for buffer in buffers:
            buffer.add(span)

    return add


# --- the hooks -------------------------------------------------------------------------


class AppTracing:
    """What GnarTracing does for one app: the request span and the context hooks."""

    def __init__(self, process_tracer: ProcessTracer) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.process_tracer = process_tracer
        self.propagator = TraceContextTextMapPropagator()
        self._context = context
        self._trace = trace
        self._environ_getter = cast("Getter[Any]", EnvironGetter())
        self._attribute_getter = cast("Getter[Any]", MessageAttributeGetter())
        self._setter = cast("Setter[dict[str, str]]", DictSetter())
        self._server_kind = trace.SpanKind.SERVER
        self._client_kind = trace.SpanKind.CLIENT

    # the request span

    def traced_request(
        self, wsgi_app: WSGIApplication, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Run the request in a server span that continues the incoming trace.

        The span starts before routing (the sampler sees method, path and scheme)
        and is named for the matched rule when the app has answered.
        """
        # without a traceparent there is nothing to continue (a tracestate alone is ignored)
        parent = (
            self.propagator.extract(environ, getter=self._environ_getter)
            if "HTTP_TRACEPARENT" in environ
            else None
        )
        method = environ.get("REQUEST_METHOD", "GET")
        known = method in HTTP_METHODS
        span = self.process_tracer.tracer().start(
            method if known else "HTTP",
            parent,
            self._server_kind,
            {
                "http.request.method": method if known else "_OTHER",
                "url.path": environ.get("PATH_INFO") or "/",
                "url.scheme": environ.get("wsgi.url_scheme", "http"),
            },
        )
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        status: list[str] = []

        def capture_status(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            if not status and span.is_recording():  # Flask's request is still in the environ
                name_for_route(span, environ, method if known else "HTTP")
            status.append(status_line)
            return start_response(status_line, headers, exc_info)

        try:
            return wsgi_app(environ, capture_status)
        except BaseException as error:
            if span.is_recording():
                span.record_exception(error)
                mark_error(span, type(error).__qualname__)
            raise
        finally:
            if status and span.is_recording():
                record_status(span, int(status[-1][:3]))
            span.end()
            self._context.detach(token)

    # TraceHooks (see flask_gnar.context)

    def peer_call(
        self,
        service: str,
        method: str,
        url: str,
        headers: dict[str, str],
        send: Callable[[], requests.Response],
    ) -> requests.Response:
        from opentelemetry.trace import SpanKind

        method = method.upper()
        parts = urlsplit(url)
        span = self.process_tracer.tracer().start_span(
            method if method in HTTP_METHODS else "HTTP",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": method if method in HTTP_METHODS else "_OTHER",
                "server.address": parts.hostname or "",
                "server.port": parts.port or (443 if parts.scheme == "https" else 80),
                "url.full": url,
                "peer.service": service,
            },
        )
        with self._trace.use_span(span, end_on_exit=True):
            self.propagator.inject(headers, setter=self._setter)
            response = send()
            if span.is_recording():
                record_status(span, response.status_code, client=True)
            return response

    def message_attributes(
        self, queue_name: str, attributes: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        from opentelemetry.trace import SpanKind

        carrier: dict[str, str] = {}
        with self.process_tracer.tracer().start_as_current_span(
            f"create {queue_name}",
            kind=SpanKind.PRODUCER,
            attributes=messaging_attributes(queue_name, "create"),
        ):
            self.propagator.inject(carrier, setter=self._setter)
        merged = dict(attributes or {})
        for key, value in carrier.items():
            if key not in merged and len(merged) < MAX_MESSAGE_ATTRIBUTES:
                merged[key] = {"DataType": "String", "StringValue": value}
        return merged

    def handle_message(
        self, queue_name: str, message: Mapping[str, Any], callback: Callable[[Any], T]
    ) -> T:
        from opentelemetry.trace import SpanKind

        parent = self.propagator.extract(
            message.get("MessageAttributes") or {}, getter=self._attribute_getter
        )
        attributes = messaging_attributes(queue_name, "process")
        if message.get("MessageId"):
            attributes["messaging.message.id"] = str(message["MessageId"])
        with self.process_tracer.tracer().start_as_current_span(
            f"process {queue_name}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            result = callback(message)
            if result is False:
                mark_error(span, "callback_returned_false")
            return result


    # database queries

    def query(self, attributes: dict[str, Any], sql: Any, run: Callable[[], T]) -> T:
        """Run one statement in a client span ``SELECT``, ``INSERT`` ... (no literal values)."""
        operation = statement_operation(sql)
        span = self.process_tracer.tracer().start_span(
            operation or "postgresql",
            kind=self._client_kind,
            attributes={**attributes, "db.operation.name": operation} if operation else attributes,
        )
        with self._trace.use_span(span, end_on_exit=True):
            return run()

    def trace_database(self, app: Flask, db: Any = None, **_: Any) -> None:
        """Queries of GnarDB's ``gnar.db`` run in spans (its cursor class, wrapped)."""
        base = db.default_cursor_factory
        tracing, attributes = self, database_attributes(getattr(db, "target", ""))

        class TracedCursor(base):  # type: ignore[valid-type, misc]
            def run(self, sql: Any, parameters: Any = None, **kw: Any) -> Any:
                return tracing.query(attributes, sql, lambda: base.run(self, sql, parameters, **kw))

        TracedCursor.__name__ = f"Traced{base.__name__}"
        db.default_cursor_factory = TracedCursor


_TARGET = re.compile(r"@(?P<host>\[[^\]]*\]|[^:/]*)(?::(?P<port>\d+))?/(?P<database>.*)$")


def database_attributes(target: str) -> dict[str, Any]:
    """From GnarDB's ``user@host:port/dbname``: the semantic conventions' database attributes."""
    attributes: dict[str, Any] = {"db.system.name": "postgresql"}
    found = _TARGET.search(target)
    if found:
        if found["database"]:
            attributes["db.namespace"] = found["database"]
        if found["host"]:
            attributes["server.address"] = found["host"]
        if found["port"]:
            attributes["server.port"] = int(found["port"])
    return attributes


def statement_operation(sql: Any) -> str:
    """``SELECT`` of ``select * from t`` (str, bytes or a psycopg2 ``sql`` object)."""
    text = sql.decode(errors="replace") if isinstance(sql, bytes) else sql
    if not isinstance(text, str):
        return ""
    words = text.lstrip("( \t\n").split(None, 1)
    return words[0].upper() if words and words[0].isalpha() else ""


def messaging_attributes(queue_name: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": "aws_sqs",
        "messaging.destination.name": queue_name,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }


def record_status(span: Span, status: int, client: bool = False) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500 or (client and status >= 400):
        mark_error(span, str(status))


def mark_error(span: Span, error_type: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR))


# --- the extension ---------------------------------------------------------------------


class GnarTracing(GnarExtension):
    """Traces through OpenTelemetry while ``GNAR_TRACING`` (or the ``enabled`` option) is true.

    Options: ``enabled`` (``TRACING``), ``service_name`` (default:
    ``OTEL_SERVICE_NAME``, else the app's name).
    """

    extension_name = "GnarTracing"
    configured_signal = signals.tracing_configured
    options_accepted = frozenset({"enabled", "service_name"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        enabled = settings.get("TRACING", parse_bool, explicit=self.option("enabled"), default=False)
        if not enabled:
            return {"enabled": False, "service_name": None}
        require_opentelemetry(settings.env_name("TRACING"))
        service_name = (
            self.option("service_name") or otel_setting("OTEL_SERVICE_NAME") or state.name
        )
        names = exporter_names()
        process_tracer = ProcessTracer(service_name, sampler_from_environment(), names)
        tracing = AppTracing(process_tracer)
        register_request_span(app, tracing)
        trace_database_when_configured(app, state, tracing)
        state.provide(tracing=tracing)
        state.on_start(process_tracer.start)
        state.on_stop(process_tracer.stop)
        log.info("Tracing as %r, exporting to %s", service_name, ", ".join(names) or "nothing")
        return {"enabled": True, "service_name": service_name}


def require_opentelemetry(variable: str) -> None:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError(
            variable, "tracing needs OpenTelemetry: pip install 'flask-gnar[tracing]'"
        ) from None


def register_request_span(app: Flask, tracing: AppTracing) -> None:
    """Around the whole WSGI app: no Flask hook to call, and every hook runs inside it."""
    app.wsgi_app = partial(tracing.traced_request, app.wsgi_app)  # type: ignore[method-assign]


def trace_database_when_configured(app: Flask, state: GnarState, tracing: AppTracing) -> None:
    """GnarDB's queries get spans, whether it was initialised before GnarTracing or after."""
    db = getattr(state, "db", None)
    if db is not None:
        tracing.trace_database(app, db=db)
    else:
        signals.database_configured.connect(tracing.trace_database, sender=app, weak=False)


def name_for_route(span: Span, environ: WSGIEnvironment, method: str) -> None:
    """``GET /user/<int:id>`` and ``http.route``, from the rule Flask matched (if any)."""
    rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
    if rule is not None:
        span.update_name(f"{method} {rule.rule}")
        span.set_attribute("http.route", rule.rule)
