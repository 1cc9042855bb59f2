"""GnarLogging: the root logger to stdout, the seed's level and format rules."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any, TextIO

from flask import Flask
from flask.logging import default_handler

from . import signals
from .config import SECRET_VALUES, Settings, parse_bool, parse_log_level
from .context import RequestContextFilter
from .extension import GnarExtension
from .state import GnarState

DEFAULT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s:%(lineno)d   %(message)s"
DEFAULT_MSEC_FORMAT = "%s.%03d"
#: What :class:`~flask_gnar.context.RequestContextFilter` adds to records, in JSON when set.
CONTEXT_KEYS = ("request_id", "trace_id", "span_id")


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is now (test capture, a redirected stream)."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class JSONFormatter(logging.Formatter):
    """One JSON object a line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "line": record.lineno,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def mask_secrets(text: str) -> str:
    for secret in list(SECRET_VALUES):
        if secret in text:
            text = text.replace(secret, "***")
    return text


class MaskSecrets(logging.Filter):
    """Replaces the value of every secret setting with ``***`` (botocore logs the AWS
    key id at DEBUG level, for one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if SECRET_VALUES:
            message = record.getMessage()
            masked = mask_secrets(message)
            if masked != message:
                record.msg, record.args = masked, None
            if record.exc_info and not record.exc_text:
                record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
        return True


def app_level_setting(app_name: str) -> str:
    """The seed's per-app level setting: ``my-app`` reads ``<PREFIX>_MY_APP_LOG_LEVEL``."""
    return re.sub(r"[^0-9A-Z]+", "_", app_name.upper()).strip("_") + "_LOG_LEVEL"


def install_root_handler(formatter: logging.Formatter) -> logging.Handler:
    """Our stdout handler on the root logger, added once per process."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, StdoutHandler):
            handler.setFormatter(formatter)
            return handler
    handler = StdoutHandler()
    handler.setFormatter(formatter)
    handler.addFilter(MaskSecrets())
    handler.addFilter(RequestContextFilter())
    root.addHandler(handler)
    return handler


class GnarLogging(GnarExtension):
    """The root logger to stdout at the resolved level.

    Level, first defined: the ``level`` option (``create_app(log_level=...)``),
    ``<PREFIX>_<APP NAME>_LOG_LEVEL``, ``<PREFIX>_LOG_LEVEL``, ``INFO``.
    The root logger is shared by the process: the last app configured sets it.
    """

    extension_name = "GnarLogging"
    configured_signal = signals.logging_configured
    options_accepted = frozenset({"level", "format", "msec_format", "json"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        level = settings.get(
            app_level_setting(state.name), parse_log_level, explicit=self.option("level")
        ) or settings.get("LOG_LEVEL", parse_log_level, default="INFO")
        use_json = settings.get("LOG_JSON", parse_bool, explicit=self.option("json"), default=False)
        formatter: logging.Formatter
        if use_json:
            formatter = JSONFormatter()
        else:
            formatter = logging.Formatter(
                settings.get("LOG_FORMAT", explicit=self.option("format"), default=DEFAULT_FORMAT)
            )
        formatter.default_msec_format = settings.get(
            "LOG_FORMAT_MSEC", explicit=self.option("msec_format"), default=DEFAULT_MSEC_FORMAT
        )
        install_root_handler(formatter)
        logging.getLogger().setLevel(level)
        app.logger.removeHandler(default_handler)
        logging.getLogger(__name__).info("Logging at %s", level)
        return {"level": level}
