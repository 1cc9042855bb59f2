"""The error types flask-gnar raises."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.exceptions import HTTPException


class GnarError(Exception):
    """Base class of every flask-gnar error."""


class ConfigError(GnarError, ValueError):
    """A setting is missing or malformed; start-up stops.

    ``key`` names the source of the bad value: the environment variable, the
    ``app.config`` key or the argument it came from.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


class NotInitialisedError(GnarError, AttributeError):
    """An asset was asked for whose extension was not initialised on this app."""

    def __init__(self, asset: str, extension: str) -> None:
        self.asset = asset
        self.extension = extension
        super().__init__(
            f"gnar.{asset} needs {extension}, which is not initialised on this app: "
            f"call {extension}().init_app(app) or use create_app()"
        )


class AlreadyInitialisedError(GnarError, RuntimeError):
    """An extension was initialised twice on the same app."""


class BlueprintLoadError(GnarError, ImportError):
    """A blueprint module failed to import (production stops on it)."""


class DatabaseUnavailable(GnarError, HTTPException):
    """The database cannot be reached (down, restarting, or every pooled connection busy).

    An HTTP 503 whose body is JSON ``{"error": description}`` even without
    :class:`~flask_gnar.GnarErrors`; raised at start-up in production when the
    database is down.
    """

    code = 503
    description = "The database is unavailable; try again shortly."

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        return json.dumps({"error": self.description})

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json")]


class PeerError(GnarError):
    """Base class of the errors raised by ``gnar.peer`` and ``gnar.external``."""


class PeerNotFound(PeerError, ConfigError, LookupError):
    """No address is configured for a peer service: a missing setting.

    A :class:`ConfigError` (so a :class:`ValueError`) and a :class:`LookupError`;
    the message names every variable tried, ``key`` the one to set first
    (``<PREFIX>_PEER_<SERVICE>_URL``).
    """

    def __init__(
        self, service: str, tried: list[str], notes: list[str] | None = None, *, key: str = ""
    ) -> None:
        self.service = service
        self.tried = tried
        message = f"no address for the peer service {service!r}: set one of {', '.join(tried)}"
        if notes:
            message += " (" + "; ".join(notes) + ")"
        super().__init__(key or f"peer {service!r}", message)


class PeerUnavailable(PeerError, HTTPException):
    """A peer (or external URL) refused, dropped or could not be reached.

    It is an :class:`~werkzeug.exceptions.HTTPException`: left uncaught in a
    view, the client gets 502 (504 for :class:`PeerTimeout`) with the message.
    ``service`` is ``None`` for ``gnar.external`` calls.
    """

    code = 502

    def __init__(
        self, service: str | None, method: str, url: str, reason: str, timeout: object
    ) -> None:
        self.service = service
        self.method = method
        self.url = url
        self.timeout = timeout
        self.reason = reason
        target = f"peer service {service!r} at {url}" if service else url
        super().__init__(f"{method} {target} failed: {reason} (timeout {timeout}s)")


class PeerTimeout(PeerUnavailable):
    """A peer (or external URL) did not connect or answer within the timeout."""

    code = 504


class MigrationError(GnarError, ValueError):
    """A migration file failed; nothing of the run was kept.

    ``migration`` is the file's name, ``path`` where it is. Every migration of
    the run was rolled back with it, so the database is as it was before.
    """

    def __init__(self, migration: str, path: str, reason: str) -> None:
        self.migration = migration
        self.path = path
        super().__init__(
            f"the migration {migration} failed and was rolled back ({path}): {reason}"
        )
