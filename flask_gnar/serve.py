"""serve: the Flask development server, or bjoern in production."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from flask import Flask
from werkzeug.wsgi import ClosingIterator

from . import signals
from .config import parse_float
from .state import GnarState, get_state

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 25.0
IDLE_CONFIRM_SECONDS = 0.2


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


class InFlight:
    """WSGI middleware counting requests whose response is not yet fully sent."""

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self.count += 1
        try:
            body = self.wsgi_app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return ClosingIterator(body, [self._done])

    def _done(self) -> None:
        with self._lock:
            self.count -= 1


def serve_production(
    app: Flask, state: GnarState, host: str, port: int, grace: float | None = None
) -> None:
    """bjoern on ``host:port``; SIGTERM drains requests in flight within the grace period."""
    import bjoern

    in_flight = InFlight(app.wsgi_app)
    install_graceful_sigterm(app, state, in_flight, grace_seconds(state, grace))
    start_serving(app, state)
    try:
        bjoern.run(in_flight, host, port, reuse_port=True)
    except KeyboardInterrupt:
        log.info("bjoern drained its connections")
    finally:
        stop_serving(app, state, "bjoern stopped")


def install_graceful_sigterm(app: Flask, state: GnarState, in_flight: InFlight, grace: float) -> None:
    """SIGTERM becomes bjoern's SIGINT: stop accepting, finish requests in flight.

    bjoern then waits for idle keep-alive clients without limit, so a watchdog
    exits (status 0) as soon as no request is in flight, or when ``grace`` is over.
    """

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        log.info("SIGTERM: draining requests in flight (grace %.1fs)", grace)
        signals.serving_stopping.send(app, reason="SIGTERM")
        watchdog = threading.Thread(
            target=exit_when_drained, args=(state, in_flight, grace), daemon=True
        )
        watchdog.start()
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, on_sigterm)


def exit_when_drained(state: GnarState, in_flight: InFlight, grace: float) -> None:
    deadline = time.monotonic() + grace
    idle_since = None
    while time.monotonic() < deadline:
        if in_flight.count > 0:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= IDLE_CONFIRM_SECONDS:
            log.info("no request in flight: closing idle connections and exiting")
            break
        time.sleep(0.05)
    else:
        log.warning("grace period over with %d request(s) in flight: exiting", in_flight.count)
    state.stop()
    logging.shutdown()
    os._exit(0)
