"""GnarErrors: every error answers JSON ``{"error": ...}`` with its real status."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import BadRequest, HTTPException

from . import signals
from .config import Settings, int_between, parse_bool
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)

parse_body_size_int = int_between(1, sys.maxsize, limit="the largest size Python can hold")


def error_response(
    message: str, status: int, seed_status: bool, **extra: Any
) -> tuple[Response, int]:
    """The JSON error body; ``seed_status`` answers 200 as gnar-gear did."""
    body = {"error": message, **extra}
    return jsonify(body), 200 if seed_status else status


def error_description(error: HTTPException) -> str:
    """The message for an HTTP error; a body that is not JSON is named as such.

    Outside debug mode Flask replaces the JSON parser's message with a generic 400;
    the cause it keeps tells the two apart (the parser's details stay out of the body).
    """
    cause = error.__cause__
    if isinstance(cause, BadRequest) and str(cause.description).startswith("Failed to decode JSON"):
        return "The request body is not valid JSON."
    return error.description or error.name


def seed_status_enabled(settings: Settings, explicit: bool | None = None) -> bool:
    """``GNAR_SEED_ERROR_STATUS``: answer errors with 200, as gnar-gear did."""
    return bool(settings.get("SEED_ERROR_STATUS", parse_bool, explicit=explicit, default=False))


def limit_body_size(app: Flask, settings: Settings, explicit: int | None) -> None:
    """``GNAR_MAX_CONTENT_LENGTH`` becomes Flask's ``MAX_CONTENT_LENGTH`` unless that is set."""
    limit = settings.get("MAX_CONTENT_LENGTH", parse_body_size_int, explicit=explicit)
    if limit is not None and app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = limit


class GnarErrors(GnarExtension):
    """An app-wide handler turning every exception into a JSON error.

    HTTP errors keep their status (404, 405 ...) and headers; anything else is
    logged with its traceback and answers 500. The traceback is in the body only
    in development (``traceback`` option / ``GNAR_ERROR_TRACEBACK``).
    ``max_content_length`` (``GNAR_MAX_CONTENT_LENGTH``, bytes) sets Flask's
    ``MAX_CONTENT_LENGTH`` unless the app sets that itself: a larger body answers 413.
    """

    extension_name = "GnarErrors"
    configured_signal = signals.errorhandler_configured
    options_accepted = frozenset({"seed_status", "traceback", "max_content_length"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> None:
        seed_status = seed_status_enabled(settings, self.option("seed_status"))
        show_traceback = settings.get(
            "ERROR_TRACEBACK", parse_bool, explicit=self.option("traceback"),
            default=not state.production,
        )
        limit_body_size(app, settings, self.option("max_content_length"))

        def handle_http_error(error: HTTPException) -> Any:
            response, status = error_response(
                error_description(error), error.code or 500, seed_status
            )
            for key, value in error.get_headers():
                if key.lower() != "content-type":
                    response.headers[key] = value
            return response, status

        def handle_exception(error: Exception) -> Any:
            if isinstance(error, HTTPException):
                return handle_http_error(error)
            log.exception("Unhandled %s: %s", type(error).__name__, error)
            extra = {"traceback": traceback.format_exc()} if show_traceback else {}
            message = str(error) if show_traceback else "Internal Server Error"
            return error_response(message, 500, seed_status, **extra)

        app.register_error_handler(Exception, handle_exception)
        return None
