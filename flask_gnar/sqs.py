"""GnarSQS: long-polling SQS queues in background threads, send_sqs_message(s).

Each polled queue has one receiving thread, ``concurrency`` worker threads that
run the callbacks, and one keeper thread that makes every other call: it keeps
the messages in hand invisible, deletes handled ones (retrying through an
outage), and puts back what will not be handled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from blinker import NamedSignal
from flask import Flask

from . import signals
from .aws import ClientFactory, SharedClient, resolve_client_settings
from .config import Settings, int_between, parse_list, parse_str, seconds_between
from .context import run_traced_callback, traced_message_attributes, with_trace_attribute_names
from .exceptions import ConfigError, GnarError
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)

Message = dict[str, Any]
Callback = Callable[[Message], Any]

#: SQS's own limits.
MAX_WAIT_TIME_SECONDS = 20
MAX_MESSAGES_PER_RECEIVE = 10
MAX_VISIBILITY_TIMEOUT = 43200
MAX_ENTRIES_PER_BATCH = 10
MAX_BATCH_BYTES = 256 * 1024
#: The range of a redrive policy's maxReceiveCount.
MAX_RECEIVE_COUNT = 1000
#: Callback threads per queue and process.
MAX_CONCURRENCY = 1000
#: The queue's visibility timeout when SQS does not tell us (the SQS default).
DEFAULT_VISIBILITY_TIMEOUT = 30

DEFAULT_BACKOFF_SECONDS = 0.5
DEFAULT_BACKOFF_MAX_SECONDS = 30.0
DEFAULT_STOP_TIMEOUT_SECONDS = 25.0
DEFAULT_CONCURRENCY = 1


#: Every SQS duration is a wait in a poller thread, so at most MAX_WAIT_SECONDS.
float_from = seconds_between
parse_non_negative_float = float_from(0)
parse_positive_float = float_from(0, above=True)


parse_concurrency = int_between(1, MAX_CONCURRENCY)


def parse_callback(value: Any) -> Callback:
    if not callable(value):
        raise ValueError(f"expected a function called with each message, got {value!r}")
    return value  # type: ignore[no-any-return]


def parse_queue_name(value: Any) -> str:
    name = parse_str(value)
    if not name.strip():
        raise ValueError("expected a queue name, got an empty string")
    return name


#: The seed's queue keys: (parser, default). queue_name and callback are required.
QUEUE_KEYS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "queue_name": (parse_queue_name, None),
    "callback": (parse_callback, None),
    "interval_seconds": (parse_non_negative_float, 0.0),
    "attribute_names": (parse_list, None),
    "max_number_of_messages": (int_between(1, MAX_MESSAGES_PER_RECEIVE), MAX_MESSAGES_PER_RECEIVE),
    "message_attribute_names": (parse_list, None),
    "receive_request_attempt_id": (parse_str, None),
    "visibility_timeout": (int_between(0, MAX_VISIBILITY_TIMEOUT), None),
    "wait_time_seconds": (int_between(0, MAX_WAIT_TIME_SECONDS), MAX_WAIT_TIME_SECONDS),
    # None: GNAR_SQS_CONCURRENCY (see parse_queue_config).
    "concurrency": (parse_concurrency, None),
    "max_receive_count": (int_between(1, MAX_RECEIVE_COUNT), None),
    "on_poison": (parse_callback, None),
}
REQUIRED_KEYS = ("queue_name", "callback")


@dataclass(frozen=True)
class QueueConfig:
    """One entry of the ``sqs`` option, validated."""

    queue_name: str
    callback: Callback
    interval_seconds: float = 0.0
    attribute_names: list[str] | None = None
    max_number_of_messages: int = MAX_MESSAGES_PER_RECEIVE
    message_attribute_names: list[str] | None = None
    receive_request_attempt_id: str | None = None
    visibility_timeout: int | None = None
    wait_time_seconds: int = MAX_WAIT_TIME_SECONDS
    concurrency: int = DEFAULT_CONCURRENCY
    max_receive_count: int | None = None
    on_poison: Callback | None = None

    @property
    def fifo(self) -> bool:
        return self.queue_name.endswith(".fifo")

    def system_attribute_names(self) -> list[str]:
        """The user's ``attribute_names`` plus what the poller itself reads."""
        names = list(self.attribute_names or [])
        if "All" in names:
            return names
        wanted = ["ApproximateReceiveCount"] + (["MessageGroupId"] if self.fifo else [])
        return names + [name for name in wanted if name not in names]

    def receive_arguments(self, max_messages: int | None = None) -> dict[str, Any]:
        """The ReceiveMessage keyword arguments (without QueueUrl)."""
        arguments = {
            "AttributeNames": self.system_attribute_names(),
            "MaxNumberOfMessages": min(
                self.max_number_of_messages, max_messages or self.max_number_of_messages
            ),
            "MessageAttributeNames": with_trace_attribute_names(self.message_attribute_names),
            "ReceiveRequestAttemptId": self.receive_request_attempt_id,
            "VisibilityTimeout": self.visibility_timeout,
            "WaitTimeSeconds": self.wait_time_seconds,
        }
        return {key: value for key, value in arguments.items() if value is not None}


def parse_queue_config(
    entry: Any, where: str, default_concurrency: int = DEFAULT_CONCURRENCY
) -> QueueConfig:
    if not isinstance(entry, Mapping):
        raise ConfigError(where, f"expected a dict with queue_name and callback, got {entry!r}")
    unknown = sorted(set(entry) - set(QUEUE_KEYS))
    if unknown:
        raise ConfigError(
            where,
            f"unknown key(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(QUEUE_KEYS)}",
        )
    for key in REQUIRED_KEYS:
        if entry.get(key) is None:
            raise ConfigError(f"{where}.{key}", f"is required (in {sorted(entry)!r})")
    values = {}
    for key, (parser, default) in QUEUE_KEYS.items():
        if entry.get(key) is None:
            values[key] = default
            continue
        try:
            values[key] = parser(entry[key])
        except ValueError as error:
            raise ConfigError(f"{where}.{key}", str(error)) from None
    if values["concurrency"] is None:
        values["concurrency"] = default_concurrency
    if values["on_poison"] is not None and values["max_receive_count"] is None:
        raise ConfigError(
            f"{where}.on_poison", "needs max_receive_count (after how many receives it is called)"
        )
    return QueueConfig(**values)


def parse_queue_configs(
    sqs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    default_concurrency: int = DEFAULT_CONCURRENCY,
) -> list[QueueConfig]:
    """The ``sqs`` option (a dict, a list of dicts or ``None``) as :class:`QueueConfig` s."""
    if sqs is None:
        return []
    if isinstance(sqs, Mapping):
        return [parse_queue_config(sqs, "sqs", default_concurrency)]
    if isinstance(sqs, (str, bytes)) or not isinstance(sqs, Sequence):
        raise ConfigError("sqs", f"expected a dict or a list of dicts, got {sqs!r}")
    return [
        parse_queue_config(entry, f"sqs[{index}]", default_concurrency)
        for index, entry in enumerate(sqs)
    ]


def send_runtime_signal(signal: NamedSignal, app: Flask, **kwargs: Any) -> None:
    """Send ``signal``; a receiver that raises is logged and cannot stop the poller."""
    try:
        signal.send(app, **kwargs)
    except Exception:
        log.exception("a receiver of %s raised; the poller carries on", signal.name)


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_missing_queue(error: Exception) -> bool:
    code = error_code(error)
    return "NonExistentQueue" in code or "QueueDoesNotExist" in code


def is_lost_receipt(code: str) -> bool:
    """The receipt handle no longer names a message in flight: ours is gone."""
    return "ReceiptHandleIsInvalid" in code or "MessageNotInflight" in code


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off after a failed SQS call, capped."""

    initial: float = DEFAULT_BACKOFF_SECONDS
    maximum: float = DEFAULT_BACKOFF_MAX_SECONDS

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * 2, self.maximum)


def batch_entries(messages: Sequence[Message], **extra: Any) -> list[dict[str, Any]]:
    return [
        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"], **extra}
        for index, message in enumerate(messages)
    ]


def chunked(items: Sequence[Any], size: int = MAX_ENTRIES_PER_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class PoisonMessage(GnarError):
    """The ``error`` of :data:`~flask_gnar.signals.sqs_message_failed` for a message
    received ``max_receive_count`` times without success; ``__cause__`` is the last
    callback's exception, if it raised."""

    def __init__(self, queue_name: str, message: Message, receive_count: int, limit: int) -> None:
        self.queue_name = queue_name
        self.message = message
        self.receive_count = receive_count
        self.max_receive_count = limit
        super().__init__(
            f"SQS queue {queue_name}: message {message.get('MessageId')} was received "
            f"{receive_count} time(s) (max_receive_count {limit})"
        )


class Failure(NamedTuple):
    """Why a callback did not handle its message."""

    what: str
    error: Exception | None


# The life of a message in hand.
PENDING, RUNNING, HANDLED, RELEASING = "pending", "running", "handled", "releasing"


@dataclass(eq=False)
class Held:
    """One message in hand and what the poller knows of it."""

    message: Message
    #: time.monotonic() at which SQS shows it again, unless the heartbeat extends it.
    invisible_until: float
    state: str = PENDING
    finished_at: float = 0.0
    poisoned: bool = False
    #: Seconds its callback took (``None`` until it ran).
    elapsed: float | None = None

    @property
    def group(self) -> str | None:
        """The FIFO ``MessageGroupId`` (``None`` on a standard queue)."""
        group = self.message.get("Attributes", {}).get("MessageGroupId")
        return None if group is None else str(group)

    @property
    def receive_count(self) -> int:
        try:
            return int(self.message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        except (TypeError, ValueError):
            return 1


class InHand:
    """The messages one poller holds, from their receive until deleted, put back or let go.

    One condition guards them; the receiver, the workers and the keeper wait on it.
    The questions (``in_state``, ``next_startable``, ``idle``, ``waiting``, ``room``)
    expect it held; the other methods take it.
    """

    def __init__(self, config: QueueConfig) -> None:
        self.concurrency = config.concurrency
        self.per_receive = config.max_number_of_messages
        #: Enough to keep every worker busy while the next receive is under way...
        self.unsettled_limit = 2 * config.concurrency + config.max_number_of_messages
        #: ... and the last deletes too, and no more.
        self.limit = self.unsettled_limit + 2 * config.max_number_of_messages
        self.changed = threading.Condition()
        self.held: list[Held] = []
        self.url = ""
        self.stopping = False

    def in_state(self, state: str) -> list[Held]:
        return [held for held in self.held if held.state == state]

    def next_startable(self) -> Held | None:
        """The first pending message whose group (if any) has nothing running."""
        busy = {held.group for held in self.held if held.state == RUNNING}
        for held in self.held:
            if held.state == PENDING and (held.group is None or held.group not in busy):
                return held
        return None

    def idle(self) -> bool:
        """Nothing is running and nothing can start: no callback will finish soon."""
        return not self.in_state(RUNNING) and self.next_startable() is None

    def waiting(self) -> int:
        """Pending messages a worker could take next: one per FIFO group, each of the rest."""
        pending = self.in_state(PENDING)
        groups = {held.group for held in pending if held.group is not None}
        return len(groups) + sum(1 for held in pending if held.group is None)

    def room(self) -> int:
        """How many messages to receive now (0: wait until fewer are waiting)."""
        if self.stopping or self.waiting() >= self.concurrency:
            return 0
        unsettled = len(self.held) - len(self.in_state(HANDLED))
        return max(
            0,
            min(self.per_receive, self.unsettled_limit - unsettled, self.limit - len(self.held)),
        )

    def wait_for_room(self) -> int:
        with self.changed:
            self.changed.wait_for(lambda: self.stopping or self.room() > 0)
            return self.room()

    def take(self, url: str, messages: list[Message], invisible_until: float) -> bool:
        """Hold newly received messages; ``False`` (nothing held) once stopping."""
        with self.changed:
            if self.stopping:
                return False
            self.url = url
            self.held.extend(Held(message, invisible_until) for message in messages)
            self.changed.notify_all()
            return True

    def start_next(self) -> Held | None:
        """Wait for a message a worker may start; ``None`` once stopping."""
        with self.changed:
            while not self.stopping:
                held = self.next_startable()
                if held is not None:
                    held.state = RUNNING
                    return held
                self.changed.wait()
            return None

    def finish(self, held: Held, delete: bool) -> None:
        with self.changed:
            if delete:
                held.state, held.finished_at = HANDLED, time.monotonic()
            else:
                self.held.remove(held)
                # FIFO: the rest of its group waits until it comes back, as SQS orders it.
                for other in self.held:
                    if other.state == PENDING and other.group == held.group is not None:
                        other.state = RELEASING
            self.changed.notify_all()

    def stop(self) -> None:
        with self.changed:
            self.stopping = True
            for held in self.in_state(PENDING):
                held.state = RELEASING
            self.changed.notify_all()

    def drop(self, done: Iterable[Held]) -> None:
        with self.changed:
            gone = set(map(id, done))
            self.held = [held for held in self.held if id(held) not in gone]
            self.changed.notify_all()


class SQSPoller:
    """Polls one queue: a receiving thread, ``concurrency`` workers and a keeper.

    The keeper makes every call but the receive: it extends the visibility of the
    messages in hand every third of the visibility timeout, deletes handled
    messages (batching those that finish together, retrying through an outage
    while they stay invisible) and puts back the messages that will not be handled.
    """

    #: How long a handled message waits for others to share its DeleteMessageBatch
    #: while callbacks are still running (a killed worker repeats at most this much).
    delete_linger_seconds = 0.5

    def __init__(self, queues: SQSQueues, config: QueueConfig) -> None:
        self.queues = queues
        self.config = config
        self.hand = InHand(config)
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._next_beat = float("inf")
        self._retry_at = 0.0
        self._retry_delays: Iterator[float] | None = None
        name = config.queue_name
        self._thread = threading.Thread(target=self._run, name=f"gnar-sqs-{name}", daemon=True)
        self._workers = [
            threading.Thread(target=self._work, name=f"gnar-sqs-{name}-worker-{number}", daemon=True)
            for number in range(config.concurrency)
        ]
        self._keeper = threading.Thread(target=self._keep, name=f"gnar-sqs-{name}-keeper", daemon=True)
        self._client: Any = None
        self._queue_url: str | None = None
        self._visibility_timeout = DEFAULT_VISIBILITY_TIMEOUT

    def __repr__(self) -> str:
        return f"<SQSPoller {self.config.queue_name!r} running={self.running}>"

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def start(self) -> None:
        log.info(
            "Polling SQS queue %s (long polling up to %ss, then a pause of %ss when empty; "
            "concurrency %d)",
            self.config.queue_name,
            self.config.wait_time_seconds,
            self.config.interval_seconds,
            self.config.concurrency,
        )
        for thread in (self._keeper, *self._workers, self._thread):
            thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop; wait (up to ``timeout``) for the callbacks running and their deletes.

        Messages received but not started are put back on the queue at once, as is
        whatever a long poll in progress returns (that poll is not waited for).
        Returns ``False`` when messages were still in hand after ``timeout`` seconds.
        """
        with self.hand.changed:
            if timeout is not None:
                self._deadline = min(self._deadline, time.monotonic() + timeout)
        self.request_stop()
        with self.hand.changed:
            self.hand.changed.wait_for(
                lambda: not self.hand.held or not self._keeper.is_alive(), timeout
            )
            finished = not self.hand.held
        if finished:
            log.info("Stopped polling SQS queue %s", self.config.queue_name)
        return finished

    def request_stop(self) -> None:
        """Ask the poller to stop without waiting (see :meth:`stop`)."""
        self._stopping.set()
        self.hand.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the receiving thread to end (a long poll in progress included)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the receiving thread ---------------------------------------------------------

    def _run(self) -> None:
        delays = self.queues.backoff.delays()
        while not self._stopping.is_set():
            try:
                room = self.hand.wait_for_room()
                if room:
                    self._poll_once(room)
            except Exception as error:
                if self._stopping.is_set():
                    break
                delay = next(delays)
                log.warning(
                    "SQS queue %s: %s; retrying in %.1fs", self.config.queue_name, error, delay
                )
                if is_missing_queue(error):
                    self._forget_queue()
                self._stopping.wait(delay)
            else:
                delays = self.queues.backoff.delays()

    def _poll_once(self, room: int) -> None:
        if not self._receive(room) and self.config.interval_seconds:
            self._stopping.wait(self.config.interval_seconds)

    def _forget_queue(self) -> None:
        self._queue_url = None
        self.queues.forget_queue_url(self.config.queue_name)

    def _resolve_queue(self) -> str:
        if self._client is None:
            self._client = self.queues.client_factory.new_client()
        if self._queue_url is None:
            url = self.queues.queue_url(self.config.queue_name, self._client)
            self._visibility_timeout = self._queue_visibility_timeout(url)
            self._queue_url = url
        return self._queue_url

    def _queue_visibility_timeout(self, url: str) -> int:
        if self.config.visibility_timeout is not None:
            return self.config.visibility_timeout
        attributes = self._client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["VisibilityTimeout"]
        ).get("Attributes", {})
        return int(attributes.get("VisibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT))

    def _receive(self, room: int) -> list[Message]:
        url = self._resolve_queue()
        response = self._client.receive_message(
            QueueUrl=url, **self.config.receive_arguments(room)
        )
        # A long poll returns as soon as it has messages: their clock starts about now.
        received = time.monotonic()
        messages: list[Message] = response.get("Messages", [])
        if messages and not self.hand.take(url, messages, received + self._visibility_timeout):
            self._release(url, messages)
        return messages

    # --- the workers --------------------------------------------------------------------

    def _work(self) -> None:
        while (held := self.hand.start_next()) is not None:
            self.hand.finish(held, self._handle(held))

    def _handle(self, held: Held) -> bool:
        """Run the callback (or, for a poison message, ``on_poison``); ``True``: delete it."""
        limit = self.config.max_receive_count
        count = held.receive_count
        if limit is not None and count > limit:
            return self._poison(held, count, limit, None)
        started = time.perf_counter()
        failure = self._run_callback(self.config.callback, held.message)
        held.elapsed = time.perf_counter() - started
        if failure is None:
            return True
        if limit is not None and count >= limit:
            return self._poison(held, count, limit, failure)
        self._report_failure(held.message, failure.what, failure.error, held.elapsed)
        return False

    def _run_callback(self, callback: Callback, message: Message) -> Failure | None:
        """Run one callback in an app context; why it failed, or ``None``."""
        with self.queues.app.app_context():
            try:
                result = run_traced_callback(
                    self.queues.app, self.config.queue_name, callback, message
                )
            except Exception as error:
                return Failure("the callback raised", error)
        if result is False:
            return Failure("the callback returned False", None)
        return None

    def _report_failure(
        self, message: Message, what: str, error: Exception | None, elapsed: float | None = None
    ) -> None:
        log.log(
            logging.ERROR if error else logging.WARNING,
            "SQS queue %s: %s on message %s; it stays on the queue",
            self.config.queue_name,
            what,
            message.get("MessageId"),
            exc_info=error,
        )
        self._send_failed(message, error, elapsed)

    def _send_failed(self, message: Message, error: Exception | None, elapsed: float | None) -> None:
        self._send_outcome(signals.sqs_message_failed, message, elapsed, error=error)

    def _send_outcome(
        self, signal: NamedSignal, message: Message, elapsed: float | None, **extra: Any
    ) -> None:
        """``sqs_message_handled`` or ``_failed``, in an app context like the callback's."""
        with self.queues.app.app_context():
            send_runtime_signal(
                signal,
                self.queues.app,
                queue_name=self.config.queue_name,
                message=message,
                elapsed=elapsed,
                **extra,
            )

    def _poison(self, held: Held, count: int, limit: int, failure: Failure | None) -> bool:
        """Give up on a message; ``True`` when ``on_poison`` took it (then it is deleted)."""
        poison = PoisonMessage(self.config.queue_name, held.message, count, limit)
        poison.__cause__ = failure.error if failure else None
        on_poison = self.config.on_poison
        log.error(
            "%s%s; %s",
            poison,
            f", the last time {failure.what}" if failure else "",
            "handing it to on_poison" if on_poison else "leaving it to the queue's redrive policy",
            exc_info=failure.error if failure else None,
        )
        self._send_failed(held.message, poison, held.elapsed)
        if on_poison is None:
            return False
        outcome = self._run_callback(on_poison, held.message)
        if outcome is not None:
            log.error(
                "SQS queue %s: on_poison failed on message %s (%s); it stays on the queue",
                self.config.queue_name,
                held.message.get("MessageId"),
                outcome.what,
                exc_info=outcome.error,
            )
            return False
        held.poisoned = True
        return True

    # --- the keeper -----------------------------------------------------------------------

    def _keep(self) -> None:
        while (job := self._next_job()) is not None:
            job()

    def _next_job(self) -> Callable[[], None] | None:
        """Wait until a call is due and return it (to run without the lock); ``None``: done."""
        hand = self.hand
        with hand.changed:
            while True:
                now = time.monotonic()
                if hand.stopping and (not hand.held or now >= self._deadline):
                    self._abandon(hand.held)
                    hand.changed.notify_all()
                    return None
                releasing = hand.in_state(RELEASING)
                if releasing:
                    return lambda: self._put_back(releasing)
                self._let_go_expired(now)
                deletable = self._deletion_due(now)
                if deletable:
                    return lambda: self._delete(deletable)
                extendable = [held for held in hand.held if held.state != RELEASING]
                if extendable and now >= self._next_beat:
                    self._next_beat = now + self._visibility_timeout / 3
                    return lambda: self._extend(extendable)
                if not hand.held:
                    self._next_beat = float("inf")
                elif self._next_beat == float("inf") and self._visibility_timeout > 0:
                    self._next_beat = now + self._visibility_timeout / 3
                hand.changed.wait(self._keeper_sleep(now))

    def _deletion_due(self, now: float) -> list[Held]:
        handled = self.hand.in_state(HANDLED)
        if not handled or now < self._retry_at:
            return []
        if (
            len(handled) >= MAX_ENTRIES_PER_BATCH
            or self.hand.stopping
            or self.hand.idle()
            or handled[0].finished_at + self.delete_linger_seconds <= now
        ):
            return handled[:MAX_ENTRIES_PER_BATCH]
        return []

    def _keeper_sleep(self, now: float) -> float | None:
        moments = [self._next_beat]
        handled = self.hand.in_state(HANDLED)
        if handled:
            moments.append(max(self._retry_at, handled[0].finished_at + self.delete_linger_seconds))
        if self._visibility_timeout > 0:
            moments += [held.invisible_until for held in self.hand.held if held.state != RUNNING]
        if self.hand.stopping:
            moments.append(self._deadline)
        soonest = min(moments)
        return None if soonest == float("inf") else min(max(0.0, soonest - now), threading.TIMEOUT_MAX)

    def _let_go_expired(self, now: float) -> None:
        """Messages whose visibility ran out are another consumer's now: stop owning them."""
        if self._visibility_timeout <= 0:
            return
        expired = [
            held
            for held in self.hand.held
            if held.state in (PENDING, HANDLED) and held.invisible_until <= now
        ]
        for held in expired:
            log.error(
                "SQS queue %s: message %s %s before its visibility could be extended; it will "
                "be delivered again",
                self.config.queue_name,
                held.message.get("MessageId"),
                "was handled but not deleted" if held.state == HANDLED else "was not started",
            )
        if expired:
            self.hand.held = [held for held in self.hand.held if held not in expired]
            self.hand.changed.notify_all()

    def _abandon(self, left: list[Held]) -> None:
        handled = [held for held in left if held.state == HANDLED]
        if handled:
            log.error(
                "SQS queue %s: %d handled message(s) could not be deleted before the stop "
                "deadline; they will come back",
                self.config.queue_name,
                len(handled),
            )

    def _extend(self, batch: list[Held]) -> None:
        for chunk in chunked(batch):
            asked = time.monotonic()
            try:
                response = self._client.change_message_visibility_batch(
                    QueueUrl=self.hand.url,
                    Entries=batch_entries(
                        [held.message for held in chunk], VisibilityTimeout=self._visibility_timeout
                    ),
                )
            except Exception as error:
                log.warning(
                    "SQS queue %s: could not extend the visibility of %d message(s): %s",
                    self.config.queue_name,
                    len(chunk),
                    error,
                )
                continue
            failed = {entry["Id"] for entry in response.get("Failed", [])}
            with self.hand.changed:
                for index, held in enumerate(chunk):
                    if str(index) not in failed:
                        held.invisible_until = asked + self._visibility_timeout

    def _delete(self, batch: list[Held]) -> None:
        try:
            response = self._client.delete_message_batch(
                QueueUrl=self.hand.url, Entries=batch_entries([held.message for held in batch])
            )
        except Exception as error:
            self._retry_deletes(len(batch), error)
            return
        failed = {entry["Id"]: entry for entry in response.get("Failed", [])}
        done, retried, reason = [], 0, ""
        for index, held in enumerate(batch):
            entry = failed.get(str(index))
            if entry is None:
                if not held.poisoned:
                    self._send_handled(held.message, held.elapsed)
                done.append(held)
            elif is_lost_receipt(str(entry.get("Code", ""))):
                log.error(
                    "SQS queue %s: message %s was handled but could not be deleted (%s); it "
                    "will come back",
                    self.config.queue_name,
                    held.message.get("MessageId"),
                    entry.get("Message") or entry.get("Code"),
                )
                done.append(held)
            else:
                retried += 1
                reason = str(entry.get("Message") or entry.get("Code"))
        if retried:
            self._retry_deletes(retried, reason)
        else:
            self._retry_delays = None
        self.hand.drop(done)

    def _retry_deletes(self, count: int, error: object) -> None:
        if self._retry_delays is None:
            self._retry_delays = self.queues.backoff.delays()
        delay = next(self._retry_delays)
        if self._visibility_timeout > 0:
            delay = min(delay, self._visibility_timeout / 3)
        log.warning(
            "SQS queue %s: could not delete %d handled message(s), retrying in %.1fs while "
            "they stay invisible: %s",
            self.config.queue_name,
            count,
            delay,
            error,
        )
        with self.hand.changed:
            self._retry_at = time.monotonic() + delay

    def _send_handled(self, message: Message, elapsed: float | None) -> None:
        self._send_outcome(signals.sqs_message_handled, message, elapsed)

    def _put_back(self, batch: list[Held]) -> None:
        self._release(self.hand.url, [held.message for held in batch])
        self.hand.drop(batch)

    def _release(self, url: str, messages: list[Message]) -> None:
        """Make messages received but not handled visible again at once."""
        for chunk in chunked(messages):
            try:
                self._client.change_message_visibility_batch(
                    QueueUrl=url, Entries=batch_entries(chunk, VisibilityTimeout=0)
                )
            except Exception as error:
                log.warning(
                    "SQS queue %s: could not put back %d message(s) (they return after their "
                    "visibility timeout): %s",
                    self.config.queue_name,
                    len(chunk),
                    error,
                )


#: send_sqs_message's arguments and the SendMessage fields they fill.
SEND_FIELDS = {
    "message_body": "MessageBody",
    "delay_seconds": "DelaySeconds",
    "message_attributes": "MessageAttributes",
    "message_deduplication_id": "MessageDeduplicationId",
    "message_group_id": "MessageGroupId",
}


def message_entry(
    message_body: str,
    delay_seconds: int | None = None,
    message_attributes: Mapping[str, Any] | None = None,
    message_deduplication_id: str | None = None,
    message_group_id: str | None = None,
) -> dict[str, Any]:
    """The SendMessage fields of one message (a SendMessageBatch entry without its ``Id``)."""
    values = {
        "message_body": message_body,
        "delay_seconds": delay_seconds,
        "message_attributes": None if message_attributes is None else dict(message_attributes),
        "message_deduplication_id": message_deduplication_id,
        "message_group_id": message_group_id,
    }
    return {SEND_FIELDS[key]: value for key, value in values.items() if value is not None}


def send_arguments(item: str | Mapping[str, Any], index: int) -> dict[str, Any]:
    """One item of ``send_sqs_messages`` (a body, or a dict of send_sqs_message's arguments)
    as send_sqs_message's arguments."""
    if isinstance(item, str):
        return {"message_body": item}
    if not isinstance(item, Mapping):
        raise TypeError(
            f"send_sqs_messages: message {index} must be a body (str) or a dict of "
            f"send_sqs_message's arguments, got {type(item).__name__}"
        )
    unknown = sorted(set(item) - set(SEND_FIELDS))
    if unknown:
        raise ValueError(
            f"send_sqs_messages: message {index} has unknown key(s) "
            f"{', '.join(map(repr, unknown))}; accepted: {', '.join(SEND_FIELDS)}"
        )
    if not isinstance(item.get("message_body"), str):
        raise ValueError(f"send_sqs_messages: message {index} needs a message_body (a str)")
    return dict(item)


def entry_size(entry: Mapping[str, Any]) -> int:
    """The bytes SQS counts against its size limit: the body and every attribute."""
    size = len(entry["MessageBody"].encode())
    for name, attribute in entry.get("MessageAttributes", {}).items():
        value = attribute.get("StringValue", attribute.get("BinaryValue", b""))
        size += len(name.encode()) + len(str(attribute.get("DataType", "")).encode())
        size += len(value.encode() if isinstance(value, str) else value)
    return size


def batch_chunks(entries: Sequence[Mapping[str, Any]]) -> Iterator[list[int]]:
    """The entries' indices in SendMessageBatch calls of at most 10 messages and 256 KiB.

    A message larger than that on its own is sent alone: SQS takes or refuses it.
    """
    chunk: list[int] = []
    size = 0
    for index, entry in enumerate(entries):
        this = entry_size(entry)
        if chunk and (len(chunk) == MAX_ENTRIES_PER_BATCH or size + this > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(index)
        size += this
    if chunk:
        yield chunk


@dataclass(frozen=True, order=True)
class RefusedMessage:
    """A message SQS did not accept from a SendMessageBatch."""

    index: int
    code: str
    message: str
    sender_fault: bool


class BatchSendError(GnarError):
    """SQS refused some messages of ``send_sqs_messages``; the others were sent.

    ``refused`` names each refused message (its index in the call); ``results`` holds
    the SendMessage result of each message in order, ``None`` for the refused ones.
    """

    def __init__(
        self, queue_name: str, refused: list[RefusedMessage], results: list[dict[str, Any] | None]
    ) -> None:
        self.queue_name = queue_name
        self.refused = refused
        self.results = results
        details = "; ".join(f"message {r.index}: {r.code}: {r.message}" for r in refused)
        super().__init__(
            f"SQS refused {len(refused)} of {len(results)} message(s) sent to queue "
            f"{queue_name}: {details}"
        )


class SQSQueues:
    """Everything GnarSQS keeps for one app (``gnar.sqs``): clients, queue URLs, pollers."""

    def __init__(
        self,
        app: Flask,
        client_factory: ClientFactory,
        configs: list[QueueConfig],
        backoff: Backoff,
        stop_timeout: float,
    ) -> None:
        self.app = app
        self.client_factory = client_factory
        self.configs = configs
        self.backoff = backoff
        self.stop_timeout = stop_timeout
        self.pollers: list[SQSPoller] = []
        self._client = SharedClient(client_factory)
        self._urls: dict[str, str] = {}
        self._urls_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SQSQueues {[config.queue_name for config in self.configs]!r}>"

    @property
    def client(self) -> Any:
        """The app's shared SQS client in this process."""
        return self._client.get()

    def queue_url(self, queue_name: str, client: Any = None) -> str:
        """The URL of ``queue_name``, asked of SQS once and then cached for this app."""
        with self._urls_lock:
            url = self._urls.get(queue_name)
        if url is None:
            url = str((client or self.client).get_queue_url(QueueName=queue_name)["QueueUrl"])
            with self._urls_lock:
                self._urls[queue_name] = url
        return url

    def forget_queue_url(self, queue_name: str) -> None:
        with self._urls_lock:
            self._urls.pop(queue_name, None)

    def _entry(self, queue_name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """One message to send to ``queue_name``, with the trace context when tracing.

        Every message this app sends is built here.
        """
        traced = traced_message_attributes(self.app, queue_name, arguments.get("message_attributes"))
        return message_entry(**{**arguments, "message_attributes": traced})

    def _call_queue(self, queue_name: str, call: Callable[[str], Any]) -> Any:
        """``call(url)``; a queue that turned out missing is looked up afresh next time."""
        try:
            return call(self.queue_url(queue_name))
        except Exception as error:
            if is_missing_queue(error):
                self.forget_queue_url(queue_name)
            raise

    def send_message(
        self,
        queue_name: str,
        message_body: str,
        delay_seconds: int | None = None,
        message_attributes: Mapping[str, Any] | None = None,
        message_deduplication_id: str | None = None,
        message_group_id: str | None = None,
    ) -> dict[str, Any]:
        """Send ``message_body`` to ``queue_name``; the SendMessage response (``MessageId`` ...)."""
        entry = self._entry(
            queue_name,
            {
                "message_body": message_body,
                "delay_seconds": delay_seconds,
                "message_attributes": message_attributes,
                "message_deduplication_id": message_deduplication_id,
                "message_group_id": message_group_id,
            },
        )
        response = self._call_queue(
            queue_name, lambda url: self.client.send_message(QueueUrl=url, **entry)
        )
        return dict(response)

    def send_messages(
        self, queue_name: str, messages: Iterable[str | Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Send many messages with SendMessageBatch; one result per message, in order.

        Each message is a body or a dict of :meth:`send_message`'s arguments. Raises
        :class:`BatchSendError` naming each message SQS refused (after sending the rest).
        """
        arguments = [send_arguments(item, index) for index, item in enumerate(messages)]
        entries = [self._entry(queue_name, message) for message in arguments]
        results: list[dict[str, Any] | None] = [None] * len(entries)
        refused: list[RefusedMessage] = []
        for chunk in batch_chunks(entries):
            batch = [{"Id": str(index), **entries[index]} for index in chunk]
            response = self._call_queue(queue_name, partial(self._send_batch, batch))
            for sent in response.get("Successful", []):
                results[int(sent["Id"])] = {key: value for key, value in sent.items() if key != "Id"}
            refused += [
                RefusedMessage(
                    int(entry["Id"]),
                    str(entry.get("Code", "")),
                    str(entry.get("Message", "")),
                    bool(entry.get("SenderFault", False)),
                )
                for entry in response.get("Failed", [])
            ]
        if refused:
            raise BatchSendError(queue_name, sorted(refused), results)
        return [result or {} for result in results]

    def _send_batch(self, batch: list[dict[str, Any]], url: str) -> Any:
        return self.client.send_message_batch(QueueUrl=url, Entries=batch)

    def start_pollers(self) -> None:
        """One poller per configured queue (run by ``state.start()`` when serving)."""
        self.pollers = [SQSPoller(self, config) for config in self.configs]
        for poller in self.pollers:
            poller.start()

    def stop_pollers(self, timeout: float | None = None) -> bool:
        """Stop every poller within ``timeout`` seconds in all. ``False`` on timeout."""
        timeout = self.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for poller in self.pollers:
            poller.request_stop()
        return all([poller.stop(max(0.0, deadline - time.monotonic())) for poller in self.pollers])

    def stop_at_shutdown(self) -> None:
        if not self.stop_pollers():
            log.warning("SQS pollers still busy after %ss; stopping anyway", self.stop_timeout)

    def pollers_running(self) -> bool:
        """The readiness check: every configured queue has a running poller."""
        return len(self.pollers) == len(self.configs) and all(
            poller.running for poller in self.pollers
        )


class GnarSQS(GnarExtension):
    """Polls SQS queues while the app serves and sends messages (``gnar.send_sqs_message``,
    ``gnar.send_sqs_messages``).

    ``queues`` is the seed's ``sqs`` argument: a dict or a list of dicts with
    ``queue_name`` and ``callback``, the optional ReceiveMessage keys, ``concurrency``,
    ``max_receive_count`` and ``on_poison``.
    ``endpoint_url`` points the clients at a local stand-in (``GNAR_SQS_ENDPOINT_URL``).
    """

    extension_name = "GnarSQS"
    configured_signal = signals.sqs_configured
    options_accepted = frozenset({"queues", "endpoint_url"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        configs = parse_queue_configs(
            self.option("queues"),
            settings.get("SQS_CONCURRENCY", parse_concurrency, default=DEFAULT_CONCURRENCY),
        )
        client_settings = resolve_client_settings(
            settings, "sqs", endpoint_url=self.option("endpoint_url")
        )
        factory = ClientFactory(client_settings)
        if configs:
            factory.region()
        queues = SQSQueues(
            app,
            factory,
            configs,
            Backoff(
                initial=settings.get(
                    "SQS_BACKOFF_SECONDS", parse_positive_float, default=DEFAULT_BACKOFF_SECONDS
                ),
                maximum=settings.get(
                    "SQS_BACKOFF_MAX_SECONDS",
                    parse_positive_float,
                    default=DEFAULT_BACKOFF_MAX_SECONDS,
                ),
            ),
            stop_timeout=settings.get(
                "SQS_STOP_TIMEOUT_SECONDS",
                parse_non_negative_float,
                default=DEFAULT_STOP_TIMEOUT_SECONDS,
            ),
        )
        state.provide(
            sqs=queues,
            send_sqs_message=queues.send_message,
            send_sqs_messages=queues.send_messages,
        )
        if configs:
            state.on_start(queues.start_pollers)
            state.on_stop(queues.stop_at_shutdown)
            state.readiness_checks["sqs"] = queues.pollers_running
        log.log(
            logging.INFO if configs else logging.DEBUG,
            "SQS configured for %d queue(s) (%s)",
            len(configs),
            client_settings.describe(),
        )
        return {"queues": [config.queue_name for config in configs]}
