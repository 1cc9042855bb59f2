"""GnarArgon2: one argon2-cffi PasswordHasher per app and the seed's password helpers."""

from __future__ import annotations

import codecs
import logging
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask

from . import signals
from .config import (
    MAX_UINT32,
    Bounded,
    Settings,
    int_between,
    memory_limit_kib,
    parse_str,
    process_limit,
)
from .exceptions import ConfigError
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)

#: libargon2's most lanes (ARGON2_MAX_LANES).
MAX_LANES = 2**24 - 1
#: libargon2 needs 8 KiB of memory per lane (ARGON2_SYNC_POINTS x 2 blocks of 1 KiB).
KIB_PER_LANE = 8


def most_memory_kib() -> int:
    return min(MAX_UINT32, memory_limit_kib())


def most_lanes() -> int:
    return min(MAX_LANES, process_limit())


#: Setting suffix (``ARGON2_<suffix>``) -> PasswordHasher keyword.
NUMERIC_SETTINGS = {
    "TIME_COST": "time_cost",
    "MEMORY_COST": "memory_cost",
    "PARALLELISM": "parallelism",
    "HASH_LEN": "hash_len",
    "SALT_LEN": "salt_len",
}

#: PasswordHasher keyword -> its parser: what libargon2 accepts (past it, the first hash
#: fails, not start-up), within the machine's memory and thread limit.
PARSERS: dict[str, Bounded[int]] = {
    "time_cost": int_between(1, MAX_UINT32, limit="libargon2's limit"),
    "memory_cost": int_between(
        KIB_PER_LANE, most_memory_kib, limit="KiB: the machine's memory, at most 2**32 - 1"
    ),
    "parallelism": int_between(
        1, most_lanes, limit="libargon2's lanes, one thread each, within RLIMIT_NPROC"
    ),
    "hash_len": int_between(4, MAX_UINT32, limit="libargon2's limits"),
    "salt_len": int_between(8, MAX_UINT32, limit="libargon2's limits"),
}

TYPES = {"id": Type.ID, "i": Type.I, "d": Type.D}


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
        parse_number = PARSERS[keyword]
        value = settings.get(f"ARGON2_{suffix}", parse_number, explicit=options.get(keyword))
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
    return settings.source(f"ARGON2_{keyword.upper()}", options.get(keyword))


def check_parameters(hasher: PasswordHasher, settings: Settings, options: dict[str, Any]) -> None:
    """Refuse at start-up what libargon2 would only refuse at the first hash.

    The error names the setting that was set: parallelism when only it was (the
    memory cost is then argon2-cffi's default), else the memory cost.
    """
    needed = KIB_PER_LANE * hasher.parallelism
    if hasher.memory_cost >= needed:
        return
    memory = source_of(settings, "memory_cost", options)
    parallelism = source_of(settings, "parallelism", options)
    if settings.find("ARGON2_MEMORY_COST", options.get("memory_cost")) is None:
        raise ConfigError(
            parallelism,
            f"is {hasher.parallelism} lanes, which need {needed} KiB of memory "
            f"({KIB_PER_LANE} KiB per lane), more than the memory cost "
            f"({hasher.memory_cost} KiB, argon2-cffi's default; set {memory} too)",
        )
    raise ConfigError(
        memory,
        f"must be at least {KIB_PER_LANE} KiB per lane ({KIB_PER_LANE} x parallelism "
        f"{hasher.parallelism} = {needed}), got {hasher.memory_cost}",
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
