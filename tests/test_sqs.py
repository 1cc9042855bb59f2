"""GnarSQS against moto in server mode: pollers, callbacks, deletion, stopping, send_sqs_message."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from itertools import islice
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from flask import Flask, current_app, has_app_context, has_request_context

from flask_gnar import ConfigError, GnarSQS, create_app, get_state, signals
from flask_gnar.sqs import Backoff, SQSQueues
from flask_gnar.testing import LocalAWS, free_port, start_local_aws, stop_local_aws

from aws_support import aws, queue_count  # noqa: F401 (fixture)
from helpers import start_process, stop, wait_for_http, wait_until

DEADLINE = 15.0


class Inbox:
    """A callback that records what it got and the context it ran in."""

    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.contexts: list[tuple[bool, bool, Flask | None]] = []
        self.result = result
        self.error = error
        self.lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> Any:
        with self.lock:
            self.messages.append(message)
            self.contexts.append(
                (has_app_context(), has_request_context(), current_app._get_current_object())
            )
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def bodies(self) -> list[str]:
        with self.lock:
            return [message["Body"] for message in self.messages]


class SlowCallback:
    """A callback that blocks on the first call until the test lets it go."""

    def __init__(self) -> None:
        self.started, self.proceed = threading.Event(), threading.Event()
        self.bodies: list[str] = []

    def __call__(self, message: dict[str, Any]) -> None:
        self.bodies.append(message["Body"])
        self.started.set()
        self.proceed.wait(DEADLINE)


class Recorder:
    """Connects to a runtime signal for one app and records its keyword arguments."""

    def __init__(self, signal: Any, app: Flask) -> None:
        self.calls: list[dict[str, Any]] = []
        signal.connect(self.receive, sender=app, weak=False)
        self.signal = signal
        self.app = app

    def receive(self, sender: Flask, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    def disconnect(self) -> None:
        self.signal.disconnect(self.receive, sender=self.app)


@pytest.fixture
def sqs(aws: LocalAWS) -> Any:
    """A plain boto3 client: what a user would check the queue with."""
    return boto3.client("sqs")


@pytest.fixture
def new_queue(sqs: Any) -> Callable[..., tuple[str, str]]:
    """Create a queue with a unique name; returns (name, url)."""

    def create(**attributes: str) -> tuple[str, str]:
        name = f"gnar-{uuid.uuid4().hex[:10]}"
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return name, url

    return create


@pytest.fixture
def serving() -> Iterator[Callable[..., tuple[Flask, SQSQueues]]]:
    """Build a bare Flask app with GnarSQS, start its pollers as serve() would, stop them after."""
    apps: list[Flask] = []

    def build(queues: Any, **config: Any) -> tuple[Flask, SQSQueues]:
        app = Flask(f"sqs_test_{len(apps)}")
        app.config.update(config)
        GnarSQS(app, queues=queues)
        apps.append(app)
        state = get_state(app)
        state.start()
        return app, state.sqs

    yield build
    for app in apps:
        get_state(app).stop()


def test_message_reaches_callback_in_app_context_and_is_deleted(sqs, new_queue, serving):
    name, url = new_queue()
    inbox = Inbox()
    app, queues = serving({"queue_name": name, "callback": inbox})
    handled = Recorder(signals.sqs_message_handled, app)

    with app.app_context():
        response = get_state(app).send_sqs_message(name, "powder day")
    assert response["MessageId"]

    wait_until(lambda: inbox.bodies == ["powder day"], what="the callback")
    wait_until(lambda: queue_count(sqs, url) == 0, what="the deletion")
    assert inbox.contexts == [(True, False, app)]
    wait_until(lambda: handled.calls, what="sqs_message_handled")
    assert handled.calls[0]["queue_name"] == name
    assert handled.calls[0]["message"]["MessageId"] == response["MessageId"]


@pytest.mark.parametrize("outcome", ["returns False", "raises"])
def test_failed_message_stays_on_the_queue(sqs, new_queue, serving, caplog, outcome):
    name, url = new_queue()
    error = RuntimeError("no snow")
    inbox = Inbox(result=False) if outcome == "returns False" else Inbox(error=error)
    app, queues = serving({"queue_name": name, "callback": inbox})
    failed = Recorder(signals.sqs_message_failed, app)
    handled = Recorder(signals.sqs_message_handled, app)

    sqs.send_message(QueueUrl=url, MessageBody="slush")
    wait_until(lambda: failed.calls, what="sqs_message_failed")
    assert queues.stop_pollers()

    assert inbox.bodies == ["slush"]
    assert queue_count(sqs, url) == 1
    assert handled.calls == []
    assert failed.calls[0]["message"]["Body"] == "slush"
    assert failed.calls[0]["error"] is (None if outcome == "returns False" else error)
    assert "stays on the queue" in caplog.text


def test_two_queues_each_reach_their_own_callback(sqs, new_queue, serving):
    (first, first_url), (second, second_url) = new_queue(), new_queue()
    first_inbox, second_inbox = Inbox(), Inbox()
    app, queues = serving(
        [
            {"queue_name": first, "callback": first_inbox},
            {"queue_name": second, "callback": second_inbox, "max_number_of_messages": 1},
        ]
    )
    assert len(queues.pollers) == 2

    sqs.send_message(QueueUrl=first_url, MessageBody="one")
    sqs.send_message(QueueUrl=second_url, MessageBody="two")

    wait_until(lambda: first_inbox.bodies and second_inbox.bodies, what="both callbacks")
    assert first_inbox.bodies == ["one"]
    assert second_inbox.bodies == ["two"]
    wait_until(lambda: queue_count(sqs, first_url) + queue_count(sqs, second_url) == 0)


def test_message_sent_while_idle_arrives_within_the_long_poll(sqs, new_queue, serving):
    """wait_time_seconds=20: a timer between polls would take up to 20s; long polling returns at once."""
    name, url = new_queue()
    inbox = Inbox()
    app, queues = serving({"queue_name": name, "callback": inbox, "wait_time_seconds": 20})
    sqs.send_message(QueueUrl=url, MessageBody="first")
    wait_until(lambda: queue_count(sqs, url) == 0, what="the first message handled")

    # The poller is idle in a 20-second receive now.
    sent = time.monotonic()
    sqs.send_message(QueueUrl=url, MessageBody="second")
    wait_until(lambda: "second" in inbox.bodies, timeout=5.0, what="the second message")
    assert time.monotonic() - sent < 5.0


def test_poller_survives_an_endpoint_that_goes_away_and_comes_back(
    serving, caplog, monkeypatch
):
    port = free_port()
    server = start_local_aws(port)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    try:
        direct = boto3.client("sqs", endpoint_url=server.endpoint_url)
        name = "gnar-comeback"
        url = direct.create_queue(QueueName=name)["QueueUrl"]
        inbox = Inbox()
        app, queues = serving(
            {"queue_name": name, "callback": inbox, "wait_time_seconds": 1},
            GNAR_SQS_ENDPOINT_URL=server.endpoint_url,
            GNAR_SQS_BACKOFF_SECONDS=0.05,
            GNAR_SQS_BACKOFF_MAX_SECONDS=0.3,
        )
        direct.send_message(QueueUrl=url, MessageBody="before")
        wait_until(lambda: inbox.bodies == ["before"], what="the first message")

        caplog.set_level(logging.WARNING, logger="flask_gnar.sqs")
        stop_local_aws(server)
        wait_until(lambda: "retrying in" in caplog.text, what="a logged retry")
        assert queues.pollers_running()

        server = start_local_aws(port)
        url = direct.create_queue(QueueName=name)["QueueUrl"]
        direct.send_message(QueueUrl=url, MessageBody="after")
        wait_until(lambda: inbox.bodies == ["before", "after"], what="the poller to resume")
        wait_until(lambda: queue_count(direct, url) == 0, what="the deletion")
        assert queues.pollers_running()
    finally:
        stop_local_aws(server)


def test_stop_finishes_the_message_in_hand_and_puts_the_rest_back(sqs, new_queue, serving):
    name, url = new_queue()
    for body in ("first", "second", "third"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    slow = SlowCallback()
    app, queues = serving({"queue_name": name, "callback": slow, "wait_time_seconds": 1})
    handled = Recorder(signals.sqs_message_handled, app)
    assert slow.started.wait(DEADLINE)
    outcome: list[bool] = []
    stopper = threading.Thread(target=lambda: outcome.append(queues.stop_pollers(timeout=DEADLINE)))
    stopper.start()
    wait_until(lambda: not queues.pollers_running(), what="the stop request")
    assert outcome == []  # stop waits for the callback in hand
    slow.proceed.set()
    stopper.join(DEADLINE)

    assert outcome == [True]
    assert slow.bodies == ["first"]
    assert [call["message"]["Body"] for call in handled.calls] == ["first"]
    # The two received but unhandled messages are visible again at once
    # (the queue's visibility timeout is 30s).
    back = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert sorted(message["Body"] for message in back.get("Messages", [])) == ["second", "third"]
    assert queue_count(sqs, url) == 2


def test_heartbeat_keeps_a_slow_message_invisible(sqs, new_queue, serving):
    name, url = new_queue(VisibilityTimeout="2")
    slow = SlowCallback()
    app, queues = serving({"queue_name": name, "callback": slow, "wait_time_seconds": 1})
    sqs.send_message(QueueUrl=url, MessageBody="slow one")
    assert slow.started.wait(DEADLINE)

    # More than two visibility timeouts pass while the callback runs; nobody else gets it.
    stolen = []
    until = time.monotonic() + 4.5
    while time.monotonic() < until:
        stolen += sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    slow.proceed.set()

    assert stolen == []
    wait_until(lambda: queue_count(sqs, url) == 0, what="the deletion")
    assert slow.bodies == ["slow one"]


def test_backoff_doubles_up_to_its_cap():
    assert list(islice(Backoff(initial=0.5, maximum=3).delays(), 5)) == [0.5, 1, 2, 3, 3]


def test_a_raising_signal_receiver_cannot_kill_the_poller(sqs, new_queue, serving, caplog):
    name, url = new_queue()
    inbox = Inbox()
    app, queues = serving({"queue_name": name, "callback": inbox, "max_number_of_messages": 1})

    def broken(sender: Flask, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.sqs_message_handled.connect(broken, sender=app, weak=False)
    try:
        sqs.send_message(QueueUrl=url, MessageBody="one")
        wait_until(lambda: queue_count(sqs, url) == 0)
        sqs.send_message(QueueUrl=url, MessageBody="two")
        wait_until(lambda: inbox.bodies == ["one", "two"], what="the second message")
        wait_until(lambda: queue_count(sqs, url) == 0)
    finally:
        signals.sqs_message_handled.disconnect(broken, sender=app)
    assert queues.pollers_running()
    assert "receiver bug" in caplog.text


def test_pollers_start_only_when_serving_and_readiness_follows(aws, new_queue):
    name, _ = new_queue()
    app = create_app(
        "snowy", no_db=True, no_jwt=True, sqs={"queue_name": name, "callback": Inbox()}
    )
    state = get_state(app)
    assert not [thread for thread in threading.enumerate() if thread.name == f"gnar-sqs-{name}"]
    assert state.ready() == {"sqs": False}

    state.start()
    try:
        assert state.ready() == {"sqs": True}
        assert [thread.name for thread in threading.enumerate()].count(f"gnar-sqs-{name}") == 1
    finally:
        state.stop()
    assert state.ready() == {"sqs": False}


def test_configured_signal_names_the_queues(aws):
    names: list[list[str]] = []

    def on_configured(sender: Flask, queues: list[str]) -> None:
        names.append(queues)

    signals.sqs_configured.connect(on_configured)
    try:
        create_app(
            "snowy",
            no_db=True,
            no_jwt=True,
            sqs=[{"queue_name": "a", "callback": print}, {"queue_name": "b", "callback": print}],
        )
    finally:
        signals.sqs_configured.disconnect(on_configured)
    assert names == [["a", "b"]]


def test_send_sqs_message_passes_every_seed_keyword(aws, sqs):
    name = f"gnar-{uuid.uuid4().hex[:10]}.fifo"
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"]
    app = Flask(__name__)
    GnarSQS(app)

    with app.app_context():
        response = get_state(app).send_sqs_message(
            name,
            "first chair",
            message_attributes={"resort": {"DataType": "String", "StringValue": "whistler"}},
            message_deduplication_id="dedup-1",
            message_group_id="lift-1",
        )

    assert set(response) >= {"MessageId", "MD5OfMessageBody", "MD5OfMessageAttributes", "SequenceNumber"}
    received = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"]
    )["Messages"][0]
    assert received["Body"] == "first chair"
    assert received["MessageAttributes"]["resort"]["StringValue"] == "whistler"
    assert received["Attributes"]["MessageGroupId"] == "lift-1"
    assert received["Attributes"]["MessageDeduplicationId"] == "dedup-1"


def test_send_sqs_message_delay_seconds(aws, sqs, new_queue):
    name, url = new_queue()
    app = Flask(__name__)
    GnarSQS(app)
    with app.app_context():
        get_state(app).send_sqs_message(name, "later", delay_seconds=30)
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


def test_queue_urls_are_cached_per_app(aws, sqs, new_queue):
    name, url = new_queue()
    first, second = Flask("first"), Flask("second")
    GnarSQS(first)
    GnarSQS(second)
    first_queues, second_queues = get_state(first).sqs, get_state(second).sqs

    assert first_queues.queue_url(name) == url
    sqs.delete_queue(QueueUrl=url)
    # The first app remembers the URL; the second asks SQS and learns the queue is gone.
    assert first_queues.queue_url(name) == url
    with pytest.raises(ClientError, match="NonExistentQueue"):
        second_queues.queue_url(name)


@pytest.mark.parametrize(
    ("sqs_option", "message"),
    [
        ({"callback": print}, "sqs.queue_name: is required"),
        ({"queue_name": "q"}, "sqs.callback: is required"),
        ([{"queue_name": "q", "callback": print}, {"queue_name": "r"}], "sqs[1].callback: is required"),
        ({"queue_name": "q", "callback": print, "colour": "red"}, "sqs: unknown key(s) 'colour'"),
        ({"queue_name": "q", "callback": "print"}, "sqs.callback: expected a function"),
        ({"queue_name": "q", "callback": print, "wait_time_seconds": 21}, "sqs.wait_time_seconds: expected a whole number from 0 to 20"),
        ({"queue_name": "q", "callback": print, "max_number_of_messages": 0}, "sqs.max_number_of_messages: expected a whole number from 1 to 10"),
        ({"queue_name": "q", "callback": print, "interval_seconds": -1}, "sqs.interval_seconds: expected a number of at least 0"),
        ("q", "sqs: expected a dict or a list of dicts"),
    ],
)
def test_config_errors_name_the_key(aws, sqs_option, message):
    with pytest.raises(ConfigError) as caught:
        create_app("snowy", no_db=True, no_jwt=True, sqs=sqs_option)
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value)


def test_queues_without_a_region_stop_start_up():
    with pytest.raises(ConfigError, match="GNAR_SQS_REGION_NAME: no AWS region"):
        create_app("snowy", no_db=True, no_jwt=True, sqs={"queue_name": "q", "callback": print})


def test_create_app_without_queues_needs_no_aws_settings():
    app = create_app("snowy", no_db=True, no_jwt=True)
    state = get_state(app)
    assert callable(state.send_sqs_message)
    assert "sqs" not in state.readiness_checks


SERVED_APP = """
from flask_gnar import create_app, gnar, serve

def echo(message):
    gnar.send_sqs_message({echo!r}, "echo: " + message["Body"])

app = create_app("snowy", production=True, no_db=True, no_jwt=True,
                 sqs={{"queue_name": {inbox!r}, "callback": echo}})
serve(app, host="127.0.0.1", port={port})
"""


def test_served_app_polls_in_its_own_process_and_stops_on_sigterm(aws, sqs, new_queue):
    (inbox, inbox_url), (echo, echo_url) = new_queue(), new_queue()
    port = free_port()
    process = start_process(SERVED_APP.format(echo=echo, inbox=inbox, port=port))
    try:
        wait_for_http(f"http://127.0.0.1:{port}/runs/", process=process)
        sqs.send_message(QueueUrl=inbox_url, MessageBody="first tracks")
        reply = sqs.receive_message(QueueUrl=echo_url, WaitTimeSeconds=10).get("Messages", [])
        assert [message["Body"] for message in reply] == ["echo: first tracks"]
        wait_until(lambda: queue_count(sqs, inbox_url) == 0, what="the deletion")

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == 0
    finally:
        output = stop(process)
    assert f"Polling SQS queue {inbox}" in output
    assert f"Stopped polling SQS queue {inbox}" in output
