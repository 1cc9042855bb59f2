"""The shared AWS client settings: seed variables, boto3's own configuration, explicit endpoints."""

from __future__ import annotations

import logging
from typing import Any

import boto3
import pytest
from flask import Flask

from flask_gnar import ConfigError, GnarSQS, create_app, get_state
from flask_gnar.testing import LocalAWS, free_port

SECRET = "s3cr3t-do-not-log"


def sqs_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    GnarSQS(app)
    return app


def moto_queue(aws: LocalAWS, name: str) -> str:
    client = boto3.client(
        "sqs",
        endpoint_url=aws.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    return str(client.create_queue(QueueName=name)["QueueUrl"])


def send_through(app: Flask, queue_name: str) -> dict[str, Any]:
    with app.app_context():
        return get_state(app).send_sqs_message(queue_name, "hello")


def test_explicit_endpoint_wins_over_boto3_endpoint(gnar_aws, monkeypatch):
    moto_queue(gnar_aws, "explicit")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("GNAR_SQS_ENDPOINT_URL", gnar_aws.endpoint_url)
    monkeypatch.setenv("GNAR_SQS_REGION_NAME", "us-east-1")
    monkeypatch.setenv("GNAR_SQS_ACCESS_KEY_ID", "seed-key")
    monkeypatch.setenv("GNAR_SQS_SECRET_ACCESS_KEY", SECRET)

    assert send_through(sqs_app(), "explicit")["MessageId"]


def test_boto3_service_endpoint_and_default_region_are_honoured(gnar_aws, monkeypatch):
    moto_queue(gnar_aws, "boto3-own")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", gnar_aws.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    app = sqs_app()
    assert send_through(app, "boto3-own")["MessageId"]
    assert get_state(app).sqs.client.meta.region_name == "us-east-1"


def test_env_prefix_applies_to_aws_settings(gnar_aws, monkeypatch):
    monkeypatch.setenv("MY_APP_SQS_ENDPOINT_URL", gnar_aws.endpoint_url)
    monkeypatch.setenv("MY_APP_SQS_REGION_NAME", "ap-southeast-2")
    monkeypatch.setenv("MY_APP_SQS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("MY_APP_SQS_SECRET_ACCESS_KEY", SECRET)
    app = create_app("snowy", no_db=True, no_jwt=True, env_prefix="MY_APP")
    client = get_state(app).sqs.client
    assert client.meta.region_name == "ap-southeast-2"
    assert client.meta.endpoint_url == gnar_aws.endpoint_url


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GNAR_SQS_ACCESS_KEY_ID": "k"}, "GNAR_SQS_SECRET_ACCESS_KEY: is required when GNAR_SQS_ACCESS_KEY_ID"),
        ({"GNAR_SES_SECRET_ACCESS_KEY": SECRET}, "GNAR_SES_ACCESS_KEY_ID: is required when GNAR_SES_SECRET_ACCESS_KEY"),
        ({"GNAR_SQS_ENDPOINT_URL": "localhost:4566"}, "GNAR_SQS_ENDPOINT_URL: expected an http:// or https:// URL"),
    ],
)
def test_bad_aws_settings_stop_start_up(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        create_app("snowy", no_db=True, no_jwt=True)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_secret_is_never_logged_or_shown(gnar_aws, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    moto_queue(gnar_aws, "secret")
    monkeypatch.setenv("GNAR_SQS_ENDPOINT_URL", gnar_aws.endpoint_url)
    monkeypatch.setenv("GNAR_SQS_REGION_NAME", "us-east-1")
    monkeypatch.setenv("GNAR_SQS_ACCESS_KEY_ID", "seed-key")
    monkeypatch.setenv("GNAR_SQS_SECRET_ACCESS_KEY", SECRET)
    app = create_app(
        "snowy", no_db=True, no_jwt=True, sqs={"queue_name": "secret", "callback": print}
    )
    caplog.set_level(logging.DEBUG)  # GnarLogging set the root logger to INFO
    send_through(app, "secret")
    queues = get_state(app).sqs

    assert "botocore" in caplog.text  # boto3's debug output was captured too
    assert "explicit key" in caplog.text  # the client settings were logged...
    assert SECRET not in caplog.text  # ...without the secret
    assert SECRET not in repr(queues.client_factory)
    assert SECRET not in repr(queues.client_factory.settings)
