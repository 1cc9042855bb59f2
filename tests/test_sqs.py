"""GnarSQS against moto in server mode: pollers, callbacks, deletion, stopping, send_sqs_message."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal
import threading
import time
import uuid
from collections import Counter
from itertools import islice
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from flask import Flask, current_app, has_app_context, has_request_context

from flask_gnar import ConfigError, GnarSQS, GnarTracing, create_app, get_state, gnar, signals
from flask_gnar.sqs import Backoff, BatchSendError, PoisonMessage, SQSQueues
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
        #: The current app each receiver call saw (``None`` outside an app context).
        self.apps: list[Flask | None] = []
        signal.connect(self.receive, sender=app, weak=False)
        self.signal = signal
        self.app = app

    def receive(self, sender: Flask, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        self.apps.append(current_app._get_current_object() if has_app_context() else None)

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
    assert handled.apps[0] is app


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
    assert failed.apps[0] is app, "receivers run in the app's context, as for a handled message"
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
        ({"queue_name": "q", "callback": print, "concurrency": 0}, "sqs.concurrency: expected a whole number from 1 to 1000"),
        ({"queue_name": "q", "callback": print, "max_receive_count": 0}, "sqs.max_receive_count: expected a whole number from 1 to 1000"),
        ({"queue_name": "q", "callback": print, "on_poison": print}, "sqs.on_poison: needs max_receive_count"),
        ({"queue_name": "q", "callback": print, "max_receive_count": 3, "on_poison": 1}, "sqs.on_poison: expected a function"),
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


# --- concurrency, FIFO order, poison messages ------------------------------------------


class InFlight:
    """A callback that records how many callbacks run at once, and for which FIFO groups.

    Each call waits until ``gate`` is set (or ``hold`` seconds pass, to let others start).
    """

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.running: list[str] = []
        self.peak = 0
        self.overlapping_groups: list[str] = []
        self.handled: list[tuple[str | None, str]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        group = message.get("Attributes", {}).get("MessageGroupId")
        with self.lock:
            if group is not None and group in self.running:
                self.overlapping_groups.append(group)
            self.running.append(group or "-")
            self.peak = max(self.peak, len(self.running))
        try:
            self.gate.wait(self.hold if self.hold else DEADLINE)
        finally:
            with self.lock:
                self.running.remove(group or "-")
                self.handled.append((group, message["Body"]))

    def count_running(self) -> int:
        with self.lock:
            return len(self.running)

    def bodies(self) -> Counter[str]:
        with self.lock:
            return Counter(body for _, body in self.handled)


def send_bodies(sqs: Any, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start:start + 10])]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_concurrency_runs_that_many_callbacks_at_once_and_each_message_once(
    sqs, new_queue, serving, concurrency
):
    name, url = new_queue()
    bodies = [f"run-{index}" for index in range(12)]
    send_bodies(sqs, url, bodies)
    callback = InFlight()
    app, queues = serving(
        {"queue_name": name, "callback": callback, "concurrency": concurrency, "wait_time_seconds": 1}
    )
    handled = Recorder(signals.sqs_message_handled, app)

    wait_until(lambda: callback.count_running() == concurrency, what=f"{concurrency} callbacks at once")
    callback.gate.set()
    wait_until(lambda: len(handled.calls) == 12 and queue_count(sqs, url) == 0, what="the drain")

    assert callback.peak == concurrency
    assert callback.bodies() == Counter(bodies), "each message handled exactly once"
    assert Counter(call["message"]["Body"] for call in handled.calls) == Counter(bodies)
    assert [t.name for t in threading.enumerate()].count(f"gnar-sqs-{name}") == 1


def test_gnar_sqs_concurrency_is_the_default_of_every_queue(sqs, new_queue, serving):
    (first, _), (second, _) = new_queue(), new_queue()
    app, queues = serving(
        [{"queue_name": first, "callback": print}, {"queue_name": second, "callback": print, "concurrency": 2}],
        GNAR_SQS_CONCURRENCY="3",
    )
    assert [config.concurrency for config in queues.configs] == [3, 2]
    workers = [t.name for t in threading.enumerate() if t.name.startswith(f"gnar-sqs-{first}-worker")]
    assert len(workers) == 3


def fifo_queue(sqs: Any) -> tuple[str, str]:
    name = f"gnar-{uuid.uuid4().hex[:10]}.fifo"
    url = sqs.create_queue(
        QueueName=name, Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )["QueueUrl"]
    return name, url


def test_fifo_keeps_the_order_of_each_group_while_groups_run_in_parallel(sqs, serving):
    name, url = fifo_queue(sqs)
    groups = ["red", "blue", "green", "black"]
    for index in range(5):
        entries = [
            {"Id": group, "MessageBody": f"{group}-{index}", "MessageGroupId": group} for group in groups
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    callback = InFlight(hold=0.05)
    app, queues = serving(
        {"queue_name": name, "callback": callback, "concurrency": 4, "wait_time_seconds": 1}
    )
    wait_until(lambda: len(callback.handled) == 20 and queue_count(sqs, url) == 0, what="the drain")

    for group in groups:
        assert [body for g, body in callback.handled if g == group] == [f"{group}-{i}" for i in range(5)]
    assert callback.overlapping_groups == [], "one message of a group at a time"
    assert callback.peak > 1, "different groups ran in parallel"


def test_fifo_a_failed_message_blocks_its_group_until_it_comes_back(sqs, serving):
    name, url = fifo_queue(sqs)
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"lift-{i}", "MessageGroupId": "lift"} for i in range(3)
    ])
    seen: list[str] = []
    failed_once = threading.Event()

    def callback(message: dict[str, Any]) -> bool:
        seen.append(message["Body"])
        if message["Body"] == "lift-1" and not failed_once.is_set():
            failed_once.set()
            return False
        return True

    app, queues = serving(
        {"queue_name": name, "callback": callback, "concurrency": 4, "wait_time_seconds": 1,
         "visibility_timeout": 2}
    )
    wait_until(lambda: queue_count(sqs, url) == 0, what="the group handled")
    assert seen == ["lift-0", "lift-1", "lift-1", "lift-2"]


def test_the_callback_sees_the_receive_count(sqs, new_queue, serving):
    name, url = new_queue()
    inbox = Inbox()
    serving({"queue_name": name, "callback": inbox, "wait_time_seconds": 1})
    sqs.send_message(QueueUrl=url, MessageBody="counted")
    wait_until(lambda: inbox.bodies == ["counted"])
    assert inbox.messages[0]["Attributes"]["ApproximateReceiveCount"] == "1"


def test_a_poison_message_goes_to_on_poison_and_is_deleted(sqs, new_queue, serving, caplog):
    name, url = new_queue()
    error = RuntimeError("bad powder")
    inbox = Inbox(error=error)
    poisoned = Inbox()
    app, queues = serving({
        "queue_name": name, "callback": inbox, "max_receive_count": 2, "on_poison": poisoned,
        "visibility_timeout": 2, "wait_time_seconds": 1,
    })
    failed = Recorder(signals.sqs_message_failed, app)
    handled = Recorder(signals.sqs_message_handled, app)
    sent = sqs.send_message(QueueUrl=url, MessageBody="toxic")["MessageId"]

    wait_until(lambda: poisoned.bodies == ["toxic"], what="on_poison")
    wait_until(lambda: queue_count(sqs, url) == 0, what="the deletion")
    assert inbox.bodies == ["toxic", "toxic"], "the callback ran max_receive_count times"
    assert poisoned.contexts == [(True, False, app)]
    assert [call["error"] for call in failed.calls][0] is error
    poison = failed.calls[-1]["error"]
    assert isinstance(poison, PoisonMessage) and poison.__cause__ is error
    assert poison.receive_count == 2 and poison.message["MessageId"] == sent
    assert handled.calls == []
    assert f"message {sent} was received 2 time(s) (max_receive_count 2)" in caplog.text
    assert "handing it to on_poison" in caplog.text


def test_without_on_poison_the_queue_redrive_policy_takes_the_message(sqs, new_queue, serving, caplog):
    dlq_name, dlq_url = new_queue()
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name, url = new_queue(
        RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
        VisibilityTimeout="1",
    )
    inbox = Inbox(result=False)
    app, queues = serving(
        {"queue_name": name, "callback": inbox, "max_receive_count": 2, "wait_time_seconds": 1}
    )
    failed = Recorder(signals.sqs_message_failed, app)
    sqs.send_message(QueueUrl=url, MessageBody="to the dead letters")

    wait_until(lambda: queue_count(sqs, dlq_url) == 1, what="the dead-letter queue")
    assert inbox.bodies == ["to the dead letters"] * 2
    assert isinstance(failed.calls[-1]["error"], PoisonMessage)
    assert "leaving it to the queue's redrive policy" in caplog.text
    dead = sqs.receive_message(QueueUrl=dlq_url)["Messages"]
    assert [message["Body"] for message in dead] == ["to the dead letters"]


def test_stop_in_a_concurrent_batch_finishes_what_runs_and_puts_back_the_rest(sqs, new_queue, serving):
    name, url = new_queue()
    bodies = [f"stop-{index}" for index in range(10)]
    send_bodies(sqs, url, bodies)
    callback = InFlight()
    app, queues = serving(
        {"queue_name": name, "callback": callback, "concurrency": 4, "wait_time_seconds": 1}
    )
    handled = Recorder(signals.sqs_message_handled, app)
    wait_until(lambda: callback.count_running() == 4, what="four callbacks running")
    outcome: list[bool] = []
    stopper = threading.Thread(target=lambda: outcome.append(queues.stop_pollers(timeout=DEADLINE)))
    stopper.start()
    wait_until(lambda: not queues.pollers_running(), what="the stop request")
    assert outcome == []  # stop waits for the callbacks in hand
    callback.gate.set()
    stopper.join(DEADLINE)

    assert outcome == [True]
    done = sorted(callback.bodies())
    assert len(done) == 4 and callback.bodies() == Counter(done)
    assert sorted(call["message"]["Body"] for call in handled.calls) == done
    back = drain(sqs, url)
    assert sorted(back + done) == sorted(bodies), "nothing lost, nothing handled twice"


# --- send_sqs_messages ------------------------------------------------------------------


def sending_app() -> tuple[Flask, Any, list[int]]:
    """An app with GnarSQS and the number of entries of each SendMessageBatch it makes."""
    app = Flask(__name__)
    GnarSQS(app)
    state = get_state(app)
    batches: list[int] = []
    state.sqs.client.meta.events.register(
        "provide-client-params.sqs.SendMessageBatch",
        lambda params, **kw: batches.append(len(params["Entries"])),
    )
    return app, state, batches


def test_send_sqs_messages_sends_25_in_three_calls_with_results_in_order(aws, sqs, new_queue):
    name, url = new_queue()
    app, state, batches = sending_app()
    bodies = [f"event-{index}" for index in range(25)]
    with app.app_context():
        results = gnar.send_sqs_messages(name, bodies)

    assert batches == [10, 10, 5]
    assert [result["MD5OfMessageBody"] for result in results] == [
        hashlib.md5(body.encode()).hexdigest() for body in bodies
    ]
    by_id = {message["MessageId"]: message["Body"] for message in drain_messages(sqs, url)}
    assert [by_id[result["MessageId"]] for result in results] == bodies


def test_send_sqs_messages_splits_at_256_kib(aws, sqs, new_queue):
    name, url = new_queue()
    app, state, batches = sending_app()
    big = ["a" * 100_000, "b" * 100_000, "c" * 100_000, "d" * 262_144, "e"]
    results = state.send_sqs_messages(name, big)

    assert batches == [2, 1, 1, 1]
    by_id = {message["MessageId"]: message["Body"] for message in drain_messages(sqs, url)}
    assert [by_id[result["MessageId"]] for result in results] == big


def test_send_sqs_messages_fifo_fields_and_attributes(aws, sqs):
    name, url = fifo_queue(sqs)
    app, state, batches = sending_app()
    results = state.send_sqs_messages(name, [
        {"message_body": f"chair-{index}", "message_group_id": "lift", "message_deduplication_id": f"d{index}",
         "message_attributes": {"resort": {"DataType": "String", "StringValue": "whistler"}}}
        for index in range(3)
    ])
    assert all(result["SequenceNumber"] for result in results)
    received = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
    )["Messages"]
    assert [message["Body"] for message in received] == ["chair-0", "chair-1", "chair-2"]
    assert {message["Attributes"]["MessageGroupId"] for message in received} == {"lift"}
    assert received[1]["Attributes"]["MessageDeduplicationId"] == "d1"
    assert received[2]["MessageAttributes"]["resort"]["StringValue"] == "whistler"


def test_send_sqs_messages_names_each_message_sqs_refused(aws, sqs, new_queue):
    name, url = new_queue()
    app, state, batches = sending_app()
    messages: list[Any] = [f"ok-{index}" for index in range(12)]
    messages[3] = {"message_body": "too late", "delay_seconds": 901}
    messages[11] = {"message_body": "far too late", "delay_seconds": 5000}
    with pytest.raises(BatchSendError) as raised:
        state.send_sqs_messages(name, messages)

    assert [refused.index for refused in raised.value.refused] == [3, 11]
    assert "SQS refused 2 of 12 message(s)" in str(raised.value)
    assert "message 3: InvalidParameterValue" in str(raised.value)
    results = raised.value.results
    assert results[3] is None and results[11] is None
    assert sum(result is not None for result in results) == 10
    assert sorted(message["Body"] for message in drain_messages(sqs, url)) == sorted(
        body for body in messages if isinstance(body, str)
    )


@pytest.mark.parametrize(
    ("messages", "error", "text"),
    [
        ([b"bytes"], TypeError, "message 0 must be a body (str)"),
        (["ok", {"body": "x"}], ValueError, "message 1 has unknown key(s) 'body'"),
        ([{"delay_seconds": 1}], ValueError, "message 0 needs a message_body"),
    ],
)
def test_send_sqs_messages_refuses_malformed_entries_before_sending(aws, new_queue, messages, error, text):
    name, _ = new_queue()
    app, state, batches = sending_app()
    with pytest.raises(error, match=re.escape(text)):
        state.send_sqs_messages(name, messages)
    assert batches == []


def drain_messages(sqs: Any, url: str, **receive: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, **receive).get("Messages", []):
        messages += batch
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
    return messages


def drain(sqs: Any, url: str) -> list[str]:
    return [message["Body"] for message in drain_messages(sqs, url)]


@pytest.mark.parametrize("value", ["0", "abc", "1001"])
def test_a_bad_gnar_sqs_concurrency_stops_start_up_by_name(aws, monkeypatch, value):
    monkeypatch.setenv("GNAR_SQS_CONCURRENCY", value)
    with pytest.raises(ConfigError, match="^GNAR_SQS_CONCURRENCY: "):
        create_app("snowy", no_db=True, no_jwt=True, sqs={"queue_name": "q", "callback": print})


def test_send_sqs_messages_carries_the_trace_context_when_tracing(aws, sqs, new_queue, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    name, url = new_queue()
    app = Flask("traced_sender")
    GnarTracing(app, enabled=True)
    GnarSQS(app)
    state = get_state(app)
    state.start()
    try:
        with app.app_context():
            gnar.send_sqs_messages(name, [f"traced-{index}" for index in range(12)])
    finally:
        state.stop()
    received = drain_messages(sqs, url, MessageAttributeNames=["All"])
    parents = [message["MessageAttributes"]["traceparent"]["StringValue"] for message in received]
    assert len(parents) == 12
    assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", parent) for parent in parents)
