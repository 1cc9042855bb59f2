"""The small base every flask-gnar extension shares."""

from __future__ import annotations

from typing import Any, ClassVar

from blinker import NamedSignal
from flask import Flask

from .config import Settings
from .exceptions import AlreadyInitialisedError
from .state import GnarState, init_state


class GnarExtension:
    """``GnarX(app=None, **options)`` then ``init_app(app)``, the Flask way.

    ``options`` are explicit settings; they win over ``app.config`` and the
    environment. Subclasses name the options they accept in ``options_accepted``
    and do their work in :meth:`configure`, which returns the keyword arguments
    of their "configured" signal.
    """

    #: Name used in error messages and as the key in ``GnarState.extensions``.
    extension_name: ClassVar[str]
    #: Sent with the app as sender once ``init_app`` has succeeded.
    configured_signal: ClassVar[NamedSignal]
    options_accepted: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - self.options_accepted)
        if unknown:
            accepted = ", ".join(sorted(self.options_accepted)) or "none"
            raise TypeError(
                f"{self.extension_name}() got unknown option(s) {', '.join(unknown)}; "
                f"accepted: {accepted}"
            )
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        state = init_state(app)
        if self.extension_name in state.extensions:
            raise AlreadyInitialisedError(
                f"{self.extension_name} is already initialised on the app {app.name!r}; "
                "initialise each extension once per app"
            )
        signal_kwargs = self.configure(app, state, state.settings) or {}
        state.extensions[self.extension_name] = self
        self.configured_signal.send(app, **signal_kwargs)

    def configure(
        self, app: Flask, state: GnarState, settings: Settings
    ) -> dict[str, Any] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def option(self, name: str) -> Any:
        """The explicit option ``name``, or ``None`` when it was not given."""
        return self.options.get(name)
