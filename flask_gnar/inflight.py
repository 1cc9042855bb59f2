"""The WSGI layer that knows which responses are still being sent.

``serve()`` needs it to shut down without cutting a response short, and GnarMetrics
counts requests in the same layer (:class:`flask_gnar.metrics.CountRequests` extends
it): each layer a request passes costs it a Python call, so the app has at most one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.wsgi import ClosingIterator

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class InFlight:
    """WSGI middleware counting requests whose response is not yet fully sent.

    bjoern calls one request at a time per process, so the count needs no lock.
    The count drops when the server closes the response iterable, after the last
    byte is written. While the worker shuts down, every response asks the client to
    close its connection (``closing``), and at the end requests are answered ``503``
    without reaching the app (``refusing``), which is stopping by then.
    """

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app
        self.count = 0
        self.closing = False
        self.refusing = False

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.closing:
            return self.call_while_closing(environ, start_response)
        return self.counted(self.wsgi_app, environ, start_response)

    def counted(
        self, wsgi_app: WSGIApplication, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        self.count += 1
        try:
            body = wsgi_app(environ, start_response)
        except BaseException:
            self.done()
            raise
        return self.until_closed(body)

    def until_closed(self, body: Iterable[bytes]) -> Iterable[bytes]:
        """``body``, whose closing drops the count."""
        # Flask answers with a werkzeug ClosingIterator: adding our callback to it
        # costs nothing, while wrapping it in another iterator cost ~4% of throughput.
        callbacks = getattr(body, "_callbacks", None)
        if type(body) is ClosingIterator and type(callbacks) is list:
            callbacks.append(self.done)
            return body
        return ClosingIterator(body, self.done)

    def call_while_closing(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        wsgi_app = answer_shutting_down if self.refusing else self.wsgi_app
        return self.counted(wsgi_app, environ, asking_to_close(start_response))

    def done(self) -> None:
        self.count -= 1


def asking_to_close(start_response: StartResponse) -> StartResponse:
    """``start_response`` that adds ``Connection: close`` to every response."""

    def start_closing_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        kept = [(key, value) for key, value in headers if key.lower() != "connection"]
        return start_response(status, [*kept, ("Connection", "close")], exc_info)

    return start_closing_response


def serving_layer(wsgi_app: WSGIApplication) -> InFlight:
    """The app's own in-flight layer when it has one (GnarMetrics'), else a new one."""
    return wsgi_app if isinstance(wsgi_app, InFlight) else InFlight(wsgi_app)


SHUTTING_DOWN_BODY = b'{"error": "The service is shutting down; try again."}\n'


def answer_shutting_down(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """A request that arrives once the app is stopping: 503, and the connection closes."""
    start_response("503 Service Unavailable", [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(SHUTTING_DOWN_BODY))),
        ("Retry-After", "1"),
    ])
    return [SHUTTING_DOWN_BODY]
