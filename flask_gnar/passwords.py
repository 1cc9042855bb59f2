"""GnarArgon2: one argon2-cffi PasswordHasher per app and the seed's password helpers."""

from __future__ import annotations

import codecs
import logging
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask

from . import signals
from .config import Settings, parse_positive_int, parse_str
from .exceptions import ConfigError
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)

#: Setting suffix (``ARGON2_<suffix>``) -> PasswordHasher keyword.
NUMERIC_SETTINGS = {
    "TIME_COST": "time_cost",
    "MEMORY_COST": "memory_cost",
    "PARALLELISM": "parallelism",
    "HASH_LEN": "hash_len",
    "SALT_LEN": "salt_len",
}

TYPES = {"id": Type.ID, "i": Type.I, "d": Type.D}

#: The smallest values libargon2 accepts (it would only fail at the first hash).
MINIMUM_LENGTHS = {"hash_len": 4, "salt_len": 8}


def parse_encoding(value: Any) -> str:
    name = parse_str(value).strip()
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"expected a text encoding such as 'utf-8', got {value!r}") from None
    return name


def parse_argon2_type(value: Any) -> Type:
    if isinstance(value, Type):
        return value
    name = parse_str(value).strip().lower().removeprefix("argon2")
    if name not in TYPES:
        raise ValueError(f"expected one of argon2id, argon2i, argon2d, got {value!r}")
    return TYPES[name]


def hasher_parameters(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """The PasswordHasher keywords that were set; the rest keep argon2-cffi's defaults."""
    parameters: dict[str, Any] = {}
    for suffix, keyword in NUMERIC_SETTINGS.items():
        value = settings.get(f"ARGON2_{suffix}", parse_positive_int, explicit=options.get(keyword))
        if value is not None:
            parameters[keyword] = value
    encoding = settings.get("ARGON2_ENCODING", parse_encoding, explicit=options.get("encoding"))
    if encoding is not None:
        parameters["encoding"] = encoding
    argon2_type = settings.get("ARGON2_TYPE", parse_argon2_type, explicit=options.get("type"))
    if argon2_type is not None:
        parameters["type"] = argon2_type
    return parameters


def source_of(settings: Settings, keyword: str, options: dict[str, Any]) -> str:
    """Where the value of ``keyword`` came from, for an error message."""
    setting = f"ARGON2_{keyword.upper()}"
    found = settings.find(setting, options.get(keyword))
    return found[0] if found else settings.env_name(setting)


def check_parameters(hasher: PasswordHasher, settings: Settings, options: dict[str, Any]) -> None:
    """Refuse at start-up what libargon2 would only refuse at the first hash."""
    if hasher.memory_cost < 8 * hasher.parallelism:
        raise ConfigError(
            source_of(settings, "memory_cost", options),
            f"must be at least 8 KiB per lane (8 x parallelism = {8 * hasher.parallelism}), "
            f"got {hasher.memory_cost}",
        )
    for keyword, minimum in MINIMUM_LENGTHS.items():
        if getattr(hasher, keyword) < minimum:
            raise ConfigError(
                source_of(settings, keyword, options),
                f"must be at least {minimum}, got {getattr(hasher, keyword)}",
            )


class Passwords:
    """The seed's ``generate_password_hash`` / ``check_password_hash`` over one hasher."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self.hasher = hasher

    def generate_password_hash(self, password: str | bytes) -> str:
        """A salted Argon2 hash of ``password``; an empty password is a ValueError."""
        if not password:
            raise ValueError("password cannot be empty")
        return self.hasher.hash(password)

    def check_password_hash(self, hash: str | bytes, password: str | bytes) -> bool:
        """``True`` when ``password`` matches; ``False`` on a mismatch or a malformed hash."""
        if not hash or not password:
            return False
        try:
            return self.hasher.verify(hash, password)
        except (VerificationError, InvalidHashError, TypeError, ValueError):
            return False

    def password_needs_rehash(self, hash: str | bytes) -> bool:
        """``True`` when ``hash`` was not made with the current parameters (or is malformed).

        Call it after a successful check and store a new hash of the password if so.
        """
        try:
            return self.hasher.check_needs_rehash(hash)
        except (InvalidHashError, TypeError, ValueError):
            return True


class GnarArgon2(GnarExtension):
    """A :class:`argon2.PasswordHasher` per app, on argon2-cffi's defaults (Argon2id, RFC 9106).

    Options (constructor keywords) win over ``GNAR_ARGON2_*`` settings:
    ``time_cost``, ``memory_cost`` (KiB), ``parallelism``, ``hash_len``, ``salt_len``,
    ``encoding``, ``type`` (``"id"``, ``"i"``, ``"d"`` or an :class:`argon2.Type`).
    Publishes ``gnar.argon2``, ``gnar.generate_password_hash``,
    ``gnar.check_password_hash`` and ``gnar.password_needs_rehash``.
    """

    extension_name = "GnarArgon2"
    configured_signal = signals.argon2_configured
    options_accepted = frozenset({*NUMERIC_SETTINGS.values(), "encoding", "type"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        parameters = hasher_parameters(settings, self.options)
        hasher = PasswordHasher(**parameters)
        check_parameters(hasher, settings, self.options)
        passwords = Passwords(hasher)
        state.provide(
            argon2=hasher,
            generate_password_hash=passwords.generate_password_hash,
            check_password_hash=passwords.check_password_hash,
            password_needs_rehash=passwords.password_needs_rehash,
        )
        log.info(
            "Argon2 PasswordHasher: %s, time_cost=%d, memory_cost=%d KiB, parallelism=%d",
            hasher.type.name.lower(), hasher.time_cost, hasher.memory_cost, hasher.parallelism,
        )
        return {"hasher": hasher}
