"""serve: the Flask development server, or bjoern in production."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from flask import Flask

from . import signals
from .config import parse_float
from .state import GnarState, get_state

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 25.0


def serve(app: Flask, port: int | None = None, host: str = "0.0.0.0", **options: Any) -> None:
    """Run ``app``: bjoern in production, else the development server with the reloader.

    ``port`` defaults to the one given to ``create_app``. In development, ``options``
    go to :meth:`flask.Flask.run`.
    """
    state = get_state(app)
    port = state.port if port is None else port
    if state.production:
        serve_production(app, state, host, port, **options)
    else:
        serve_development(app, state, host, port, **options)


def is_reloader_parent(use_reloader: bool) -> bool:
    """The reloader's parent only restarts children; it must not start pollers."""
    return use_reloader and os.environ.get("WERKZEUG_RUN_MAIN") != "true"


def serve_development(app: Flask, state: GnarState, host: str, port: int, **options: Any) -> None:
    options.setdefault("debug", True)
    options.setdefault("use_reloader", True)
    extra_files = set(options.pop("extra_files", None) or ()) | state.watch_files
    serving_here = not is_reloader_parent(options["use_reloader"])
    if serving_here:
        start_serving(app, state)
    try:
        app.run(host=host, port=port, extra_files=sorted(extra_files), **options)
    finally:
        if serving_here:
            stop_serving(app, state, "development server stopped")


def start_serving(app: Flask, state: GnarState) -> None:
    state.start()
    signals.serving_started.send(app)
    mode = "production" if state.production else "development"
    log.info("Gnar-%s is up (%s) on port %s", state.name, mode, state.port)


def stop_serving(app: Flask, state: GnarState, reason: str) -> None:
    signals.serving_stopping.send(app, reason=reason)
    state.stop()


def grace_seconds(state: GnarState, explicit: Any = None) -> float:
    return float(
        state.settings.get(
            "SHUTDOWN_GRACE_SECONDS", parse_float, explicit=explicit, default=DEFAULT_GRACE_SECONDS
        )
    )


def serve_production(
    app: Flask, state: GnarState, host: str, port: int, grace: float | None = None
) -> None:
    """bjoern on ``host:port``; SIGTERM drains requests in flight within the grace period."""
    import bjoern

    deadline = grace_seconds(state, grace)
    install_graceful_sigterm(app, state, deadline)
    start_serving(app, state)
    try:
        bjoern.run(app, host, port, reuse_port=True)
    except KeyboardInterrupt:
        log.info("bjoern drained its connections")
    finally:
        stop_serving(app, state, "bjoern stopped")


def install_graceful_sigterm(app: Flask, state: GnarState, grace: float) -> None:
    """SIGTERM becomes bjoern's SIGINT (stop accepting, finish requests in flight).

    bjoern then waits for idle keep-alive clients without limit, so a watchdog
    ends the process with status 0 once ``grace`` seconds have passed.
    """

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        log.info("SIGTERM: draining requests in flight (grace %.1fs)", grace)
        signals.serving_stopping.send(app, reason="SIGTERM")
        watchdog = threading.Timer(grace, exit_after_grace, args=(app, state))
        watchdog.daemon = True
        watchdog.start()
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, on_sigterm)


def exit_after_grace(app: Flask, state: GnarState) -> None:
    log.warning("grace period over: closing idle connections and exiting")
    state.stop()
    logging.shutdown()
    os._exit(0)
