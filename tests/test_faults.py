"""Faults in the world around a service: Postgres restarts, SQS goes away, slow callbacks,
bad peers, SIGTERM in the middle of a burst. Real processes on 127.0.0.1."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from flask import Flask

from aws_support import EndpointGate, aws  # noqa: F401 (fixture)
from db_support import OwnPostgres, start_own_postgres, stop_own_postgres
from flask_gnar import GnarPeer, GnarSQS, PeerTimeout, get_state, gnar, signals
from flask_gnar.testing import LocalAWS, free_port, start_local_aws, stop_local_aws
from hardening_support import (
    DEADLINE,
    Hardy,
    Ledger,
    drain,
    queue_count,
    start_hardy,
    wait_until,
    worker_pids,
)
from peer_support import Listener

DB_UNAVAILABLE = {"error": "The database is unavailable; try again shortly."}


# --- Postgres restarted under load ---------------------------------------------------------


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnPostgres]:
    server = start_own_postgres(tmp_path_factory.mktemp("faults-pgdata"))
    yield server
    stop_own_postgres(server)


@dataclass
class Answer:
    started: float
    status: int | None
    body: Any
    error: str = ""
    finished: float = field(default_factory=time.monotonic)


@dataclass
class Load:
    """Client threads calling ``url`` in a loop on keep-alive sessions until stopped."""

    url: str
    threads: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = session.get(self.url, timeout=15)
                self.answers.append(Answer(started, response.status_code, response.json()))
            except requests.RequestException as error:
                self.answers.append(Answer(started, None, None, str(error)))
                session = requests.Session()
        session.close()

    def count_since(self, moment: float) -> int:
        return sum(1 for answer in list(self.answers) if answer.started > moment)


def readiness(service: Hardy) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{service.url}/health/ready", timeout=10)
    return response.status_code, response.json()


@pytest.mark.slow
def test_postgres_restarted_under_load_answers_503_then_nothing_fails(
    own_postgres: OwnPostgres,
) -> None:
    if not own_postgres.running():
        own_postgres.restart()
    service = start_hardy(
        ready_path="/db", HARDY_DB="1", GNAR_WORKERS="2", GNAR_PG_DSN=own_postgres.uri,
        GNAR_PG_MAX_CONNECTIONS="3",
    )
    try:
        worker_pids(service, 2)
        with Load(f"{service.url}/db") as load:
            wait_until(lambda: load.count_since(0) >= 50, what="requests before the outage")
            going_down = time.monotonic()
            own_postgres.stop()
            down = time.monotonic()
            wait_until(lambda: load.count_since(down) >= 20, what="requests during the outage")
            assert readiness(service) == (503, {"ready": False, "checks": {"database": False}})
            coming_up = time.monotonic()
            own_postgres.restart()
            up = time.monotonic()
            wait_until(lambda: load.count_since(up) >= 200, what="requests after the outage")
            assert readiness(service) == (200, {"ready": True, "checks": {"database": True}})
    finally:
        output = service.stop()
    answers = load.answers
    assert not [a for a in answers if a.status is None], "every request got an answer"
    # A request is counted in a phase only when it started and finished inside it.
    before = [a for a in answers if a.finished < going_down]
    during = [a for a in answers if down < a.started and a.finished < coming_up]
    after = [a for a in answers if a.started > up]
    assert before and all((a.status, a.body) == (200, {"answer": 42}) for a in before)
    assert during and all((a.status, a.body) == (503, DB_UNAVAILABLE) for a in during)
    assert len(after) >= 200 and all((a.status, a.body) == (200, {"answer": 42}) for a in after)
    assert "database unavailable" in output and "Traceback" not in output


# --- the SQS endpoint goes away and comes back --------------------------------------------


class Handled:
    """An SQS callback that records every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.messages.append((message["MessageId"], message["Body"]))

    def ids(self) -> Counter[str]:
        with self.lock:
            return Counter(message_id for message_id, _ in self.messages)


class Sender:
    """Sends bodies through the app's ``send_sqs_message``, retrying each until it is accepted."""

    def __init__(self, app: Flask, queue_name: str) -> None:
        self.app = app
        self.queue_name = queue_name
        self.sent: dict[str, str] = {}
        self.failures = 0

    def send(self, body: str) -> None:
        with self.app.app_context():
            while True:
                try:
                    response = gnar.send_sqs_message(self.queue_name, body)
                except Exception:
                    self.failures += 1
                    time.sleep(0.05)
                    continue
                self.sent[response["MessageId"]] = body
                return


CONCURRENCIES = pytest.mark.parametrize("concurrency", [1, 4], ids=["concurrency-1", "concurrency-4"])


@pytest.mark.slow
@CONCURRENCIES
def test_sqs_endpoint_outage_every_message_is_handled_exactly_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    """moto stops (and forgets everything) and comes back on the same port; the queue is
    created again, as a restored endpoint would have it."""
    port = free_port()
    server = start_local_aws(port)
    for key, value in {**server.env, "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)
    direct = boto3.client("sqs")
    name = f"gnar-outage-{uuid.uuid4().hex[:8]}"
    url = direct.create_queue(QueueName=name)["QueueUrl"]
    handled = Handled()
    app = Flask("outage")
    app.config.update(
        GNAR_SQS_BACKOFF_SECONDS=0.05, GNAR_SQS_BACKOFF_MAX_SECONDS=0.3,
        GNAR_SQS_CONCURRENCY=concurrency,
    )
    GnarSQS(app, queues={"queue_name": name, "callback": handled, "wait_time_seconds": 1})
    deleted: list[str] = []
    signals.sqs_message_handled.connect(
        lambda sender, message, **kw: deleted.append(message["MessageId"]), sender=app, weak=False
    )
    state, sender = get_state(app), Sender(app, name)
    state.start()
    try:
        for index in range(10):
            sender.send(f"before-{index}")
        wait_until(lambda: len(handled.ids()) == 10 and queue_count(direct, url) == 0)

        caplog.set_level(logging.WARNING, logger="flask_gnar.sqs")
        stop_local_aws(server)
        wait_until(lambda: "retrying in" in caplog.text, what="the poller to back off")
        during = threading.Thread(target=lambda: [sender.send(f"during-{i}") for i in range(10)])
        during.start()
        wait_until(lambda: sender.failures >= 5, what="sends failing while SQS is away")
        assert state.sqs.pollers_running() and during.is_alive()
        server = start_local_aws(port)
        url = direct.create_queue(QueueName=name)["QueueUrl"]
        during.join(DEADLINE)
        for index in range(10):
            sender.send(f"after-{index}")
        wait_until(lambda: len(handled.ids()) == 30 and queue_count(direct, url) == 0,
                   what="every message handled")
    finally:
        state.stop()
        stop_local_aws(server)
    assert sorted(sender.sent.values()) == sorted(
        [f"{phase}-{i}" for phase in ("before", "during", "after") for i in range(10)]
    )
    assert handled.ids() == Counter(sender.sent.keys()), "each message sent was handled exactly once"
    assert Counter(deleted) == Counter(sender.sent.keys()), "deleted only once handled"
    assert f"SQS queue {name}: Could not connect to the endpoint" in caplog.text



class HeldUntilCut(Handled):
    """Records each message once its callback may finish: after the endpoint was cut."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.cut = threading.Event()

    def __call__(self, message: dict[str, Any]) -> None:
        self.started.set()
        assert self.cut.wait(DEADLINE)
        super().__call__(message)


@dataclass
class CutScene:
    """Ten messages on a moto behind an EndpointGate, polled by an app until the test cuts it."""

    gate: EndpointGate
    direct: Any
    url: str
    sent: set[str]
    callback: HeldUntilCut
    state: Any
    deleted: list[str]

    def cut_while_in_hand(self) -> None:
        """Shut the gate while callbacks run, let them finish, see the deletes fail twice."""
        assert self.callback.started.wait(DEADLINE), "a batch in hand"
        self.gate.shut()
        self.callback.cut.set()
        wait_until(lambda: len(self.callback.ids()) == 10, what="every callback finished")


@pytest.fixture
def cut_scene(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> Iterator[Any]:
    server = start_local_aws()
    gate = EndpointGate(int(server.endpoint_url.rsplit(":", 1)[1]))
    for key, value in {**server.env, "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)
    direct = boto3.client("sqs")
    scenes: list[CutScene] = []

    def build(concurrency: int, visibility_timeout: int = 30) -> CutScene:
        name = f"gnar-cut-{uuid.uuid4().hex[:8]}"
        url = direct.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout)}
        )["QueueUrl"]
        entries = [{"Id": str(i), "MessageBody": f"cut-{i}"} for i in range(10)]
        sent = {r["MessageId"] for r in direct.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]}
        app = Flask("cut")
        app.config.update(
            GNAR_SQS_ENDPOINT_URL=gate.endpoint_url, GNAR_SQS_CONCURRENCY=concurrency,
            GNAR_SQS_BACKOFF_SECONDS=0.05, GNAR_SQS_BACKOFF_MAX_SECONDS=0.3,
        )
        callback = HeldUntilCut()
        GnarSQS(app, queues={"queue_name": name, "callback": callback, "wait_time_seconds": 1})
        deleted: list[str] = []
        signals.sqs_message_handled.connect(
            lambda sender, message, **kw: deleted.append(message["MessageId"]), sender=app, weak=False
        )
        scene = CutScene(gate, direct, url, sent, callback, get_state(app), deleted)
        scenes.append(scene)
        caplog.set_level(logging.WARNING, logger="flask_gnar.sqs")
        scene.state.start()
        return scene

    try:
        yield build
    finally:
        for scene in scenes:
            scene.state.stop()
        gate.shut()
        stop_local_aws(server)


@pytest.mark.slow
@CONCURRENCIES
def test_sqs_cut_while_a_batch_is_in_hand_loses_nothing_and_handles_nothing_twice(
    cut_scene: Any, caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    """The endpoint goes away (keeping its state) while callbacks run: their deletes fail,
    are retried while the heartbeat keeps the messages invisible, and succeed once it is
    back, well within the visibility timeout."""
    scene = cut_scene(concurrency)
    scene.cut_while_in_hand()
    wait_until(lambda: caplog.text.count("could not delete") >= 2, what="deletes retried")
    assert scene.deleted == [] and queue_count(scene.direct, scene.url) == 10, "nothing deleted while cut"
    scene.gate.reopen()
    wait_until(lambda: len(scene.deleted) == 10 and queue_count(scene.direct, scene.url) == 0,
               what="the deletes once the endpoint is back")
    assert scene.state.sqs.stop_pollers(timeout=DEADLINE)

    assert scene.callback.ids() == Counter(scene.sent), "each message handled exactly once, none lost"
    assert Counter(scene.deleted) == Counter(scene.sent), "each deleted once"
    assert "they stay invisible" in caplog.text
    assert "will be delivered again" not in caplog.text and "will come back" not in caplog.text


@pytest.mark.slow
def test_sqs_cut_past_the_stop_deadline_keeps_the_handled_messages_on_the_queue(
    cut_scene: Any, caplog: pytest.LogCaptureFixture
) -> None:
    scene = cut_scene(4)
    scene.cut_while_in_hand()
    wait_until(lambda: "could not delete" in caplog.text, what="a failed delete")
    assert scene.state.sqs.stop_pollers(timeout=1.0) is False
    wait_until(lambda: "10 handled message(s) could not be deleted before the stop deadline"
               in caplog.text, what="the keeper giving up at the deadline")
    scene.gate.reopen()
    assert scene.deleted == [] and queue_count(scene.direct, scene.url) == 10, "nothing lost"


@pytest.mark.slow
def test_sqs_cut_longer_than_the_visibility_timeout_is_at_least_once(
    cut_scene: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Documented: once the heartbeat cannot extend them, the handled messages are let go."""
    scene = cut_scene(4, visibility_timeout=2)
    scene.cut_while_in_hand()
    wait_until(lambda: caplog.text.count("was handled but not deleted") == 10,
               what="the messages let go once their visibility ran out")
    scene.gate.reopen()
    wait_until(lambda: len(scene.deleted) == 10 and queue_count(scene.direct, scene.url) == 0,
               what="the second delivery handled and deleted")
    assert scene.callback.ids() == Counter({message_id: 2 for message_id in scene.sent})


# --- a callback slower than the visibility timeout -----------------------------------------


@pytest.fixture
def sqs_queue(aws: LocalAWS) -> Any:
    def create(**attributes: str) -> tuple[Any, str, str]:
        client = boto3.client("sqs")
        name = f"gnar-hardy-{uuid.uuid4().hex[:8]}"
        return client, name, client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]

    return create


@pytest.mark.slow
@CONCURRENCIES
def test_a_callback_slower_than_the_visibility_timeout_runs_once_across_two_workers(
    aws: LocalAWS, sqs_queue: Any, tmp_path: Path, concurrency: int
) -> None:
    sqs, name, url = sqs_queue(VisibilityTimeout="2")
    ledger = Ledger(tmp_path / "ledger")
    service = start_hardy(
        GNAR_WORKERS="2", HARDY_QUEUE=name, HARDY_LEDGER=str(ledger.path),
        GNAR_SQS_CONCURRENCY=str(concurrency), **aws.env
    )
    try:
        worker_pids(service, 2)
        sqs.send_message(QueueUrl=url, MessageBody="sleep:5:slow")
        wait_until(lambda: ledger.ended()["sleep:5:slow"], what="the slow message handled")
        wait_until(lambda: queue_count(sqs, url) == 0, what="the deletion")
    finally:
        service.stop()
    assert ledger.started() == Counter({"sleep:5:slow": 1}), ledger.lines()
    assert ledger.ended() == Counter({"sleep:5:slow": 1})


# --- SIGTERM in the middle of a burst ------------------------------------------------------


@pytest.mark.slow
@CONCURRENCIES
def test_sigterm_during_a_burst_drops_no_request_and_loses_no_message(
    aws: LocalAWS, sqs_queue: Any, tmp_path: Path, concurrency: int
) -> None:
    sqs, name, url = sqs_queue()
    ledger = Ledger(tmp_path / "ledger")
    service = start_hardy(
        GNAR_WORKERS="2", GNAR_SHUTDOWN_GRACE_SECONDS="15", HARDY_QUEUE=name,
        HARDY_LEDGER=str(ledger.path), GNAR_SQS_CONCURRENCY=str(concurrency), **aws.env,
    )
    worker_pids(service, 2)
    sent: dict[str, str] = {}
    for batch in range(8):
        entries = [{"Id": str(i), "MessageBody": f"sleep:0.1:{batch}-{i}"} for i in range(10)]
        for result in sqs.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]:
            sent[result["MessageId"]] = entries[int(result["Id"])]["MessageBody"]
    results: list[Any] = []

    def client(number: int) -> None:
        for index in range(60):
            body = {"client": number, "index": index}
            try:
                response = requests.post(f"{service.url}/echo", json=body, timeout=20)
            except requests.ConnectionError as error:
                refused = "refused" in str(error).lower()
                results.append("refused" if refused else f"dropped: {error}")
                return
            results.append((response.status_code, response.json() == {"echo": body}))

    clients = [threading.Thread(target=client, args=(number,)) for number in range(4)]
    for thread in clients:
        thread.start()
    wait_until(lambda: len(ledger.ended()) >= 4 and len(results) >= 20, what="the burst under way")
    service.process.send_signal(signal.SIGTERM)
    for thread in clients:
        thread.join(30)
    try:
        assert service.process.wait(timeout=30) == 0
    finally:
        output = service.stop()
    assert not [r for r in results if str(r).startswith("dropped")], results
    answered = [r for r in results if isinstance(r, tuple)]
    assert answered and all(r == (200, True) for r in answered), results

    by_id = {message_id: kind for kind, _, message_id, _ in ledger.lines() if kind == "end"}
    started = Counter(message_id for kind, _, message_id, _ in ledger.lines() if kind == "start")
    ended = Counter(message_id for kind, _, message_id, _ in ledger.lines() if kind == "end")
    assert started == ended, "every callback that started finished"
    assert set(ended.values()) == {1}, "no message was handled twice"
    assert queue_count(sqs, url) == len(sent) - len(by_id)
    left = drain(sqs, url)
    assert sorted(left + [sent[i] for i in by_id]) == sorted(sent.values()), "none lost"
    assert left, "the burst was cut short (otherwise this test proves nothing about stopping)"
    assert output.count("Stopped polling SQS queue") == 2


# --- peers that fail --------------------------------------------------------------------------


class StatusServer(Listener):
    """Answers every request with ``status`` (closing the connection), or after ``delay``."""

    def __init__(self, status: int, delay: float = 0.0) -> None:
        super().__init__()
        self.status = status
        self.delay = delay

    def handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            time.sleep(self.delay)
            body = b'{"error": "peer says no"}'
            try:
                conn.sendall(
                    f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
                )
            except OSError:
                pass


def caller(**config: Any) -> Flask:
    app = Flask("caller")
    app.config.update(GNAR_PEER_RETRIES=2, GNAR_PEER_BACKOFF_SECONDS=0, **config)
    GnarPeer(app)
    return app


@pytest.mark.parametrize(
    ("status", "method", "attempts"),
    [
        (500, "GET", 1), (501, "GET", 1), (502, "GET", 3), (503, "GET", 3), (504, "GET", 3),
        (500, "PUT", 1), (503, "PUT", 3), (503, "DELETE", 3),
        (502, "POST", 1), (503, "POST", 1), (504, "PATCH", 1), (500, "POST", 1),
    ],
)
def test_only_gateway_statuses_are_retried_and_only_for_idempotent_methods(
    status: int, method: str, attempts: int
) -> None:
    with StatusServer(status) as server:
        app = caller(GNAR_PEER_PEAK_URL=f"http://{server.address}")
        with app.app_context():
            response = gnar.peer("peak").request(method, "/lift")
        assert server.accepted == attempts
    assert response.status_code == status
    assert response.json() == {"error": "peer says no"}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_slow_peer_costs_one_timeout_and_is_not_retried(method: str) -> None:
    with StatusServer(200, delay=1.0) as server:
        app = caller(GNAR_PEER_PEAK_URL=f"http://{server.address}", GNAR_PEER_TIMEOUT_SECONDS=0.2)
        with app.app_context(), pytest.raises(PeerTimeout) as raised:
            gnar.peer("peak").request(method, "/lift")
        assert server.accepted == 1
    assert raised.value.code == 504
    assert "'peak'" in str(raised.value) and "timeout 0.2s" in str(raised.value)
