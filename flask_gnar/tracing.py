"""GnarTracing: W3C Trace Context through OpenTelemetry (the ``flask-gnar[tracing]`` extra).

Off unless ``GNAR_TRACING`` is true; off, it registers nothing and costs nothing.
On, every request runs in a server span that continues an incoming
``traceparent``/``tracestate``; ``gnar.peer`` calls, SQS messages sent and handled
and database queries get spans of their own, and carry the context on.

OpenTelemetry's own variables choose the exporter (``OTEL_TRACES_EXPORTER``,
``OTEL_EXPORTER_OTLP_*``) and the sampler (``OTEL_TRACES_SAMPLER``,
``OTEL_TRACES_SAMPLER_ARG``). Each app has its own tracer provider, made in each
process that serves (after the fork: a span processor's thread does not survive
one), so nothing is set process-wide and ``gnar.external`` sends no context.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import Flask, Response, g, request

from . import signals
from .config import Settings, parse_bool
from .exceptions import ConfigError
from .extension import GnarExtension
from .state import GnarState

if TYPE_CHECKING:  # pragma: no cover
    import requests
    from opentelemetry.propagators.textmap import Getter, Setter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, Tracer

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
PROTOCOLS = frozenset({"http/protobuf", "grpc"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
SPAN_KEY = "_gnar_request_span"


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


def otlp_protocol() -> str:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = otel_setting(variable)
        if value:
            if value not in PROTOCOLS:
                raise ConfigError(
                    variable, f"expected http/protobuf or grpc, got {value!r}"
                )
            return value
    return "http/protobuf"


def otlp_exporter_factory(protocol: str) -> Callable[[], SpanExporter]:
    """The OTLP exporter's class; it reads its endpoint, headers and timeout itself."""
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "grpc needs opentelemetry-exporter-otlp-proto-grpc installed "
                "(flask-gnar[tracing] brings http/protobuf)",
            ) from None
        return cast("Callable[[], SpanExporter]", OTLPSpanExporter)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter


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
    """The app's tracer provider and tracer, made anew in each process that uses them.

    ``start`` runs from the app's start hook (in each worker, after the fork); a
    process that handles requests without ``serve()`` (a test client, another
    server that forks) gets its provider on first use.
    """

    def __init__(
        self, service_name: str, sampler: Sampler, exporters: list[Callable[[], SpanExporter]]
    ) -> None:
        self.service_name = service_name
        self.sampler = sampler
        self.exporters = exporters
        self._pid: int | None = None
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        self._lock = threading.Lock()

    def tracer(self) -> Tracer:
        tracer = self._tracer
        if tracer is None or self._pid != os.getpid():
            return self._start()
        return tracer

    def start(self) -> None:
        """Make this process's provider (the app's start hook, once per worker)."""
        self._start()

    def _start(self) -> Tracer:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        with self._lock:
            if self._tracer is not None and self._pid == os.getpid():
                return self._tracer
            provider = TracerProvider(
                sampler=self.sampler,
                resource=Resource.create(
                    {"service.name": self.service_name, "process.pid": os.getpid()}
                ),
                shutdown_on_exit=False,
            )
            for make_exporter in self.exporters:
                provider.add_span_processor(BatchSpanProcessor(make_exporter()))
            self._provider, self._pid = provider, os.getpid()
            self._tracer = provider.get_tracer(INSTRUMENTATION_NAME)
            return self._tracer

    def stop(self) -> None:
        """Export what is pending and stop the exporter threads of this process."""
        with self._lock:
            provider, mine = self._provider, self._pid == os.getpid()
            self._provider = self._tracer = self._pid = None
        if provider is not None and mine:
            provider.shutdown()

    def flush(self, timeout_millis: int = 30000) -> bool:
        provider = self._provider
        return provider is None or provider.force_flush(timeout_millis)


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

    # the request span

    def start_request_span(self) -> None:
        from opentelemetry.trace import SpanKind

        environ = request.environ
        parent = self.propagator.extract(environ, getter=self._environ_getter)
        method = environ.get("REQUEST_METHOD", "GET")
        rule = request.url_rule
        attributes: dict[str, Any] = {
            "http.request.method": method if method in HTTP_METHODS else "_OTHER",
            "url.path": environ.get("PATH_INFO", "/"),
            "url.scheme": environ.get("wsgi.url_scheme", "http"),
        }
        name = method if method in HTTP_METHODS else "HTTP"
        if rule is not None:
            attributes["http.route"] = rule.rule
            name = f"{name} {rule.rule}"
        span = self.process_tracer.tracer().start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        setattr(g, SPAN_KEY, (span, token))

    def record_response(self, response: Response) -> Response:
        held = g.get(SPAN_KEY)
        if held is not None and held[0].is_recording():
            record_status(held[0], response.status_code)
        return response

    def end_request_span(self, error: BaseException | None) -> None:
        held = g.pop(SPAN_KEY, None)
        if held is None:
            return
        span, token = held
        if error is not None and span.is_recording():
            span.record_exception(error)
            mark_error(span, type(error).__qualname__)
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
        exporters: list[Callable[[], SpanExporter]] = []
        if "otlp" in names:
            exporters.append(otlp_exporter_factory(otlp_protocol()))
        if "console" in names:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter)
        process_tracer = ProcessTracer(service_name, sampler_from_environment(), exporters)
        tracing = AppTracing(process_tracer)
        register_request_span(app, tracing)
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
    """Ours run first before the request and last after it, around every other hook."""
    app.before_request_funcs.setdefault(None, []).insert(0, tracing.start_request_span)
    app.after_request_funcs.setdefault(None, []).insert(0, tracing.record_response)
    app.teardown_request_funcs.setdefault(None, []).insert(0, tracing.end_request_span)
