"""GnarSQS against the seed's way of polling, on moto in server mode, in one run.

Two figures, each as a ratio of medians over alternating rounds:

* drain rate: messages handled and deleted per second, from the first callback
  to the last deletion, with ``--messages`` waiting when the poller starts;
* latency: from SendMessage to the callback, with the poller idle.

The baseline (``SeedPoller`` below) is the seed's algorithm written out here:
one message per ReceiveMessage (``MaxNumberOfMessages`` 1, no long polling),
each message deleted with its own DeleteMessage, and once the queue answers
empty, a ``threading.Timer`` of ``interval_seconds`` before the next receive.
The seed defaults that interval to 60s; the baseline uses ``--seed-interval``
(1s by default), which flatters it.

Run: ``python bench/sqs.py`` (needs ``moto[server]``, as the test extra installs).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
from flask import Flask

from flask_gnar import GnarSQS, get_state, signals
from flask_gnar.embedded import LocalAWS, start_local_aws, stop_local_aws

Callback = Callable[[dict[str, Any]], Any]


class SeedPoller:
    """The seed's polling: one message per receive, one delete each, a timer when empty."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        callback: Callback,
        interval: float,
        deleted: Callable[[], None],
    ) -> None:
        self.client = client
        self.deleted = deleted
        self.queue_url = queue_url
        self.callback = callback
        self.interval = interval
        self.timer: threading.Timer | None = None
        self.stopped = False

    def start(self) -> None:
        self.tick()

    def tick(self) -> None:
        if self.stopped:
            return
        while True:
            response = self.client.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=1)
            if "Messages" not in response:
                break
            for message in response["Messages"]:
                if self.callback(message) is not False:
                    self.client.delete_message(
                        QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
                    self.deleted()  # the bench's count, not part of the seed
        self.timer = threading.Timer(self.interval, self.tick)
        self.timer.daemon = True
        self.timer.start()

    def stop(self) -> None:
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()


class Counter:
    """Counts handled messages and remembers when each body arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.arrived: dict[str, float] = {}
        self.changed = threading.Condition()

    def arrive(self, message: dict[str, Any]) -> None:
        with self.changed:
            self.arrived[message["Body"]] = time.perf_counter()
            if self.first is None:
                self.first = self.arrived[message["Body"]]

    def done(self) -> None:
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def wait_for_count(self, count: int, timeout: float = 120.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.count >= count, timeout):
                raise RuntimeError(f"only {self.count} of {count} messages handled")

    def wait_for_body(self, body: str, timeout: float = 120.0) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: body in self.arrived, timeout):
                raise RuntimeError(f"{body!r} never arrived")
            return self.arrived[body]


class SeedRunner:
    name = "seed"

    def __init__(self, client: Any, interval: float) -> None:
        self.client = client
        self.interval = interval

    def start(self, queue_name: str, queue_url: str, counter: Counter) -> Callable[[], None]:
        poller = SeedPoller(self.client, queue_url, counter.arrive, self.interval, counter.done)
        threading.Thread(target=poller.start, daemon=True).start()
        return poller.stop


class GnarRunner:
    name = "flask-gnar"

    def start(self, queue_name: str, queue_url: str, counter: Counter) -> Callable[[], None]:
        app = Flask(f"bench_{queue_name}")
        GnarSQS(app, queues={"queue_name": queue_name, "callback": counter.arrive})

        def handled(sender: Flask, **kwargs: Any) -> None:
            counter.done()

        signals.sqs_message_handled.connect(handled, sender=app, weak=False)
        state = get_state(app)
        state.start()

        def stop() -> None:
            state.stop()
            signals.sqs_message_handled.disconnect(handled, sender=app)

        return stop


def new_queue(client: Any) -> tuple[str, str]:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    return name, client.create_queue(QueueName=name)["QueueUrl"]


def preload(client: Any, queue_url: str, count: int) -> None:
    for start in range(0, count, 10):
        entries = [
            {"Id": str(index), "MessageBody": f"m{index}"}
            for index in range(start, min(start + 10, count))
        ]
        client.send_message_batch(QueueUrl=queue_url, Entries=entries)


def drain_rate(runner: Any, client: Any, messages: int) -> float:
    name, url = new_queue(client)
    preload(client, url, messages)
    counter = Counter()
    stop = runner.start(name, url, counter)
    try:
        counter.wait_for_count(messages)
        # From the first callback to the last deletion: client set-up is not counted.
        assert counter.first is not None
        return (messages - 1) / (time.perf_counter() - counter.first)
    finally:
        stop()


def latency(runner: Any, client: Any, samples: int, max_gap: float) -> float:
    """The median send-to-callback time of ``samples`` messages sent at random moments."""
    name, url = new_queue(client)
    counter = Counter()
    stop = runner.start(name, url, counter)
    times = []
    try:
        for index in range(samples):
            time.sleep(random.uniform(0.1, max_gap))
            body = f"ping-{index}"
            sent = time.perf_counter()
            client.send_message(QueueUrl=url, MessageBody=body)
            times.append(counter.wait_for_body(body) - sent)
        return statistics.median(times)
    finally:
        stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--samples", type=int, default=5, help="latency samples per round")
    parser.add_argument("--seed-interval", type=float, default=1.0)
    args = parser.parse_args()

    aws: LocalAWS = start_local_aws()
    os.environ.update(aws.env)
    try:
        client = boto3.client("sqs")
        runners = [SeedRunner(client, args.seed_interval), GnarRunner()]
        rates: dict[str, list[float]] = {runner.name: [] for runner in runners}
        delays: dict[str, list[float]] = {runner.name: [] for runner in runners}
        for round_number in range(args.rounds):
            order = runners if round_number % 2 == 0 else runners[::-1]
            for runner in order:
                rates[runner.name].append(drain_rate(runner, client, args.messages))
                delays[runner.name].append(
                    latency(runner, client, args.samples, args.seed_interval * 1.5)
                )
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        stop_local_aws(aws)

    report(rates, delays, args)


def report(rates: dict[str, list[float]], delays: dict[str, list[float]], args: Any) -> None:
    seed_rate, gnar_rate = statistics.median(rates["seed"]), statistics.median(rates["flask-gnar"])
    seed_delay = statistics.median(delays["seed"])
    gnar_delay = statistics.median(delays["flask-gnar"])
    print(
        f"moto server, {args.rounds} alternating rounds, {args.messages} messages drained, "
        f"{args.samples} latency samples a round, seed interval {args.seed_interval:g}s"
    )
    print(f"{'':24}{'seed':>12}{'flask-gnar':>12}{'ratio':>10}")
    print(
        f"{'drained msgs/s (median)':24}{seed_rate:12.1f}{gnar_rate:12.1f}"
        f"{gnar_rate / seed_rate:9.2f}x"
    )
    print(
        f"{'latency ms (median)':24}{seed_delay * 1000:12.1f}{gnar_delay * 1000:12.1f}"
        f"{seed_delay / gnar_delay:9.2f}x"
    )


if __name__ == "__main__":
    main()
