"""GnarSQS on moto in server mode, in one run: every figure a ratio of medians over
alternating rounds, the setups compared side by side in each round.

* **seed**: the seed's algorithm against GnarSQS: messages drained per second with a full
  queue, and the time from SendMessage to the callback with an idle poller.
* **no-op**: a callback that does nothing, concurrency 1, against the poller of
  ``--before`` (a git revision, ``main`` by default, loaded from ``git show``): the drain
  rate must not drop.
* **io**: a callback that waits ``--io-ms`` (20 ms, I/O rather than CPU): concurrency 8
  against concurrency 1, and deletes in batches against one delete per message as each
  callback finishes, with the API calls per message (receives, deletes and visibility
  changes; counted on the poller's client).
* **send**: ``gnar.send_sqs_messages`` of 100 messages against 100 ``gnar.send_sqs_message``.

The seed baseline (``SeedPoller`` below) is written out here: one message per
ReceiveMessage (``MaxNumberOfMessages`` 1, no long polling), each message deleted with
its own DeleteMessage, and once the queue answers empty a ``threading.Timer`` of
``interval_seconds`` before the next receive. The seed defaults that interval to 60s; the
baseline uses ``--seed-interval`` (1s by default), which flatters it.

moto 5.2 counts every message of a queue for each message it receives or sends (see
``bench/moto_server.py``), so with a backlog of hundreds a receive takes 100-200 ms and
the figures measure moto. By default the bench runs that stand-in with those two look-ups
made cheap; ``--plain-moto`` runs the project's stand-in as the tests do.

Run: ``python bench/sqs.py`` (needs ``moto[server]``, as the test extra installs);
``--only io send`` runs some parts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from flask import Flask

import flask_gnar.sqs
from flask_gnar import get_state, signals
from flask_gnar.embedded import LocalAWS, free_port, start_local_aws, stop_local_aws

Callback = Callable[[dict[str, Any]], Any]
ROOT = Path(__file__).resolve().parent.parent
#: The calls a poller makes per message (queue look-ups at start are not counted).
POLLER_CALLS = {
    "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
    "ChangeMessageVisibility", "ChangeMessageVisibilityBatch",
}


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
    """Counts handled messages and the poller's API calls; remembers when each body arrived."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.count = 0
        self.calls = 0
        self.calls_at_last = 0
        self.first: float | None = None
        self.arrived: dict[str, float] = {}
        self.changed = threading.Condition()

    def arrive(self, message: dict[str, Any]) -> None:
        with self.changed:
            self.arrived[message["Body"]] = time.perf_counter()
            if self.first is None:
                self.first = self.arrived[message["Body"]]
        if self.delay:
            time.sleep(self.delay)

    def done(self) -> None:
        with self.changed:
            self.count += 1
            self.calls_at_last = self.calls
            self.changed.notify_all()

    def call(self, model: Any, **kwargs: Any) -> None:
        if model.name in POLLER_CALLS:
            with self.changed:
                self.calls += 1

    def wait_for_count(self, count: int, timeout: float = 300.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.count >= count, timeout):
                raise RuntimeError(f"only {self.count} of {count} messages handled")

    def wait_for_body(self, body: str, timeout: float = 120.0) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: body in self.arrived, timeout):
                raise RuntimeError(f"{body!r} never arrived")
            return self.arrived[body]


class SeedRunner:
    def __init__(self, client: Any, interval: float) -> None:
        self.name = "seed"
        self.client = client
        self.interval = interval

    def start(self, queue_name: str, queue_url: str, counter: Counter) -> Callable[[], None]:
        poller = SeedPoller(self.client, queue_url, counter.arrive, self.interval, counter.done)
        self.client.meta.events.register("before-call.sqs", counter.call)
        threading.Thread(target=poller.start, daemon=True).start()

        def stop() -> None:
            poller.stop()
            self.client.meta.events.unregister("before-call.sqs", counter.call)

        return stop


class GnarRunner:
    """GnarSQS from ``module`` (this tree's, or an older revision's) with these settings."""

    def __init__(
        self, name: str, module: ModuleType = flask_gnar.sqs, linger: float | None = None,
        **queue: Any,
    ) -> None:
        self.name = name
        self.module = module
        self.linger = linger
        self.queue = queue

    def start(self, queue_name: str, queue_url: str, counter: Counter) -> Callable[[], None]:
        app = Flask(f"bench_{queue_name}")
        self.module.GnarSQS(
            app, queues={"queue_name": queue_name, "callback": counter.arrive, **self.queue}
        )

        def handled(sender: Flask, **kwargs: Any) -> None:
            counter.done()

        signals.sqs_message_handled.connect(handled, sender=app, weak=False)
        state = get_state(app)
        factory = state.sqs.client_factory
        new_client = factory.new_client

        def counting_client(**options: Any) -> Any:
            client = new_client(**options)
            client.meta.events.register("before-call.sqs", counter.call)
            return client

        factory.new_client = counting_client
        state.start()
        if self.linger is not None:
            for poller in state.sqs.pollers:
                poller.delete_linger_seconds = self.linger

        def stop() -> None:
            state.stop()
            signals.sqs_message_handled.disconnect(handled, sender=app)

        return stop


def load_before(revision: str) -> ModuleType | None:
    """``flask_gnar/sqs.py`` as it was at ``revision``, imported beside today's."""
    try:
        source = subprocess.run(
            ["git", "show", f"{revision}:flask_gnar/sqs.py"], cwd=ROOT, check=True,
            capture_output=True, text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"no poller at {revision!r} ({error}); skipping the no-op comparison", file=sys.stderr)
        return None
    path = Path(tempfile.mkdtemp()) / "sqs_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("flask_gnar._sqs_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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


def drain(runner: Any, client: Any, messages: int, delay: float = 0.0) -> tuple[float, float]:
    """Messages per second from the first callback to the last deletion, and API calls per message."""
    name, url = new_queue(client)
    preload(client, url, messages)
    counter = Counter(delay)
    stop = runner.start(name, url, counter)
    try:
        counter.wait_for_count(messages)
        assert counter.first is not None
        rate = (messages - 1) / (time.perf_counter() - counter.first)
        return rate, counter.calls_at_last / messages
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


def send_rate(client: Any, batched: bool, count: int) -> float:
    """Messages per second sent by ``gnar.send_sqs_messages`` or one ``send_sqs_message`` each."""
    name, url = new_queue(client)
    app = Flask(f"bench_send_{name}")
    flask_gnar.sqs.GnarSQS(app)
    state = get_state(app)
    bodies = [f"event-{index}" for index in range(count)]
    state.sqs.queue_url(name)  # both ways start with the URL cached
    started = time.perf_counter()
    if batched:
        state.send_sqs_messages(name, bodies)
    else:
        for body in bodies:
            state.send_sqs_message(name, body)
    elapsed = time.perf_counter() - started
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == str(count)
    return count / elapsed


def alternate(rounds: int, setups: list[Any], measure: Callable[[Any], Any]) -> dict[str, list[Any]]:
    """``measure(setup)`` for every setup, each round in the other order; the results by name."""
    results: dict[str, list[Any]] = {setup.name: [] for setup in setups}
    for number in range(rounds):
        for setup in setups if number % 2 == 0 else setups[::-1]:
            results[setup.name].append(measure(setup))
    return results


def medians(results: dict[str, list[Any]], index: int | None = None) -> dict[str, float]:
    return {
        name: statistics.median(value if index is None else value[index] for value in values)
        for name, values in results.items()
    }


def part_seed(client: Any, args: Any) -> None:
    runners = [SeedRunner(client, args.seed_interval), GnarRunner("flask-gnar")]
    rates = medians(alternate(args.rounds, runners, lambda r: drain(r, client, args.messages)), 0)
    delays = medians(alternate(
        args.rounds, runners, lambda r: latency(r, client, args.samples, args.seed_interval * 1.5)
    ))
    print(f"\nseed: {args.messages} messages drained, {args.samples} latency samples a round, "
          f"seed interval {args.seed_interval:g}s")
    print(f"  drained msgs/s: seed {rates['seed']:.1f}, flask-gnar {rates['flask-gnar']:.1f}, "
          f"{rates['flask-gnar'] / rates['seed']:.2f}x")
    print(f"  latency ms: seed {delays['seed'] * 1000:.1f}, flask-gnar "
          f"{delays['flask-gnar'] * 1000:.1f}, {delays['seed'] / delays['flask-gnar']:.1f}x lower")


def part_noop(client: Any, args: Any) -> None:
    before = load_before(args.before)
    if before is None:
        return
    runners = [GnarRunner(f"before ({args.before})", before), GnarRunner("now, concurrency 1")]
    results = alternate(args.rounds, runners, lambda r: drain(r, client, args.noop_messages))
    rates, calls = medians(results, 0), medians(results, 1)
    old, new = (runner.name for runner in runners)
    print(f"\nno-op callback: {args.noop_messages} messages drained a round")
    for name in (old, new):
        print(f"  {name:24} {rates[name]:8.1f} msgs/s  {calls[name]:.3f} API calls/msg")
    print(f"  now / before: {rates[new] / rates[old]:.3f}x (goal >= 0.95x)")


def part_io(client: Any, args: Any) -> None:
    delay = args.io_ms / 1000
    runners = [
        GnarRunner("concurrency 1", concurrency=1),
        GnarRunner("concurrency 8", concurrency=8),
        GnarRunner("concurrency 1, delete each", concurrency=1, linger=0.0),
        GnarRunner("concurrency 8, delete each", concurrency=8, linger=0.0),
    ]
    results = alternate(args.rounds, runners, lambda r: drain(r, client, args.io_messages, delay))
    rates, calls = medians(results, 0), medians(results, 1)
    print(f"\n{args.io_ms:g} ms I/O callback: {args.io_messages} messages drained a round")
    for runner in runners:
        print(f"  {runner.name:28} {rates[runner.name]:8.1f} msgs/s  "
              f"{calls[runner.name]:.3f} API calls/msg")
    print(f"  concurrency 8 / 1: {rates['concurrency 8'] / rates['concurrency 1']:.2f}x "
          f"(goal >= 5x at <= 0.25 API calls/msg)")


class SendSetup:
    def __init__(self, name: str, batched: bool) -> None:
        self.name = name
        self.batched = batched


def part_send(client: Any, args: Any) -> None:
    setups = [SendSetup("send_sqs_message x100", False), SendSetup("send_sqs_messages", True)]
    rates = medians(alternate(args.rounds, setups, lambda s: send_rate(client, s.batched, 100)))
    one, many = (setup.name for setup in setups)
    print("\nsend 100 messages")
    for name in (one, many):
        print(f"  {name:24} {rates[name]:8.1f} msgs/s")
    print(f"  send_sqs_messages / send_sqs_message: {rates[many] / rates[one]:.2f}x (goal >= 5x)")


def start_fast_moto() -> LocalAWS:
    """moto from ``bench/moto_server.py`` on a free port, as ``start_local_aws`` starts its own."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("moto_server.py")), "-H", "127.0.0.1",
         "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    aws = LocalAWS(endpoint_url=f"http://127.0.0.1:{port}", process=process)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{aws.endpoint_url}/moto-api/", timeout=1).close()
            return aws
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)


PARTS = {"seed": part_seed, "noop": part_noop, "io": part_io, "send": part_send}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200, help="drained a round (seed)")
    parser.add_argument("--noop-messages", type=int, default=500)
    parser.add_argument("--io-messages", type=int, default=200)
    parser.add_argument("--io-ms", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=5, help="latency samples a round")
    parser.add_argument("--seed-interval", type=float, default=1.0)
    parser.add_argument("--before", default="main", help="git revision of the no-op baseline")
    parser.add_argument("--plain-moto", action="store_true", help="moto as the tests run it")
    args = parser.parse_args()

    aws: LocalAWS = start_local_aws() if args.plain_moto else start_fast_moto()
    os.environ.update(aws.env)
    try:
        client = boto3.client("sqs")
        stand_in = "the tests' moto" if args.plain_moto else "moto without its per-message counting"
        print(f"{stand_in} in server mode, {args.rounds} alternating rounds, medians")
        for part in args.only:
            PARTS[part](client, args)
            sys.stdout.flush()
    finally:
        stop_local_aws(aws)


if __name__ == "__main__":
    main()
