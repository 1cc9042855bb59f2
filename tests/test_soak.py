"""Soak: a few thousand mixed requests against two bjoern workers while SQS traffic flows.

No errors, database connections bounded by workers x GNAR_PG_MAX_CONNECTIONS, every
message handled once, and worker memory stable. The figures are printed (``-s``) and
recorded in bench/README.md.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
import requests
from psycopg2.extensions import make_dsn

from aws_support import aws  # noqa: F401 (fixture)
from flask_gnar.testing import EmbeddedPostgres, LocalAWS
from hardening_support import Ledger, access_token, queue_count, start_hardy, wait_until, worker_pids

WORKERS = 2
MAX_CONNECTIONS = 4
CLIENTS = 6
REQUESTS_PER_CLIENT = 500
MESSAGES = 200
WARM_UP_REQUESTS = 300
RSS_GROWTH_LIMIT_KIB = 20 * 1024
APPLICATION = f"hardy-soak-{uuid.uuid4().hex[:6]}"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def app_connections(uri: str) -> int:
    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APPLICATION,)
            )
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


def run_sql(uri: str, sql: str) -> None:
    conn = psycopg2.connect(uri)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


@pytest.fixture
def visits_table(gnar_postgres: EmbeddedPostgres) -> Iterator[None]:
    """The soak's table, dropped afterwards: other tests expect it not to exist."""
    run_sql(gnar_postgres.uri, "CREATE TABLE IF NOT EXISTS visits (who text)")
    yield
    run_sql(gnar_postgres.uri, "DROP TABLE visits")


class Mix:
    """One client's requests, in turn: JSON, protected, database read, database write."""

    def __init__(self, url: str, token: str, number: int) -> None:
        self.url = url
        self.session = requests.Session()
        self.token = token
        self.number = number

    def call(self, index: int) -> bool:
        kind = index % 4
        if kind == 0:
            body = {"client": self.number, "index": index}
            response = self.session.post(f"{self.url}/echo", json=body, timeout=30)
            return response.status_code == 200 and response.json() == {"echo": body}
        if kind == 1:
            response = self.session.get(
                f"{self.url}/protected", headers={"Authorization": f"Bearer {self.token}"}, timeout=30
            )
            return response.status_code == 200 and response.json() == {"identity": self.number}
        if kind == 2:
            response = self.session.get(f"{self.url}/db", timeout=30)
            return response.status_code == 200 and response.json() == {"answer": 42}
        response = self.session.post(f"{self.url}/db/visits", json={"who": str(self.number)}, timeout=30)
        return response.status_code == 200 and response.json()["visits"] > 0


@pytest.mark.slow
def test_soak_mixed_traffic_on_two_workers(
    gnar_postgres: EmbeddedPostgres, aws: LocalAWS, tmp_path: Path, visits_table: None
) -> None:
    sqs = boto3.client("sqs")
    name = f"gnar-soak-{uuid.uuid4().hex[:8]}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    ledger = Ledger(tmp_path / "ledger")
    service = start_hardy(
        GNAR_WORKERS=str(WORKERS), HARDY_DB="1", HARDY_QUEUE=name, HARDY_LEDGER=str(ledger.path),
        GNAR_PG_DSN=make_dsn(gnar_postgres.uri, application_name=APPLICATION),
        GNAR_PG_MAX_CONNECTIONS=str(MAX_CONNECTIONS), **aws.env,
    )
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    connections: list[int] = []
    sent: dict[str, str] = {}
    finished = threading.Event()

    def client(number: int) -> None:
        mix = Mix(service.url, access_token(number), number)
        for index in range(REQUESTS_PER_CLIENT):
            try:
                outcome = "ok" if mix.call(index) else "wrong"
            except requests.RequestException as error:
                outcome = f"error: {type(error).__name__}"
            with lock:
                outcomes[outcome] += 1

    def sender() -> None:
        for batch in range(MESSAGES // 10):
            entries = [{"Id": str(i), "MessageBody": f"soak-{batch}-{i}"} for i in range(10)]
            for result in sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)["Successful"]:
                sent[result["MessageId"]] = entries[int(result["Id"])]["MessageBody"]
            time.sleep(0.05)

    def watch_connections() -> None:
        while not finished.wait(0.2):
            connections.append(app_connections(gnar_postgres.uri))

    try:
        pids = sorted(worker_pids(service, WORKERS))
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        threads += [threading.Thread(target=sender), threading.Thread(target=watch_connections)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        wait_until(lambda: sum(outcomes.values()) >= WARM_UP_REQUESTS, what="the warm-up")
        rss_before = [rss_kib(pid) for pid in pids]
        for thread in threads[:-1]:
            thread.join(120)
        wait_until(lambda: len(ledger.ended()) >= MESSAGES and queue_count(sqs, queue_url) == 0,
                   what="every message handled")
        elapsed = time.monotonic() - started
        rss_after = [rss_kib(pid) for pid in pids]
        assert sorted(worker_pids(service, WORKERS)) == pids, "no worker was replaced"
    finally:
        finished.set()
        output = service.stop()
    requests_made = sum(outcomes.values())
    print(
        f"\nSOAK requests={requests_made} outcomes={dict(outcomes)} elapsed={elapsed:.1f}s "
        f"messages={len(sent)} pg_connections_max={max(connections)} "
        f"(bound {WORKERS * MAX_CONNECTIONS}) rss_kib_before={rss_before} rss_kib_after={rss_after}"
    )
    assert outcomes == Counter({"ok": CLIENTS * REQUESTS_PER_CLIENT}), outcomes
    assert connections and max(connections) <= WORKERS * MAX_CONNECTIONS
    ids = Counter(message_id for kind, _, message_id, _ in ledger.lines() if kind == "end")
    assert ids == Counter(sent.keys()), "every message handled exactly once"
    for before, after in zip(rss_before, rss_after):
        assert after - before < RSS_GROWTH_LIMIT_KIB, (rss_before, rss_after)
    assert "Traceback" not in output
