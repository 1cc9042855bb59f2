"""GnarErrors: every error answers JSON ``{"error": ...}`` with its real status."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from . import signals
from .config import Settings, parse_bool
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)


def error_response(
    message: str, status: int, seed_status: bool, **extra: Any
) -> tuple[Response, int]:
    """The JSON error body; ``seed_status`` answers 200 as gnar-gear did."""
    body = {"error": message, **extra}
    return jsonify(body), 200 if seed_status else status


def seed_status_enabled(settings: Settings, explicit: bool | None = None) -> bool:
    """``GNAR_SEED_ERROR_STATUS``: answer errors with 200, as gnar-gear did."""
    return bool(settings.get("SEED_ERROR_STATUS", parse_bool, explicit=explicit, default=False))


class GnarErrors(GnarExtension):
    """An app-wide handler turning every exception into a JSON error.

    HTTP errors keep their status (404, 405 ...) and headers; anything else is
    logged with its traceback and answers 500. The traceback is in the body only
    in development (``traceback`` option / ``GNAR_ERROR_TRACEBACK``).
    """

    extension_name = "GnarErrors"
    configured_signal = signals.errorhandler_configured
    options_accepted = frozenset({"seed_status", "traceback"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> None:
        seed_status = seed_status_enabled(settings, self.option("seed_status"))
        show_traceback = settings.get(
            "ERROR_TRACEBACK", parse_bool, explicit=self.option("traceback"),
            default=not state.production,
        )

        def handle_http_error(error: HTTPException) -> Any:
            response, status = error_response(
                error.description or error.name, error.code or 500, seed_status
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
