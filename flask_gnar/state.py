"""The per-app object at ``app.extensions["gnar"]`` and the ``gnar`` proxy."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, current_app
from werkzeug.local import LocalProxy

from .config import DEFAULT_ENV_PREFIX, Settings, parse_bool, parse_port
from .exceptions import NotInitialisedError

if TYPE_CHECKING:  # pragma: no cover
    from .context import TraceHooks
    from .extension import GnarExtension

log = logging.getLogger(__name__)

STATE_KEY = "gnar"

#: Which extension provides each runtime asset.
ASSET_OWNERS = {
    "db": "GnarDB",
    "argon2": "GnarArgon2",
    "generate_password_hash": "GnarArgon2",
    "check_password_hash": "GnarArgon2",
    "password_needs_rehash": "GnarArgon2",
    "jwt": "GnarJWT",
    "get_ses_client": "GnarSES",
    "send_email": "GnarSES",
    "send_sqs_message": "GnarSQS",
    "send_sqs_messages": "GnarSQS",
    "sqs": "GnarSQS",
    "peer": "GnarPeer",
    "external": "GnarPeer",
}

Hook = Callable[[], None]
PidHook = Callable[[int], None]


class GnarState:
    """Everything flask-gnar keeps for one app.

    Extensions fill it in with :meth:`provide`; asking for an asset whose
    extension was not initialised raises :class:`NotInitialisedError`.
    """

    #: GnarTracing's hooks for peer calls and SQS messages; ``None`` while tracing is off.
    tracing: TraceHooks | None = None

    def __init__(self, settings: Settings, name: str, production: bool, port: int) -> None:
        self.settings = settings
        self.name = name
        self.production = production
        self.port = port
        self.env_prefix = settings.env_prefix
        self.extensions: dict[str, GnarExtension] = {}
        #: Files the development reloader must watch although they are not
        #: imported (blueprint modules that failed to load).
        self.watch_files: set[str] = set()
        self.readiness_checks: dict[str, Callable[[], bool]] = {}
        #: True once the app has been told to stop (readiness turns false).
        self.draining = False
        self._start_hooks: list[Hook] = []
        self._stop_hooks: list[Hook] = []
        self._before_fork_hooks: list[Hook] = []
        self._before_serving_hooks: list[Hook] = []
        self._after_serving_hooks: list[Hook] = []
        self._worker_exit_hooks: list[PidHook] = []
        self._started_pid: int | None = None
        self._lock = threading.RLock()

    def __getattr__(self, item: str) -> Any:
        if item in ASSET_OWNERS:
            raise NotInitialisedError(item, ASSET_OWNERS[item])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}")

    def __repr__(self) -> str:
        mode = "production" if self.production else "development"
        return f"<GnarState {self.name!r} {mode} port={self.port}>"

    def provide(self, **assets: Any) -> None:
        """Make runtime assets available as attributes (``gnar.db`` ...)."""
        for key, value in assets.items():
            setattr(self, key, value)

    def env(self, name: str, default: str | None = None) -> str | None:
        """The setting ``NAME`` from ``app.config["GNAR_<NAME>"]`` or ``<PREFIX>_<NAME>``.

        The name is upper-cased, as gnar-gear's ``app.env`` did.
        """
        found = self.settings.find(name.upper())
        return default if found is None else str(found[1])

    def ready(self) -> dict[str, bool]:
        """Run every readiness check; a check that raises counts as not ready."""
        results = {}
        for name, check in self.readiness_checks.items():
            try:
                results[name] = bool(check())
            except Exception:
                log.warning("readiness check %r failed", name, exc_info=True)
                results[name] = False
        return results

    def on_start(self, hook: Hook) -> Hook:
        """Run ``hook`` when the app starts serving in a process (pollers ...)."""
        self._start_hooks.append(hook)
        return hook

    def on_stop(self, hook: Hook) -> Hook:
        """Run ``hook`` when the app stops serving (in reverse order of registration)."""
        self._stop_hooks.append(hook)
        return hook

    def before_fork(self, hook: Hook) -> Hook:
        """Run ``hook`` in the parent before ``serve()`` forks a worker (close sockets)."""
        self._before_fork_hooks.append(hook)
        return hook

    def prepare_fork(self) -> None:
        """Run the before-fork hooks: nothing open may be shared with a forked worker."""
        for hook in self._before_fork_hooks:
            hook()

    def before_serving(self, hook: Hook) -> Hook:
        """Run ``hook`` once per production ``serve()``, in its process, before any worker
        exists (the metrics folder for this run)."""
        self._before_serving_hooks.append(hook)
        return hook

    def after_serving(self, hook: Hook) -> Hook:
        """Run ``hook`` in the supervisor once its workers have exited."""
        self._after_serving_hooks.append(hook)
        return hook

    def on_worker_exit(self, hook: PidHook) -> PidHook:
        """Run ``hook(pid)`` in the supervisor when a worker has exited (or was killed)."""
        self._worker_exit_hooks.append(hook)
        return hook

    def prepare_serving(self) -> None:
        for hook in self._before_serving_hooks:
            hook()

    def finish_serving(self) -> None:
        """Run the after-serving hooks; never raises."""
        for hook in self._after_serving_hooks:
            try:
                hook()
            except Exception:
                log.exception("after-serving hook %r failed", hook)

    def worker_exited(self, pid: int) -> None:
        """Run the worker-exit hooks for ``pid``; never raises (the supervisor goes on)."""
        for hook in self._worker_exit_hooks:
            try:
                hook(pid)
            except Exception:
                log.exception("worker-exit hook %r failed", hook)

    @property
    def started(self) -> bool:
        return self._started_pid == os.getpid()

    def start(self) -> None:
        """Run the start hooks once in this process (a forked worker runs its own)."""
        with self._lock:
            if self.started:
                return
            self._started_pid = os.getpid()
        for hook in self._start_hooks:
            hook()

    def stop(self) -> None:
        """Run the stop hooks in reverse order; never raises.

        A second caller (the server's thread and a shutdown watchdog) waits until
        the first has finished, so nobody exits while hooks still run.
        """
        with self._lock:
            if not self.started:
                return
            self._started_pid = None
            for hook in reversed(self._stop_hooks):
                try:
                    hook()
                except Exception:
                    log.exception("stop hook %r failed", hook)


def init_state(
    app: Flask,
    name: str | None = None,
    production: bool | None = None,
    port: int | None = None,
    env_prefix: str | None = None,
) -> GnarState:
    """The app's state, created on first use.

    An extension used alone (without ``create_app``) gets a state whose name,
    mode and port come from ``GNAR_NAME``, ``GNAR_PRODUCTION`` and ``GNAR_PORT``
    in ``app.config`` or the environment.
    """
    existing = app.extensions.get(STATE_KEY)
    if existing is not None:
        return cast(GnarState, existing)
    prefix = env_prefix or app.config.get("GNAR_ENV_PREFIX") or DEFAULT_ENV_PREFIX
    settings = Settings(app, prefix)
    state = GnarState(
        settings,
        name=settings.get("NAME", explicit=name, default=app.import_name.split(".")[0]),
        production=settings.get("PRODUCTION", parse_bool, explicit=production, default=False),
        port=settings.get("PORT", parse_port, explicit=port, default=8000),
    )
    app.extensions[STATE_KEY] = state
    return state


def get_state(app: Flask) -> GnarState:
    """The app's state; a clear error when no flask-gnar extension was initialised."""
    try:
        return cast(GnarState, app.extensions[STATE_KEY])
    except KeyError:
        raise RuntimeError(
            f"flask-gnar is not registered with the app {app.name!r}: build it with "
            "create_app() or initialise a flask-gnar extension on it"
        ) from None


def _current_state() -> GnarState:
    return get_state(current_app)


#: The current app's :class:`GnarState`.
gnar = cast(GnarState, LocalProxy(_current_state))
