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
import math
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeAlias, TypeVar, Union

from flask import Flask

from .exceptions import ConfigError

T = TypeVar("T")
N = TypeVar("N", int, float)
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


def parse_positive_float(value: Any) -> float:
    number = parse_float(value)
    if number <= 0:
        raise ValueError(f"expected a number greater than 0, got {value!r}")
    return number


# --- bounded numbers -------------------------------------------------------------------

#: The longest wait Python accepts for a thread, a sleep or a socket (about 292 years);
#: every duration setting stops there (past it, the wait raises OverflowError). One
#: second short of it: a deadline computed from it, waited on later, may round up.
MAX_WAIT_SECONDS = math.floor(threading.TIMEOUT_MAX) - 1
#: TCP's port numbers.
MAX_PORT = 65535
#: The largest value of a C ``int`` (libpq's and Postgres' integer settings).
MAX_C_INT = 2**31 - 1
#: The largest value of a C ``uint32_t`` (libargon2's costs and lengths).
MAX_UINT32 = 2**32 - 1
#: :mod:`datetime` counts to the year 9999: a token issued now must expire before it.
LATEST_EXPIRY = datetime(9999, 1, 1, tzinfo=timezone.utc)

#: An upper bound: a number, or a function giving it when the value is parsed (a system
#: limit is read at start-up, never at import).
Bound: TypeAlias = Union[N, Callable[[], N]]


class Bounded(Generic[N]):
    """A parser of numbers from ``low`` to ``high`` (above ``low`` with ``above=True``).

    ``limit`` says where ``high`` comes from; it is part of the error message, for
    example ``expected a whole number from 1 to 4294967295 (libargon2's limit), got ...``.
    NaN and infinities are refused like any value out of range.
    """

    def __init__(
        self,
        number: Callable[[Any], N],
        low: N,
        high: Bound[N],
        *,
        above: bool = False,
        limit: str = "",
        noun: str = "a number",
    ) -> None:
        self.number: Callable[[Any], N] = number
        self.low: N = low
        self._high: Bound[N] = high
        self.above = above
        self.limit = limit
        self.noun = noun

    @property
    def high(self) -> N:
        if callable(self._high):
            high: N = self._high()
            return high
        return self._high

    def __call__(self, value: Any) -> N:
        number = self.number(value)
        high = self.high
        in_range = (self.low < number if self.above else self.low <= number) and number <= high
        if not in_range:
            raise ValueError(f"expected {self.describe(high)}, got {show(number)}")
        return number

    def describe(self, high: N | None = None) -> str:
        """The accepted range in words, as in the error message."""
        high = self.high if high is None else high
        limit = f" ({self.limit})" if self.limit else ""
        if self.above:
            return f"{self.noun} above {show(self.low)} and at most {show(high)}{limit}"
        if self.number is parse_int:
            return f"{self.noun} from {show(self.low)} to {show(high)}{limit}"
        return f"{self.noun} of at least {show(self.low)} and at most {show(high)}{limit}"


def show(number: float) -> str:
    """``3`` for 3.0 and 3, ``0.5`` for 0.5 (never ``4.29497e+09``)."""
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        return str(int(number))
    return str(number)


def int_between(
    low: int, high: Bound[int], *, limit: str = "", noun: str = "a whole number"
) -> Bounded[int]:
    """A parser of whole numbers from ``low`` to ``high``, both included."""
    return Bounded(parse_int, low, high, limit=limit, noun=noun)


def float_between(
    low: float, high: Bound[float], *, above: bool = False, limit: str = ""
) -> Bounded[float]:
    """A parser of numbers from ``low`` (or above it) to ``high``."""
    return Bounded(parse_float, low, high, above=above, limit=limit)


def seconds_between(low: float, *, above: bool = False) -> Bounded[float]:
    """A parser of durations in seconds, up to :data:`MAX_WAIT_SECONDS`."""
    return float_between(
        low, MAX_WAIT_SECONDS, above=above, limit="the longest wait Python's threads accept"
    )


parse_port = int_between(1, MAX_PORT, noun="a port number")
parse_seconds = seconds_between(0)
parse_positive_seconds = seconds_between(0, above=True)


def minutes_before_latest_expiry() -> float:
    return (LATEST_EXPIRY - datetime.now(timezone.utc)).total_seconds() / 60


_token_minutes = float_between(
    0, minutes_before_latest_expiry, above=True,
    limit="a token issued now must expire before the year 9999",
)


def parse_minutes(value: Any) -> timedelta:
    """A lifetime in minutes (or a :class:`~datetime.timedelta`) that ends before 9999."""
    if isinstance(value, timedelta):
        _token_minutes(value.total_seconds() / 60)
        return value
    return timedelta(minutes=_token_minutes(value))


def memory_limit_kib() -> int:
    """The memory this process may use, in KiB: the machine's, or its cgroup's if lower."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as limit:
            text = limit.read().strip()
    except OSError:
        text = "max"
    if text.isdigit():
        memory = min(memory, int(text))
    return memory // 1024


#: Our cap on serve()'s worker processes: each is a single-threaded copy of the app with
#: its own memory and connections; past a thousand on one host the value is a typo.
MAX_WORKERS = 1024


def most_workers() -> int:
    """As many workers as fork can start: RLIMIT_NPROC, and at most MAX_WORKERS."""
    return min(MAX_WORKERS, process_limit())


parse_worker_count = int_between(1, most_workers, limit="RLIMIT_NPROC, and at most 1024")


def process_limit() -> int:
    """How many processes (and threads) this user may run: RLIMIT_NPROC, if it is set."""
    import resource  # POSIX only, like bjoern and fork

    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    return MAX_UINT32 if soft == resource.RLIM_INFINITY else soft


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

    def source(self, setting: str, explicit: Any = None) -> str:
        """Where ``setting`` is defined (for an error message); its variable if nowhere."""
        found = self.find(setting, explicit)
        return found[0] if found else self.env_name(setting)

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
        except (ValueError, OverflowError) as error:
            message = "is malformed" if secret else str(error)
            raise ConfigError(source, message) from None
