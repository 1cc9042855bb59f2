"""serve: the Flask development server, or bjoern in production."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from flask import Flask

from . import listener, signals
from .config import parse_seconds, parse_worker_count
from .inflight import InFlight, serving_layer
from .state import GnarState, get_state

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
            "SHUTDOWN_GRACE_SECONDS", parse_seconds, explicit=explicit,
            default=DEFAULT_GRACE_SECONDS,
        )
    )


def shutdown_delay(state: GnarState) -> float:
    return float(
        state.settings.get("SHUTDOWN_DELAY_SECONDS", parse_seconds, default=0.0)
    )


def worker_count(state: GnarState, explicit: Any = None) -> int:
    return int(state.settings.get("WORKERS", parse_worker_count, explicit=explicit, default=1))


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
    in_flight = serving_layer(app.wsgi_app)
    address = (host, port)
    state.prepare_serving()
    freeze_start_up_objects()
    if count == 1:
        sock = listen(in_flight, address)
        run_worker(app, state, in_flight, sock, deadline)
    else:
        check_port_free(address)
        Supervisor(app, state, in_flight, count, deadline, address).run()


def freeze_start_up_objects() -> None:
    """Keep what start-up built out of every later garbage collection.

    A service's app, its extensions and their imports are tens of thousands of
    objects that live as long as the process; a full collection walked them all and
    stalled a request for several milliseconds. Frozen before the fork, the workers
    also keep sharing those pages with the supervisor instead of copying them.
    """
    gc.collect()
    gc.freeze()


def listen(in_flight: InFlight, address: tuple[str, int]) -> socket.socket:
    import bjoern

    sock: socket.socket = bjoern.listen(in_flight, address[0], address[1], reuse_port=True)
    return sock


def check_port_free(address: tuple[str, int]) -> None:
    """Fail in the supervisor, before any fork, when the port cannot be bound."""
    with socket.socket(socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind(address)


def run_worker(
    app: Flask, state: GnarState, in_flight: InFlight, sock: socket.socket, grace: float
) -> None:
    """Serve on the socket :func:`listen` opened until SIGTERM's drain ends."""
    import bjoern

    install_graceful_sigterm(app, state, in_flight, sock, grace)
    start_serving(app, state)
    try:
        bjoern.run()
    except KeyboardInterrupt:
        log.info("interrupted (SIGINT): stopping")
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
            sock = listen(self.in_flight, self.address)
            run_worker(self.app, self.state, self.in_flight, sock, self.grace)
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


def install_graceful_sigterm(
    app: Flask, state: GnarState, in_flight: InFlight, sock: socket.socket, grace: float
) -> None:
    """SIGTERM: readiness turns false, the worker drains without resetting a client, exits 0.

    1. readiness answers 503 at once; for ``GNAR_SHUTDOWN_DELAY_SECONDS`` the worker
       keeps serving as before, so a load balancer can notice and stop sending;
    2. the kernel stops queueing new connections on the worker's socket, and every
       response asks its client to close the connection;
    3. once the accept queue is empty and no request has been in flight for a moment,
       the socket is released (see :mod:`flask_gnar.listener`);
    4. a request arriving on a connection that is still open gets a ``503`` with
       ``Connection: close`` from then on, while the stop hooks run (pollers, database
       pool); then the process exits 0.

    Whatever is still in flight when ``grace`` seconds have passed since SIGTERM is cut.
    """
    delay = shutdown_delay(state)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if state.draining:
            return
        state.draining = True
        log.info("SIGTERM: readiness is false; draining in %.1fs (grace %.1fs)", delay, grace)
        signals.serving_stopping.send(app, reason="SIGTERM")
        drain = Drain(state, in_flight, sock, time.monotonic() + grace)
        threading.Thread(target=drain.run, args=(delay,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


class Drain:
    """The steps of a worker's shutdown after SIGTERM, each bounded by the grace deadline."""

    def __init__(self, state: GnarState, in_flight: InFlight, sock: socket.socket, deadline: float) -> None:
        self.state = state
        self.in_flight = in_flight
        self.sock = sock
        self.deadline = deadline

    def run(self, delay: float) -> None:
        time.sleep(max(0.0, min(delay, self.deadline - time.monotonic())))
        listener.refuse_new_connections(self.sock)
        self.in_flight.closing = True
        if self.wait_until_drained():
            log.info("no request in flight: stopping")
        else:
            log.warning("grace period over with %d request(s) in flight: exiting", self.in_flight.count)
        listener.release(self.sock)
        self.in_flight.refusing = True
        self.wait_for(lambda: self.in_flight.count == 0)
        run_stop_hooks_until(self.state, self.deadline)
        self.wait_for(lambda: self.in_flight.count == 0)
        logging.shutdown()
        os._exit(0)

    def wait_until_drained(self) -> bool:
        """True once nothing was queued or in flight for IDLE_CONFIRM_SECONDS; False at the deadline."""
        idle_since: float | None = None

        def drained() -> bool:
            nonlocal idle_since
            if self.in_flight.count > 0 or listener.queued_connections(self.sock) > 0:
                idle_since = None
                return False
            now = time.monotonic()
            if idle_since is None:
                idle_since = now
            return now - idle_since >= IDLE_CONFIRM_SECONDS

        return self.wait_for(drained)

    def wait_for(self, condition: Callable[[], bool]) -> bool:
        while not condition():
            if time.monotonic() >= self.deadline:
                return False
            time.sleep(0.01)
        return True


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
