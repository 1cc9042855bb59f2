"""boto3 clients for GnarSQS and GnarSES.

Each service ``X`` (``SQS``, ``SES``) reads, through the usual resolver:

``<PREFIX>_X_REGION_NAME``, ``<PREFIX>_X_ACCESS_KEY_ID``, ``<PREFIX>_X_SECRET_ACCESS_KEY``
    the seed's variables; when unset, boto3's own configuration applies
    (``AWS_DEFAULT_REGION``, the credentials chain, ``~/.aws/config``).
``<PREFIX>_X_ENDPOINT_URL``
    an explicit endpoint for a local stand-in; when unset, boto3's own
    ``AWS_ENDPOINT_URL_SQS`` / ``AWS_ENDPOINT_URL`` (or none, the real AWS).

Clients are created in the process that uses them, never at import, and the
secret key never appears in a log line, an error or a ``repr``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3

from .config import Settings, parse_str
from .exceptions import ConfigError

log = logging.getLogger(__name__)


def parse_endpoint_url(value: Any) -> str:
    url = parse_str(value).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    return url


@dataclass(frozen=True)
class AWSClientSettings:
    """What flask-gnar passes to boto3 for one service (``None``: boto3 decides)."""

    service: str
    region_name: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    #: The setting that names the region, for error messages.
    region_setting: str = ""

    def describe(self) -> str:
        """A log-safe summary: never the secret, never the key id."""
        region = self.region_name or "boto3 default"
        endpoint = self.endpoint_url or "boto3 default"
        credentials = "explicit key" if self.access_key_id else "boto3 credentials chain"
        return f"{self.service}: region {region}, endpoint {endpoint}, {credentials}"


def resolve_client_settings(
    settings: Settings,
    service: str,
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
) -> AWSClientSettings:
    """Read ``<PREFIX>_<SERVICE>_*``; a key id without its secret (or the reverse) is an error."""
    upper = service.upper()
    access_key_id: str | None = settings.get(f"{upper}_ACCESS_KEY_ID", secret=True)
    secret_access_key: str | None = settings.get(f"{upper}_SECRET_ACCESS_KEY", secret=True)
    if bool(access_key_id) != bool(secret_access_key):
        present, missing = (
            ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")
            if access_key_id
            else ("SECRET_ACCESS_KEY", "ACCESS_KEY_ID")
        )
        raise ConfigError(
            settings.env_name(f"{upper}_{missing}"),
            f"is required when {settings.env_name(f'{upper}_{present}')} is set "
            "(or unset both to use boto3's credentials chain)",
        )
    return AWSClientSettings(
        service=service,
        region_name=settings.get(f"{upper}_REGION_NAME", explicit=region_name) or None,
        endpoint_url=settings.get(
            f"{upper}_ENDPOINT_URL", parse_endpoint_url, explicit=endpoint_url
        ),
        access_key_id=access_key_id or None,
        secret_access_key=secret_access_key or None,
        region_setting=settings.env_name(f"{upper}_REGION_NAME"),
    )


class ClientFactory:
    """Creates boto3 clients for one service of one app.

    boto3 sessions are not thread-safe, so each process gets its own session and
    client creation is serialised; the clients themselves are thread-safe.
    """

    def __init__(self, client_settings: AWSClientSettings) -> None:
        self.settings = client_settings
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._session_pid: int | None = None

    def __repr__(self) -> str:
        return f"<ClientFactory {self.settings.describe()}>"

    def _current_session(self) -> boto3.session.Session:
        if self._session is None or self._session_pid != os.getpid():
            self._session = boto3.session.Session()
            self._session_pid = os.getpid()
        return self._session

    def region(self) -> str:
        """The region the clients will use; a clear error when none is configured."""
        with self._lock:
            region = self.settings.region_name or self._current_session().region_name
        if not region:
            raise ConfigError(
                self.settings.region_setting,
                "no AWS region is configured: set it or boto3's AWS_DEFAULT_REGION",
            )
        return str(region)

    def new_client(self, **client_options: Any) -> Any:
        """A new boto3 client (``client_options`` go to :meth:`boto3.session.Session.client`)."""
        region = self.region()
        with self._lock:
            return self._current_session().client(
                self.settings.service,
                region_name=region,
                endpoint_url=self.settings.endpoint_url,
                aws_access_key_id=self.settings.access_key_id,
                aws_secret_access_key=self.settings.secret_access_key,
                **client_options,
            )


class SharedClient:
    """One lazily created client per process (a forked child makes its own)."""

    def __init__(self, factory: ClientFactory) -> None:
        self.factory = factory
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid: int | None = None

    def get(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self.factory.new_client()
                self._pid = os.getpid()
                log.debug("created the %s", self.factory.settings.describe())
            return self._client
