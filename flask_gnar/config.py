"""One resolver for every flask-gnar setting.

A setting ``X`` resolves to the first one defined of:

1. the explicit argument (to ``create_app`` or the extension's constructor),
2. ``app.config["GNAR_X"]``,
3. the environment variable ``<ENV_PREFIX>_X`` (``GNAR_X`` by default),
4. the default.

Values are parsed strictly; a bad or missing value raises
:class:`~flask_gnar.exceptions.ConfigError` naming where it came from.
Secrets are never echoed in errors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from flask import Flask

from .exceptions import ConfigError

T = TypeVar("T")
Parser = Callable[[Any], T]

CONFIG_PREFIX = "GNAR_"
DEFAULT_ENV_PREFIX = "GNAR"

_MISSING: Any = object()

#: Values of secret settings resolved in this process; GnarLogging's handler masks them
#: in every record, a library's DEBUG lines included (logging is per process too).
SECRET_VALUES: set[str] = set()
#: Shorter values are not masked: they would turn up inside ordinary words.
MIN_MASKED_LENGTH = 6

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a whole number, got {value!r}")


def parse_positive_int(value: Any) -> int:
    number = parse_int(value)
    if number < 1:
        raise ValueError(f"expected a whole number of at least 1, got {number}")
    return number


def parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true/false (1/0, yes/no, on/off), got {value!r}")


def parse_minutes(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    minutes = parse_float(value)
    if minutes <= 0:
        raise ValueError(f"expected a positive number of minutes, got {value!r}")
    return timedelta(minutes=minutes)


def parse_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return [parse_str(item) for item in value]
    return [item.strip() for item in parse_str(value).split(",") if item.strip()]


def parse_log_level(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        name = logging.getLevelName(value)
        if isinstance(name, str) and not name.startswith("Level "):
            return name
    if isinstance(value, str) and value.strip().upper() in logging.getLevelNamesMapping():
        return value.strip().upper()
    raise ValueError(
        f"expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {value!r}"
    )


def parse_non_negative_int(value: Any) -> int:
    number = parse_int(value)
    if number < 0:
        raise ValueError(f"expected a whole number of at least 0, got {number}")
    return number


def parse_positive_float(value: Any) -> float:
    number = parse_float(value)
    if number <= 0:
        raise ValueError(f"expected a number greater than 0, got {value!r}")
    return number


def parse_non_negative_float(value: Any) -> float:
    number = parse_float(value)
    if number < 0:
        raise ValueError(f"expected a number of at least 0, got {value!r}")
    return number


def parse_port(value: Any) -> int:
    number = parse_int(value)
    if not 1 <= number <= 65535:
        raise ValueError(f"expected a port number from 1 to 65535, got {number}")
    return number


class Settings:
    """Resolves settings for one app (see the module docstring for the order)."""

    def __init__(self, app: Flask, env_prefix: str = DEFAULT_ENV_PREFIX) -> None:
        self.config: Mapping[str, Any] = app.config
        self.env_prefix = env_prefix

    def env_name(self, setting: str) -> str:
        return f"{self.env_prefix}_{setting}"

    def find(self, setting: str, explicit: Any = None) -> tuple[str, Any] | None:
        """The ``(source, raw value)`` of the first definition, or ``None``."""
        if explicit is not None:
            return f"argument for {setting}", explicit
        config_key = CONFIG_PREFIX + setting
        if self.config.get(config_key) is not None:
            return f"app.config[{config_key!r}]", self.config[config_key]
        env_name = self.env_name(setting)
        if env_name in os.environ:
            return env_name, os.environ[env_name]
        return None

    def get(
        self,
        setting: str,
        parser: Parser[T] = parse_str,  # type: ignore[assignment]
        *,
        explicit: Any = None,
        default: Any = None,
        required: bool = False,
        secret: bool = False,
    ) -> T:
        found = self.find(setting, explicit)
        if found is None:
            if required:
                raise ConfigError(
                    self.env_name(setting),
                    f"is required: set the environment variable {self.env_name(setting)} "
                    f"or app.config[{CONFIG_PREFIX + setting!r}]",
                )
            return default  # type: ignore[no-any-return]
        source, raw = found
        if secret and isinstance(raw, str) and len(raw) >= MIN_MASKED_LENGTH:
            SECRET_VALUES.add(raw)
        try:
            return parser(raw)
        except ValueError as error:
            message = "is malformed" if secret else str(error)
            raise ConfigError(source, message) from None
