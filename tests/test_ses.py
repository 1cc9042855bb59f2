"""GnarSES against moto in server mode: clients, send_email, settings."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from flask import Flask

from flask_gnar import ConfigError, GnarSES, GnarSQS, NotInitialisedError, create_app, get_state
from flask_gnar.testing import LocalAWS

from aws_support import aws  # noqa: F401 (fixture)

SENDER = "patrol@gnar.example"


@pytest.fixture
def ses(aws: LocalAWS) -> Any:
    """A plain boto3 client with a verified sender: what a user would check with."""
    client = boto3.client("ses")
    client.verify_email_identity(EmailAddress=SENDER)
    return client


def sent_count(ses: Any) -> int:
    return int(ses.get_send_quota()["SentLast24Hours"])


def ses_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    GnarSES(app)
    return app


def test_send_email_goes_through_ses(ses):
    app = ses_app(GNAR_SES_SENDER=SENDER)
    before = sent_count(ses)

    with app.app_context():
        response = get_state(app).send_email("rider@gnar.example", "Fresh snow", "30cm overnight")

    assert response["MessageId"]
    assert sent_count(ses) == before + 1


def test_send_email_to_several_recipients_with_an_explicit_sender(ses):
    other = "lifts@gnar.example"
    ses.verify_email_identity(EmailAddress=other)
    app = ses_app()
    before = sent_count(ses)

    with app.app_context():
        get_state(app).send_email(
            ["a@gnar.example", "b@gnar.example"], "Lifts", "open", sender=other, html="<b>open</b>"
        )

    assert sent_count(ses) == before + 2


def test_send_email_from_an_unverified_sender_is_rejected_by_ses(ses):
    app = ses_app(GNAR_SES_SENDER="stranger@elsewhere.example")
    with app.app_context(), pytest.raises(ClientError, match="MessageRejected"):
        get_state(app).send_email("rider@gnar.example", "Hi", "there")


def test_send_email_without_any_sender_names_the_setting(aws):
    app = ses_app()
    with app.app_context(), pytest.raises(ConfigError, match="GNAR_SES_SENDER: is required"):
        get_state(app).send_email("rider@gnar.example", "Hi", "there")


def test_get_ses_client_returns_a_new_working_client_per_call(ses):
    app = ses_app()
    state = get_state(app)
    first, second = state.get_ses_client(), state.get_ses_client()

    assert first is not second
    assert SENDER in first.list_identities()["Identities"]


def test_seed_variables_and_explicit_endpoint_are_used(gnar_aws, monkeypatch):
    """Only the seed's GNAR_SES_* variables plus the explicit endpoint: no AWS_* at all."""
    monkeypatch.setenv("GNAR_SES_REGION_NAME", "eu-west-1")
    monkeypatch.setenv("GNAR_SES_ACCESS_KEY_ID", "seed-key")
    monkeypatch.setenv("GNAR_SES_SECRET_ACCESS_KEY", "seed-secret")
    monkeypatch.setenv("GNAR_SES_ENDPOINT_URL", gnar_aws.endpoint_url)
    app = ses_app()

    client = get_state(app).get_ses_client()
    client.verify_email_identity(EmailAddress=SENDER)

    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == gnar_aws.endpoint_url
    # moto keeps identities per region: the one verified above lives in eu-west-1.
    direct = boto3.client(
        "ses",
        region_name="eu-west-1",
        endpoint_url=gnar_aws.endpoint_url,
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    assert SENDER in direct.list_identities()["Identities"]


def test_create_app_provides_ses_assets(aws):
    app = create_app("snowy", no_db=True, no_jwt=True, config={"GNAR_SES_SENDER": SENDER})
    state = get_state(app)
    assert callable(state.get_ses_client)
    assert callable(state.send_email)


def test_send_email_needs_gnar_ses():
    app = Flask(__name__)
    GnarSQS(app)
    with pytest.raises(NotInitialisedError, match="gnar.send_email needs GnarSES"):
        get_state(app).send_email
