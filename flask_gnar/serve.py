"""serve: the Flask development server, or bjoern in production."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from flask import Flask
from werkzeug.wsgi import ClosingIterator

from . import signals
from .config import parse_non_negative_float, parse_positive_int
from .state import GnarState, get_state

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 25.0
IDLE_CONFIRM_SECONDS = 0.2
STOP_HOOKS_MINIMUM_SECONDS = 1.0


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


PRODUCTION_ONLY_OPTIONS = ("workers", "grace")


def serve_development(app: Flask, state: GnarState, host: str, port: int, **options: Any) -> None:
    ignored = [name for name in PRODUCTION_ONLY_OPTIONS if options.pop(name, None) is not None]
    if ignored:
        log.warning("serve(): %s apply in production only; the development server ignores them",
                    ", ".join(ignored))
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
            "SHUTDOWN_GRACE_SECONDS", parse_non_negative_float, explicit=explicit,
            default=DEFAULT_GRACE_SECONDS,
        )
    )


class InFlight:
    """WSGI middleware counting requests whose response is not yet fully sent.

    bjoern calls one request at a time per process, so the count needs no lock.
    The count drops when the server closes the response iterable, after the last
    byte is written.
    """

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app
        self.count = 0

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.count += 1
        try:
            body = self.wsgi_app(environ, start_response)
        except BaseException:
            self.done()
            raise
        # Flask answers with a werkzeug ClosingIterator: adding our callback to it
        # costs nothing, while wrapping it in another iterator cost ~4% of throughput.
        callbacks = getattr(body, "_callbacks", None)
        if isinstance(body, ClosingIterator) and isinstance(callbacks, list):
            callbacks.append(self.done)
            return body
        return ClosingIterator(body, self.done)

    def done(self) -> None:
        self.count -= 1


def shutdown_delay(state: GnarState) -> float:
    return float(
        state.settings.get("SHUTDOWN_DELAY_SECONDS", parse_non_negative_float, default=0.0)
    )


def worker_count(state: GnarState, explicit: Any = None) -> int:
    return int(state.settings.get("WORKERS", parse_positive_int, explicit=explicit, default=1))


def serve_production(
    app: Flask,
    state: GnarState,
    host: str,
    port: int,
    workers: int | None = None,
    grace: float | None = None,
) -> None:
    """bjoern on ``host:port``: one process, or ``workers`` forked processes sharing the port.

    Each worker listens on a socket of its own with ``SO_REUSEPORT``, so the kernel
    spreads connections evenly over the workers (a shared socket lets the first
    worker to wake take every keep-alive connection of a burst).
    """
    count = worker_count(state, workers)
    deadline = grace_seconds(state, grace)
    shutdown_delay(state)  # checked before the socket opens: a forked worker must not fail on it
    in_flight = InFlight(app.wsgi_app)
    address = (host, port)
    state.prepare_serving()
    if count == 1:
        listen(in_flight, address)
        run_worker(app, state, in_flight, deadline)
    else:
        check_port_free(address)
        Supervisor(app, state, in_flight, count, deadline, address).run()


def listen(in_flight: InFlight, address: tuple[str, int]) -> None:
    import bjoern

    bjoern.listen(in_flight, address[0], address[1], reuse_port=True)


def check_port_free(address: tuple[str, int]) -> None:
    """Fail in the supervisor, before any fork, when the port cannot be bound."""
    with socket.socket(socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind(address)


def run_worker(app: Flask, state: GnarState, in_flight: InFlight, grace: float) -> None:
    """Serve on the socket :func:`listen` opened until bjoern drains or the grace ends."""
    import bjoern

    install_graceful_sigterm(app, state, in_flight, grace)
    start_serving(app, state)
    try:
        bjoern.run()
    except KeyboardInterrupt:
        log.info("bjoern drained its connections")
    finally:
        stop_serving(app, state, "bjoern stopped")


class Supervisor:
    """Forks the workers, replaces one that dies, forwards SIGTERM/SIGINT to all."""

    def __init__(
        self,
        app: Flask,
        state: GnarState,
        in_flight: InFlight,
        count: int,
        grace: float,
        address: tuple[str, int],
    ) -> None:
        self.app = app
        self.address = address
        self.state = state
        self.in_flight = in_flight
        self.count = count
        self.grace = grace
        self.workers: dict[int, float] = {}
        self.stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.on_stop_signal)
        signal.signal(signal.SIGINT, self.on_stop_signal)
        log.info("Supervisor %d starting %d bjoern workers", os.getpid(), self.count)
        for _ in range(self.count):
            self.spawn()
        while not self.stopping:
            self.reap(replace=True)
            time.sleep(0.05)
        self.shut_down()
        self.state.finish_serving()

    def spawn(self) -> None:
        self.state.prepare_fork()
        pid = os.fork()
        if pid == 0:
            self.become_worker()
        self.workers[pid] = time.monotonic()

    def become_worker(self) -> None:
        status = 0
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            listen(self.in_flight, self.address)
            run_worker(self.app, self.state, self.in_flight, self.grace)
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            status = 1
        finally:
            logging.shutdown()
            os._exit(status)

    def reap(self, replace: bool) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            started = self.workers.pop(pid, None)
            if started is None:
                continue
            self.state.worker_exited(pid)
            if replace and not self.stopping:
                log.warning("worker %d exited (%s); starting a new one", pid, describe_status(status))
                if time.monotonic() - started < 1.0:
                    time.sleep(1.0)
                self.spawn()

    def on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def shut_down(self) -> None:
        log.info("Supervisor stopping %d workers (grace %.1fs)", len(self.workers), self.grace)
        signals.serving_stopping.send(self.app, reason="supervisor stopping")
        for pid in list(self.workers):
            send_signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 5.0
        while self.workers and time.monotonic() < deadline:
            self.reap(replace=False)
            time.sleep(0.05)
        for pid in list(self.workers):
            log.warning("worker %d did not stop in time; killing it", pid)
            send_signal(pid, signal.SIGKILL)
        self.reap(replace=False)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"status {os.waitstatus_to_exitcode(status)}"


def send_signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def install_graceful_sigterm(app: Flask, state: GnarState, in_flight: InFlight, grace: float) -> None:
    """SIGTERM: readiness turns false, requests in flight finish, then the process exits 0.

    1. readiness answers 503 at once; for ``GNAR_SHUTDOWN_DELAY_SECONDS`` the worker
       keeps serving, so the load balancer can notice and stop sending;
    2. it waits until no request has been in flight for a moment (new ones are still
       served: a connection bjoern has queued is never reset);
    3. bjoern stops accepting, the stop hooks run (pollers, database pool) and the
       process exits 0. bjoern would wait for idle keep-alive clients without limit,
       so the exit does not wait for them.

    Whatever is still in flight when ``grace`` seconds have passed since SIGTERM is cut.
    """
    delay = shutdown_delay(state)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if state.draining:
            return
        state.draining = True
        log.info("SIGTERM: readiness is false; draining in %.1fs (grace %.1fs)", delay, grace)
        signals.serving_stopping.send(app, reason="SIGTERM")
        watchdog = threading.Thread(
            target=drain_and_exit, args=(state, in_flight, delay, grace), daemon=True
        )
        watchdog.start()

    signal.signal(signal.SIGTERM, on_sigterm)


def drain_and_exit(state: GnarState, in_flight: InFlight, delay: float, grace: float) -> None:
    deadline = time.monotonic() + grace
    time.sleep(min(delay, grace))
    if wait_until_idle(in_flight, deadline):
        log.info("no request in flight: stopping")
    else:
        log.warning("grace period over with %d request(s) in flight: exiting", in_flight.count)
    os.kill(os.getpid(), signal.SIGINT)
    run_stop_hooks_until(state, deadline)
    logging.shutdown()
    os._exit(0)


def run_stop_hooks_until(state: GnarState, deadline: float) -> None:
    """The stop hooks share the grace period (at least STOP_HOOKS_MINIMUM_SECONDS).

    A poller whose callback is cut at the deadline leaves its message on the queue,
    where it comes back after its visibility timeout.
    """
    stopper = threading.Thread(target=state.stop, daemon=True)
    stopper.start()
    stopper.join(max(deadline - time.monotonic(), STOP_HOOKS_MINIMUM_SECONDS))
    if stopper.is_alive():
        log.warning("stop hooks still running at the end of the grace period: exiting")


def wait_until_idle(in_flight: InFlight, deadline: float) -> bool:
    """True once no request has been in flight for IDLE_CONFIRM_SECONDS; False at the deadline."""
    idle_since = None
    while time.monotonic() < deadline:
        if in_flight.count > 0:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= IDLE_CONFIRM_SECONDS:
            return True
        time.sleep(0.02)
    return False
