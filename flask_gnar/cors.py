"""GnarCORS: open CORS in development, configured origins only in production."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from . import signals
from .config import MAX_C_INT, Settings, int_between, parse_list
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)

#: HTTP caches read delta-seconds up to 2**31 (RFC 9111, 1.2.2); browsers cap far lower.
parse_max_age_seconds = int_between(1, MAX_C_INT, limit="HTTP's delta-seconds")

ANY_ORIGIN = "*"
DEFAULT_ALLOW_HEADERS = ("Authorization", "Content-Type")
#: Clients read the refreshed token from the response's Authorization header.
DEFAULT_EXPOSE_HEADERS = ("Authorization",)
DEFAULT_MAX_AGE = 600


def routed_methods(app: Flask) -> str:
    """Every method some rule of the app answers, e.g. ``"DELETE, GET, HEAD, OPTIONS, PATCH"``."""
    methods: set[str] = set()
    for rule in app.url_map.iter_rules():
        methods.update(rule.methods or ())
    return ", ".join(sorted(methods))


def is_preflight() -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def allowed_origin(origins: frozenset[str]) -> str | None:
    """The value of Access-Control-Allow-Origin for this request, or ``None``."""
    if ANY_ORIGIN in origins:
        return ANY_ORIGIN
    origin = request.headers.get("Origin")
    return origin if origin in origins else None


def preflight_hook(origins: frozenset[str]) -> Callable[[], Response | None]:
    """Answer a preflight from an allowed origin with 200, whatever its URL.

    Browsers drop a preflight that does not answer 2xx as a network error, so
    without this a page calling a URL the app does not route (or a method it
    refuses) would never see the 404 or 405 that the real request gets.
    """

    def answer_preflight() -> Response | None:
        if is_preflight() and allowed_origin(origins) is not None:
            return Response(status=200)
        return None

    return answer_preflight


def cors_hook(
    app: Flask, origins: frozenset[str], allow_headers: str, expose_headers: str, max_age: int
) -> Callable[[Response], Response]:
    # Computed at the first preflight, when every route is registered.
    methods = functools.cache(lambda: routed_methods(app))

    def add_cors_headers(response: Response) -> Response:
        if ANY_ORIGIN not in origins:
            response.vary.add("Origin")
        origin = allowed_origin(origins)
        if origin is None:
            return response
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = expose_headers
        if is_preflight():
            headers["Access-Control-Allow-Methods"] = methods()
            headers["Access-Control-Allow-Headers"] = allow_headers
            headers["Access-Control-Max-Age"] = str(max_age)
        return response

    return add_cors_headers


class GnarCORS(GnarExtension):
    """CORS headers on every response, and answers to preflight requests.

    Origins, first defined: the ``origins`` option, ``GNAR_CORS_ORIGINS``
    (comma-separated; ``*`` for any), then ``*`` in development and none in
    production, where no CORS header is sent at all.
    Other options: ``allow_headers`` (``GNAR_CORS_ALLOW_HEADERS``, default
    Authorization, Content-Type), ``expose_headers`` (``GNAR_CORS_EXPOSE_HEADERS``,
    default Authorization), ``max_age`` (``GNAR_CORS_MAX_AGE``, seconds, default 600).
    """

    extension_name = "GnarCORS"
    configured_signal = signals.cors_configured
    options_accepted = frozenset({"origins", "allow_headers", "expose_headers", "max_age"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        default_origins = [] if state.production else [ANY_ORIGIN]
        origins = settings.get(
            "CORS_ORIGINS", parse_list, explicit=self.option("origins"), default=default_origins
        )
        allow_headers = settings.get(
            "CORS_ALLOW_HEADERS", parse_list, explicit=self.option("allow_headers"),
            default=list(DEFAULT_ALLOW_HEADERS),
        )
        expose_headers = settings.get(
            "CORS_EXPOSE_HEADERS", parse_list, explicit=self.option("expose_headers"),
            default=list(DEFAULT_EXPOSE_HEADERS),
        )
        max_age = settings.get(
            "CORS_MAX_AGE", parse_max_age_seconds, explicit=self.option("max_age"),
            default=DEFAULT_MAX_AGE,
        )
        if origins:
            app.before_request(preflight_hook(frozenset(origins)))
            app.after_request(
                cors_hook(
                    app, frozenset(origins), ", ".join(allow_headers),
                    ", ".join(expose_headers), max_age,
                )
            )
            log.info("CORS allows origins: %s", ", ".join(origins))
        else:
            log.info("CORS: no origins configured, no CORS headers are sent")
        return {"origins": list(origins)}
