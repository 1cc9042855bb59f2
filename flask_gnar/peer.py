"""GnarPeer: calls to the app's peer services (``gnar.peer``) and to any URL (``gnar.external``).

Every call goes through one pooled keep-alive :class:`requests.Session` per app
and thread, has a timeout, is retried with exponential backoff when the method
is idempotent, carries the request id, and is reported on
:data:`~flask_gnar.signals.peer_request`.
"""

from __future__ import annotations

import http.cookiejar
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests
from flask import Flask, current_app, has_request_context
from flask_jwt_extended import create_access_token, get_jwt, get_jwt_identity
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.util.retry import Retry

from . import signals
from .config import (
    Settings,
    int_between,
    parse_port,
    parse_positive_seconds,
    parse_seconds,
)
from .context import (
    REQUEST_ID_HEADER,
    current_request_id,
    install_context_filter,
    new_request_id,
)
from .exceptions import ConfigError, PeerNotFound, PeerTimeout, PeerUnavailable
from .extension import GnarExtension
from .state import GnarState, get_state

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_SECONDS = 0.1
#: urllib3 sleeps backoff x 2**(tries - 1) as a float, which overflows past 2**1023.
MAX_RETRIES = 1000

parse_retries_int = int_between(0, MAX_RETRIES, limit="urllib3's back-off overflows past it")

_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]@]+):(?P<port>\d{1,5})/?")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


# --- where a peer lives -------------------------------------------------------------


def service_stem(service: str) -> str:
    """Kubernetes' variable stem for a service: ``user-service`` -> ``USER_SERVICE``."""
    return re.sub(r"[^A-Z0-9]", "_", service.upper())


def url_from_address(value: str) -> str | None:
    """``ip:port``, ``http(s)://ip:port`` or ``tcp://ip:port`` as a base URL; else ``None``.

    ``http`` and ``https`` are kept; any other scheme (Kubernetes' ``tcp``) becomes ``http``.
    """
    value = value.strip()
    scheme = "http"
    found = _SCHEME.match(value)
    if found:
        if found["scheme"].lower() == "https":
            scheme = "https"
        value = value[found.end():]
    address = _ADDRESS.fullmatch(value)
    if address is None:
        return None
    return f"{scheme}://{address['host']}:{address['port']}"


def http_url(source: str, value: Any) -> str:
    """An explicit peer URL, checked: ``http(s)://host[:port][/prefix]``."""
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme in ("http", "https") and parts.netloc:
            port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
            if port:
                checked_port(source, port, value)
            return value.strip().rstrip("/")
    raise ConfigError(source, f"expected an http:// or https:// URL, got {value!r}")


def checked_port(source: str, port: str, value: str | None = None) -> str:
    """``port`` if it is a TCP port (1 to 65535), else a ConfigError naming ``source``."""
    try:
        parse_port(port)
    except ValueError as error:
        where = f" (in {value!r})" if value else ""
        raise ConfigError(source, f"{error}{where}") from None
    return port


def bracket_ipv6(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class PeerDirectory:
    """Finds a peer's base URL; first found wins (see ``find``)."""

    def __init__(self, settings: Settings, production: bool, peers: Mapping[str, str]) -> None:
        self.settings = settings
        self.production = production
        self.peers = {
            service_stem(name): http_url(f"peers[{name!r}]", url) for name, url in peers.items()
        }

    def find(self, service: str) -> str:
        """The explicit URL (``peers`` option, ``<PREFIX>_PEER_<SERVICE>_URL``), the seed's
        ``ip:port`` variable, then Kubernetes' ``<SERVICE>_SERVICE_HOST``/``_SERVICE_PORT``
        and ``<SERVICE>_PORT=tcp://ip:port``."""
        stem = service_stem(service)
        tried: list[str] = []
        notes: list[str] = []
        url = (
            self.explicit_url(service, stem, tried)
            or self.seed_url(stem, tried, notes)
            or kubernetes_url(stem, tried, notes)
        )
        if url is None:
            key = self.settings.env_name(f"PEER_{stem}_URL")
            raise PeerNotFound(service, tried, notes, key=key)
        return url

    def explicit_url(self, service: str, stem: str, tried: list[str]) -> str | None:
        tried.append(f"the peers option ({service!r})")
        if stem in self.peers:
            return self.peers[stem]
        return self.setting_url(f"PEER_{stem}_URL", tried, http_url)

    def seed_url(self, stem: str, tried: list[str], notes: list[str]) -> str | None:
        """The seed's ``<SERVICE>_SERVICE_PORT`` (production) or prefixed (development)."""
        variable = f"{stem}_SERVICE_PORT"
        if self.production:
            tried.append(variable)
            value = os.environ.get(variable)
            return seed_address(variable, value, notes) if value else None

        def parse(source: str, raw: Any) -> str | None:
            return seed_address(source, str(raw), notes)

        return self.setting_url(variable, tried, parse)

    def setting_url(
        self, setting: str, tried: list[str], parse: Callable[[str, Any], str | None]
    ) -> str | None:
        tried.append(f"{self.settings.env_name(setting)} (or app.config['GNAR_{setting}'])")
        found = self.settings.find(setting)
        if found is None or not str(found[1]).strip():
            return None
        source, raw = found
        return parse(source, raw)


def seed_address(source: str, value: str, notes: list[str]) -> str | None:
    """The seed's ``ip:port`` value; a bare port is Kubernetes' form (left to the next step)."""
    if value.strip().isdigit():
        notes.append(f"{source} holds only a port ({value.strip()})")
        return None
    url = url_from_address(value)
    if url is None:
        raise ConfigError(source, f"expected ip:port such as 127.0.0.1:9401, got {value!r}")
    checked_port(source, url.rpartition(":")[2], value)
    return url


def kubernetes_url(stem: str, tried: list[str], notes: list[str]) -> str | None:
    """``<SERVICE>_SERVICE_HOST`` + ``<SERVICE>_SERVICE_PORT``, else ``<SERVICE>_PORT=tcp://...``."""
    host_variable, port_variable = f"{stem}_SERVICE_HOST", f"{stem}_SERVICE_PORT"
    tried.append(f"{host_variable} with {port_variable}")
    host, port = os.environ.get(host_variable, "").strip(), os.environ.get(port_variable, "").strip()
    if host and port:
        if not port.isdigit():
            raise ConfigError(port_variable, f"expected a port number, got {port!r}")
        return f"http://{bracket_ipv6(host)}:{checked_port(port_variable, port)}"
    if host:
        notes.append(f"{host_variable} is set but {port_variable} is not")
    link_variable = f"{stem}_PORT"
    tried.append(f"{link_variable}=tcp://ip:port")
    link = os.environ.get(link_variable, "").strip()
    if link.startswith("tcp://"):
        url = url_from_address(link)
        if url is None:
            raise ConfigError(link_variable, f"expected tcp://ip:port, got {link!r}")
        checked_port(link_variable, url.rpartition(":")[2], link)
        return url
    if link:
        notes.append(f"{link_variable}={link!r} is not tcp://ip:port")
    return None


# --- the client -----------------------------------------------------------------------


class IdempotentRetry(Retry):
    """urllib3's Retry, except that a non-idempotent method is never retried (urllib3
    retries a refused connection for every method) and a read timeout never is (a slow
    peer stays slow; the caller waits one timeout, not several)."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if error is not None and (
            isinstance(error, ReadTimeoutError) or (method or "").upper() not in IDEMPOTENT_METHODS
        ):
            if self._is_connection_error(error):
                raise MaxRetryError(_pool, url or "", error) from error  # type: ignore[arg-type]
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


class RejectAllCookies(http.cookiejar.DefaultCookiePolicy):
    """A shared session must not carry one user's cookies into another user's call."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def reason_of(error: requests.RequestException) -> str:
    """The innermost cause in a few words (``Connection refused``, ``Read timed out``)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, MaxRetryError) and cause.reason is not None:
            cause = cause.reason
            continue
        inner = [arg for arg in cause.args if isinstance(arg, BaseException)]
        if not inner:
            break
        cause = inner[0]
    if isinstance(cause, ReadTimeoutError):
        return "no answer in time"
    text = str(cause)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        return found.group(1).strip()
    return text.split("): ", 1)[-1] or type(cause).__name__


def send_runtime_signal(app: Flask, **kwargs: Any) -> None:
    """A receiver that raises is logged, never lets the call fail."""
    try:
        signals.peer_request.send(app, **kwargs)
    except Exception:
        log.exception("a peer_request receiver failed")


class ThreadSession:
    """One thread's session, closed when the thread ends or the app goes away."""

    def __init__(self, session: requests.Session) -> None:
        self.session = session
        self.pid = os.getpid()
        weakref.finalize(self, session.close)


class PeerClient:
    """The app's HTTP client: one pooled session per thread, timeouts, retries."""

    def __init__(
        self,
        app: Flask,
        directory: PeerDirectory,
        timeout: float,
        external_timeout: float,
        retries: int,
        backoff: float,
    ) -> None:
        self.app = app
        self.directory = directory
        self.timeout = timeout
        self.external_timeout = external_timeout
        self.retry = IdempotentRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            redirect=None,
            backoff_factor=backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=IDEMPOTENT_METHODS,
            raise_on_status=False,
        )
        self.external = External(self)
        self._local = threading.local()
        self._sessions: weakref.WeakSet[requests.Session] = weakref.WeakSet()
        self._lock = threading.Lock()

    def peer(self, service: str) -> Peer:
        """The peer service ``service`` (see :class:`PeerDirectory` for how it is found)."""
        return Peer(self, service, self.directory.find(service))

    def session(self, external: bool = False) -> requests.Session:
        """This thread's session for peers, or for ``gnar.external`` (a new one in a
        forked child: sockets are not shared)."""
        name = "external" if external else "peers"
        holder: ThreadSession | None = getattr(self._local, name, None)
        if holder is None or holder.pid != os.getpid():
            holder = ThreadSession(self.new_session(external))
            setattr(self._local, name, holder)
        return holder.session

    def new_session(self, external: bool = False) -> requests.Session:
        """Peer calls stay in the cluster: their session skips requests' per-call look-ups
        of proxy variables and ``.netrc`` (a third of a call's client time), keeping only
        the CA bundle variables; ``gnar.external`` calls honour them all."""
        session = requests.Session()
        if not external:
            session.trust_env = False
            session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        session.cookies.set_policy(RejectAllCookies())
        adapter = HTTPAdapter(max_retries=self.retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with self._lock:
            self._sessions.add(session)
        return session

    def close(self) -> None:
        """Close every thread's pooled connections."""
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()

    def send(
        self, service: str | None, method: str, url: str, timeout: float, kwargs: dict[str, Any]
    ) -> requests.Response:
        """One call; connection failures become :class:`PeerUnavailable` / :class:`PeerTimeout`."""
        method = method.upper()
        kwargs.setdefault("timeout", timeout)
        status: int | None = None
        started = time.perf_counter()
        try:
            response = self.session(service is None).request(method, url, **kwargs)
            status = response.status_code
            return response
        except requests.Timeout as error:
            raise self.unavailable(PeerTimeout, service, method, url, error, kwargs) from error
        except requests.ConnectionError as error:
            raise self.unavailable(PeerUnavailable, service, method, url, error, kwargs) from error
        finally:
            send_runtime_signal(
                self.app, service=service, method=method, url=url, status=status,
                elapsed=time.perf_counter() - started,
            )

    @staticmethod
    def unavailable(
        kind: type[PeerUnavailable],
        service: str | None,
        method: str,
        url: str,
        error: requests.RequestException,
        kwargs: dict[str, Any],
    ) -> PeerUnavailable:
        failure = kind(service, method, url, reason_of(error), kwargs["timeout"])
        log.warning("%s", failure.description)
        return failure


def bearer_for_current_identity() -> str | None:
    """A fresh access token for the identity of the request's verified JWT, if any.

    With GnarJWT on the app, its ``fresh_token`` keeps non-string identities and
    custom claims; otherwise a plain flask-jwt-extended token for the subject.
    """
    if not has_request_context():
        return None
    try:
        claims = get_jwt()
    except RuntimeError:  # no JWT was verified in this request
        return None
    if not claims:
        return None
    fresh_token = getattr(get_state(current_app), "fresh_token", None)
    if fresh_token is not None:
        return f"Bearer {fresh_token(claims)}"
    return f"Bearer {create_access_token(identity=get_jwt_identity())}"


class Peer:
    """A peer service: the seed's ``request``/``head``/``get``/... with paths, not URLs.

    Every method accepts the keyword arguments of :func:`requests.request` and
    ``auto_auth``: when true and the current request carries a verified JWT, the
    call sends a fresh token for the same identity. Returns a :class:`requests.Response`.
    """

    def __init__(self, client: PeerClient, service: str, url: str) -> None:
        self.client = client
        self.service = service
        self.url = url

    def __repr__(self) -> str:
        return f"<Peer {self.service!r} at {self.url}>"

    def url_for(self, path: str) -> str:
        return f"{self.url}/{path.lstrip('/')}"

    def request(
        self, method: str, path: str, *, auto_auth: bool = False, **kwargs: Any
    ) -> requests.Response:
        headers = {REQUEST_ID_HEADER: current_request_id() or new_request_id()}
        bearer = bearer_for_current_identity() if auto_auth else None
        if bearer:
            headers["Authorization"] = bearer
        kwargs["headers"] = {**headers, **(kwargs.get("headers") or {})}
        url = self.url_for(path)
        tracing = get_state(self.client.app).tracing
        if tracing is not None:
            return tracing.peer_call(
                self.service, method, url, kwargs["headers"],
                lambda: self.client.send(self.service, method, url, self.client.timeout, kwargs),
            )
        return self.client.send(self.service, method, url, self.client.timeout, kwargs)

    def head(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("allow_redirects", False)
        return self.request("HEAD", path, **kwargs)

    def get(self, path: str, params: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, params=params, **kwargs)

    def post(self, path: str, data: Any = None, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, data=data, json=json, **kwargs)

    def put(self, path: str, data: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, data=data, **kwargs)

    def patch(self, path: str, data: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, data=data, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)


class External:
    """``requests``' functions for any URL, with the app's pool, timeout and retries.

    No ``auto_auth`` and no request id: neither tokens nor internal ids leave the cluster.
    """

    def __init__(self, client: PeerClient) -> None:
        self.client = client

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        return self.client.send(None, method, url, self.client.external_timeout, kwargs)

    def head(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("allow_redirects", False)
        return self.request("HEAD", url, **kwargs)

    def get(self, url: str, params: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, params=params, **kwargs)

    def options(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("OPTIONS", url, **kwargs)

    def post(self, url: str, data: Any = None, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, data=data, json=json, **kwargs)

    def put(self, url: str, data: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("PUT", url, data=data, **kwargs)

    def patch(self, url: str, data: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", url, data=data, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", url, **kwargs)


# --- the extension --------------------------------------------------------------------


class GnarPeer(GnarExtension):
    """``gnar.peer(service)`` and ``gnar.external``, plus request ids in and out.

    Options (each wins over its setting): ``peers`` (a mapping service -> base
    URL), ``timeout`` (``PEER_TIMEOUT_SECONDS``), ``external_timeout``
    (``EXTERNAL_TIMEOUT_SECONDS``), ``retries`` (``PEER_RETRIES``), ``backoff``
    (``PEER_BACKOFF_SECONDS``).
    """

    extension_name = "GnarPeer"
    configured_signal = signals.peer_configured
    options_accepted = frozenset({"peers", "timeout", "external_timeout", "retries", "backoff"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        timeout = settings.get(
            "PEER_TIMEOUT_SECONDS", parse_positive_seconds, explicit=self.option("timeout"),
            default=DEFAULT_TIMEOUT_SECONDS,
        )
        client = PeerClient(
            app,
            PeerDirectory(settings, state.production, self.option("peers") or {}),
            timeout=timeout,
            external_timeout=settings.get(
                "EXTERNAL_TIMEOUT_SECONDS", parse_positive_seconds,
                explicit=self.option("external_timeout"), default=timeout,
            ),
            retries=settings.get(
                "PEER_RETRIES", parse_retries_int, explicit=self.option("retries"),
                default=DEFAULT_RETRIES,
            ),
            backoff=settings.get(
                "PEER_BACKOFF_SECONDS", parse_seconds, explicit=self.option("backoff"),
                default=DEFAULT_BACKOFF_SECONDS,
            ),
        )
        install_context_filter()
        state.on_stop(client.close)
        state.provide(peer=client.peer, external=client.external)
        return {"timeout": timeout, "retries": client.retry.total}
