"""GnarSES: SES clients (``gnar.get_ses_client()``) and a small ``gnar.send_email``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flask import Flask

from . import signals
from .aws import ClientFactory, resolve_client_settings
from .config import Settings
from .exceptions import ConfigError
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)

CHARSET = "UTF-8"


def text_part(text: str) -> dict[str, str]:
    return {"Data": text, "Charset": CHARSET}


class SESMailer:
    """Per-app SES access: a new client per call, as the seed did."""

    def __init__(self, factory: ClientFactory, sender: str | None, sender_setting: str) -> None:
        self.factory = factory
        self.sender = sender
        self.sender_setting = sender_setting

    def __repr__(self) -> str:
        return f"<SESMailer {self.factory.settings.describe()}>"

    def get_ses_client(self) -> Any:
        """A new boto3 SES client (AWS closes idle ones, so none is kept)."""
        return self.factory.new_client()

    def send_email(
        self,
        to: str | Sequence[str],
        subject: str,
        body: str,
        sender: str | None = None,
        *,
        html: str | None = None,
        reply_to: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Send a text email (plus an optional ``html`` part); the SendEmail response.

        ``sender`` defaults to the ``SES_SENDER`` setting (``GNAR_SES_SENDER``).
        """
        source = sender or self.sender
        if not source:
            raise ConfigError(
                self.sender_setting, "is required to send email without a sender= argument"
            )
        recipients = [to] if isinstance(to, str) else list(to)
        if not recipients:
            raise ValueError("send_email needs at least one recipient in to=")
        message_body = {"Text": text_part(body)}
        if html is not None:
            message_body["Html"] = text_part(html)
        extra = {"ReplyToAddresses": list(reply_to)} if reply_to else {}
        response = self.get_ses_client().send_email(
            Source=source,
            Destination={"ToAddresses": recipients},
            Message={"Subject": text_part(subject), "Body": message_body},
            **extra,
        )
        log.info("sent email %s to %d recipient(s)", response.get("MessageId"), len(recipients))
        return dict(response)


class GnarSES(GnarExtension):
    """SES for the app: ``gnar.get_ses_client()`` and ``gnar.send_email(...)``.

    Options: ``endpoint_url`` (``GNAR_SES_ENDPOINT_URL``) for a local stand-in,
    ``sender`` (``GNAR_SES_SENDER``), the default ``From`` of :meth:`SESMailer.send_email`.
    """

    extension_name = "GnarSES"
    configured_signal = signals.ses_configured
    options_accepted = frozenset({"endpoint_url", "sender"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> None:
        client_settings = resolve_client_settings(
            settings, "ses", endpoint_url=self.option("endpoint_url")
        )
        mailer = SESMailer(
            ClientFactory(client_settings),
            settings.get("SES_SENDER", explicit=self.option("sender")),
            settings.env_name("SES_SENDER"),
        )
        state.provide(get_ses_client=mailer.get_ses_client, send_email=mailer.send_email)
        log.debug("SES configured (%s)", client_settings.describe())
