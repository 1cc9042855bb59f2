"""Fixtures shared by the AWS tests (test_sqs, test_ses, test_aws): import them by name."""

from __future__ import annotations

from typing import Any

import pytest

from flask_gnar.testing import LocalAWS


@pytest.fixture
def aws(gnar_aws: LocalAWS, monkeypatch: pytest.MonkeyPatch) -> LocalAWS:
    """The session's moto server, reached through boto3's own environment variables."""
    for key, value in gnar_aws.env.items():
        monkeypatch.setenv(key, value)
    return gnar_aws


def queue_count(sqs: Any, url: str) -> int:
    """Messages still on the queue, visible or in flight."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
