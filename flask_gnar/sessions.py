"""GnarSessionInterface: Flask's cookie sessions, with one shared null session."""

from __future__ import annotations

from typing import Any

from flask.sessions import NullSession, SecureCookieSessionInterface


class GnarSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions; without a secret key, one read-only null session.

    An API authenticated by tokens sets no ``SECRET_KEY``. Flask then builds a new
    :class:`flask.sessions.NullSession` for every request (about 2 µs here), only
    to refuse any write to it. Every write to a null session fails, so one instance
    serves every request; with a secret key, nothing differs from Flask.
    """

    null_session = NullSession()

    def make_null_session(self, app: Any) -> NullSession:
        return self.null_session
