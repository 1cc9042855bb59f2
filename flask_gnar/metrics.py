"""GnarMetrics: Prometheus metrics that add up every worker ``serve()`` runs.

Before ``serve()`` (the test client, the development server) the figures live in
the app's own :class:`~prometheus_client.CollectorRegistry`. A production
``serve()`` gives the run a new folder before any worker exists and puts
prometheus_client in multiprocess mode; each worker then creates its metrics
after the fork, writing them to files of its own in that folder (the request
figures to the cheaper table of :mod:`flask_gnar.request_files`), and every
scrape merges all the files (those of dead workers too, so counters never go
backwards) through a fresh registry.
"""

from __future__ import annotations

import errno
import fcntl
import importlib.metadata
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask, Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from . import signals
from .config import Settings, parse_bool, parse_str
from .extension import GnarExtension
from .inflight import InFlight, asking_to_close
from .request_files import (
    HTTP_DURATION,
    HTTP_DURATION_HELP,
    HTTP_REQUESTS,
    HTTP_REQUESTS_HELP,
    METRICS_ENDPOINT,
    RequestFiles,
    RequestFilesCollector,
    RowsByRequest,
)
from .state import GnarState

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from werkzeug.routing import Rule

log = logging.getLogger(__name__)

DEFAULT_PATH = "/metrics"
#: The text format every Prometheus 2 and 3 reads (our names need none of 1.0.0's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FOLDER_PREFIX = "gnar-metrics-"
LOCK_FILE = ".lock"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def parse_path(value: Any) -> str:
    path = parse_str(value)
    if not path.startswith("/"):
        raise ValueError(f"expected a URL path starting with '/', got {value!r}")
    return path


def parse_folder(value: Any) -> Path:
    folder = Path(parse_str(value))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"expected a writable folder, got {value!r}")
    return folder


def default_folder() -> Path:
    """``/dev/shm`` where there is one (memory: no disk writeback behind every count),
    else the system's temporary folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def service_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Recorder:
    """The metric objects of one app in one process, with their label children cached.

    ``registry`` is ``None`` in multiprocess mode: the files are the registry.
    """

    def __init__(
        self, registry: CollectorRegistry | None, build: dict[str, str], with_db: bool
    ) -> None:
        self.requests = Counter(
            HTTP_REQUESTS, HTTP_REQUESTS_HELP, ["method", "route", "status"], registry=registry,
        )
        self.duration = Histogram(
            HTTP_DURATION, HTTP_DURATION_HELP, ["method", "route"], registry=registry,
        )
        self.sqs_messages = Counter(
            "gnar_sqs_messages", "SQS messages handled (deleted) or failed (left on the queue).",
            ["queue", "outcome"], registry=registry,
        )
        self.sqs_duration = Histogram(
            "gnar_sqs_message_duration_seconds", "Time the callback took on an SQS message.",
            ["queue", "outcome"], registry=registry,
        )
        self.peer_requests = Counter(
            "gnar_peer_requests", "Requests to peer services (service 'external' for "
            "gnar.external), by HTTP status or 'error'.",
            ["service", "status"], registry=registry,
        )
        self.peer_duration = Histogram(
            "gnar_peer_request_duration_seconds", "Time a request to a peer service took.",
            ["service"], registry=registry,
        )
        if with_db:
            self.db_connections = Gauge(
                "gnar_db_pool_connections", "Open database connections, idle or in use, "
                "over the live workers.", ["state"], registry=registry,
                multiprocess_mode="livesum",
            )
            self.db_max_connections = Gauge(
                "gnar_db_pool_max_connections", "The pool bounds, added up over the live "
                "workers.", registry=registry, multiprocess_mode="livesum",
            )
        self.workers = Gauge(
            "gnar_workers", "Worker processes serving the app.",
            registry=registry, multiprocess_mode="livesum",
        )
        self.build_info = Gauge(
            "gnar_build_info", "Always 1; the labels name the service and its versions.",
            list(build), registry=registry, multiprocess_mode="max",
        )
        self.build_info.labels(**build).set(1)
        self.requests_by_kind = RequestChildren(self.requests, self.duration)
        self._pool: tuple[int, int] = (-1, -1)

    def request(self, rule: Rule | None, method: str, status: str, seconds: float) -> None:
        """Count one request; ``status`` is the WSGI status line (``"200 OK"``)."""
        children = self.requests_by_kind.row_of(rule, method, status)
        if children is not None:
            children[0].inc()
            children[1].observe(seconds)

    def pool(self, pool: Any) -> None:
        """The pool's idle and in-use counts, written only when they changed."""
        figures = (len(pool.idle_connections), len(pool.connections_in_use))
        if figures != self._pool:
            self._pool = figures
            self.db_connections.labels("idle").set(figures[0])
            self.db_connections.labels("in_use").set(figures[1])


class RequestChildren(RowsByRequest[tuple[Any, Any]]):
    """The counter and histogram children of each kind of request."""

    def __init__(self, requests: Counter, duration: Histogram) -> None:
        super().__init__()
        self.requests = requests
        self.duration = duration

    def new_row(self, labels: tuple[str, str, int]) -> tuple[Any, Any]:
        method, route, status = labels
        return self.requests.labels(method, route, str(status)), self.duration.labels(method, route)


class MultiprocessFolder:
    """The folder of one production ``serve()`` run.

    A new folder per run (a reused one would bring back the last run's counts, a
    shared one would mix services), locked by the serving process for as long
    as it runs: a folder nobody holds the lock of is left over from a run that
    crashed, and the next run removes it.
    """

    def __init__(self, base: Path, service: str) -> None:
        self.base = base
        self.prefix = f"{FOLDER_PREFIX}{service}-"
        self.owner_pid = os.getpid()
        self.remove_stale()
        self.path = Path(tempfile.mkdtemp(prefix=self.prefix, dir=base))
        self._lock = os.open(self.path / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def remove_stale(self) -> None:
        for folder in self.base.glob(self.prefix + "*"):
            if folder.is_dir() and not held(folder / LOCK_FILE):
                shutil.rmtree(folder, ignore_errors=True)

    def remove(self) -> None:
        if os.getpid() == self.owner_pid:
            shutil.rmtree(self.path, ignore_errors=True)
            os.close(self._lock)


def held(lock_file: Path) -> bool:
    """True while some live process holds the lock on ``lock_file``."""
    try:
        descriptor = os.open(lock_file, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(descriptor)
    return False


def use_multiprocess_values(folder: Path) -> None:
    """From now on, metrics created in this process (and its forks) write to ``folder``.

    prometheus_client chooses its value class when it is imported, from
    ``PROMETHEUS_MULTIPROC_DIR``; create_app imports it long before serve()
    knows it will fork, so serve() sets both here, before any worker exists.
    """
    os.environ[MULTIPROC_ENV] = str(folder)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class AppMetrics:
    """Everything GnarMetrics keeps for one app (never the app itself: the signal
    receivers hold this object strongly)."""

    def __init__(self, state: GnarState, base: Path, build: dict[str, str]) -> None:
        self.state = state
        self.base = base
        self.build = build
        self.with_db = "db" in vars(state)
        self.registry = CollectorRegistry(auto_describe=True)
        self.recorder = self.primed(Recorder(self.registry, build, self.with_db))
        #: Where the request path counts: the recorder, or the worker's request files.
        self.http: Recorder | RequestFiles = self.recorder
        self.folder: MultiprocessFolder | None = None

    def primed(self, recorder: Recorder) -> Recorder:
        """``recorder`` with the figures known from the start: this process, the pool."""
        recorder.workers.set(1)
        pool = self.pool()
        if pool is not None:
            recorder.db_max_connections.set(pool.maxconn)
            recorder.pool(pool)
        return recorder

    # --- serving time --------------------------------------------------------------

    def before_serving(self) -> None:
        self.folder = MultiprocessFolder(self.base, self.state.name)
        use_multiprocess_values(self.folder.path)
        log.info("metrics of every worker go to %s", self.folder.path)

    def start_worker(self) -> None:
        """In each worker, after the fork: metrics that write to this worker's files."""
        if self.folder is None:
            return
        self.recorder = self.primed(Recorder(None, self.build, self.with_db))
        self.http = RequestFiles(self.folder.path)

    def worker_exited(self, pid: int) -> None:
        if self.folder is not None:
            mark_process_dead(pid, str(self.folder.path))  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        if self.folder is not None:
            self.folder.remove()

    def pool(self) -> Any:
        return self.state.db.pool if self.with_db else None

    # --- the scrape ----------------------------------------------------------------

    def exposition(self) -> bytes:
        if self.folder is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=str(self.folder.path))  # type: ignore[no-untyped-call]
        registry.register(RequestFilesCollector(self.folder.path))
        return generate_latest(registry)

    # --- runtime signals (sender: the app) -----------------------------------------

    def on_sqs_handled(self, sender: Flask, *, queue_name: str, elapsed: float | None = None,
                       **_: Any) -> None:
        self.sqs_outcome(queue_name, "handled", elapsed)

    def on_sqs_failed(self, sender: Flask, *, queue_name: str, elapsed: float | None = None,
                      **_: Any) -> None:
        self.sqs_outcome(queue_name, "failed", elapsed)

    def sqs_outcome(self, queue: str, outcome: str, elapsed: float | None) -> None:
        self.recorder.sqs_messages.labels(queue, outcome).inc()
        if elapsed is not None:
            self.recorder.sqs_duration.labels(queue, outcome).observe(elapsed)

    def on_peer_request(self, sender: Flask, *, service: str | None, status: int | None,
                        elapsed: float, **_: Any) -> None:
        name = "external" if service is None else service
        recorder = self.recorder
        recorder.peer_requests.labels(name, "error" if status is None else str(status)).inc()
        recorder.peer_duration.labels(name).observe(elapsed)


class CountRequests(InFlight):
    """The in-flight layer that also counts each request by method, URL rule and status.

    Flask's request hooks and its request proxy cost more per request than all
    the counting, so this runs around Flask, in the one WSGI layer ``serve()``
    needs anyway: it times the request from its arrival until Flask returns the
    response, and reads the matched rule from the request object werkzeug keeps
    in the environ while the response starts.
    """

    def __init__(self, wsgi_app: WSGIApplication, metrics: AppMetrics) -> None:
        super().__init__(wsgi_app)
        self.metrics = metrics
        self.pool: Callable[[], Any] | None = metrics.pool if metrics.with_db else None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.closing:  # shutting down: counted still, until the app is stopping
            if self.refusing:
                return self.call_while_closing(environ, start_response)
            start_response = asking_to_close(start_response)
        started = perf_counter()
        status_line = ""
        rule = None
        returned = False

        # The request path's one closure keeps the status and the matched rule
        # (Flask forgets its request object once it returns); the count waits
        # until then, unless the app starts its response late, as Flask never does.
        def keep_status(status: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status_line, rule
            status_line = status
            rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
            if returned:
                self.count_request(rule, environ, status, started)
            return start_response(status, headers, exc_info)

        body = self.counted(self.wsgi_app, environ, keep_status)
        returned = True
        if status_line:
            self.count_request(rule, environ, status_line, started)
        return body

    def count_request(self, rule: Rule | None, environ: WSGIEnvironment, status: str,
                      started: float) -> None:
        self.metrics.http.request(rule, environ["REQUEST_METHOD"], status, perf_counter() - started)
        if self.pool is not None:
            self.metrics.recorder.pool(self.pool())


class GnarMetrics(GnarExtension):
    """Prometheus metrics on ``GET /metrics``, added up over every worker.

    Settings (options in brackets): ``GNAR_METRICS`` (``enabled``, default true),
    ``GNAR_METRICS_PATH`` (``path``, default ``/metrics``), ``GNAR_METRICS_DIR``
    (``folder``: where each production run makes its multiprocess folder; default
    the system's temporary folder), ``GNAR_SERVICE_VERSION`` (``version``, for
    ``gnar_build_info``; default the installed distribution's version).
    """

    extension_name = "GnarMetrics"
    configured_signal = signals.metrics_configured
    options_accepted = frozenset({"enabled", "path", "folder", "version"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        enabled = settings.get("METRICS", parse_bool, explicit=self.option("enabled"), default=True)
        if not enabled:
            return {"path": None}
        path: str = settings.get("METRICS_PATH", parse_path, explicit=self.option("path"),
                                 default=DEFAULT_PATH)
        base: Path = settings.get("METRICS_DIR", parse_folder, explicit=self.option("folder"),
                                  default=default_folder())
        version: str = settings.get("SERVICE_VERSION", explicit=self.option("version"),
                                    default=service_version(state.name))
        build = {
            "service": state.name,
            "version": version,
            "flask_gnar_version": service_version("flask-gnar"),
            "python_version": platform.python_version(),
        }
        metrics = AppMetrics(state, base, build)
        self.register_hooks(app, state, metrics)
        self.connect_signals(app, metrics)

        def scrape() -> Response:
            return Response(metrics.exposition(), mimetype=None, content_type=CONTENT_TYPE)

        app.add_url_rule(path, METRICS_ENDPOINT, scrape, methods=["GET"])
        state.provide(metrics=metrics)
        return {"path": path}

    @staticmethod
    def register_hooks(app: Flask, state: GnarState, metrics: AppMetrics) -> None:
        app.wsgi_app = CountRequests(app.wsgi_app, metrics)  # type: ignore[method-assign]
        state.before_serving(metrics.before_serving)
        state.on_start(metrics.start_worker)
        state.on_worker_exit(metrics.worker_exited)
        state.on_stop(metrics.stop)
        state.after_serving(metrics.stop)

    @staticmethod
    def connect_signals(app: Flask, metrics: AppMetrics) -> None:
        # weak=False: blinker would drop bound methods of an object nothing else holds.
        signals.sqs_message_handled.connect(metrics.on_sqs_handled, sender=app, weak=False)
        signals.sqs_message_failed.connect(metrics.on_sqs_failed, sender=app, weak=False)
        signals.peer_request.connect(metrics.on_peer_request, sender=app, weak=False)
