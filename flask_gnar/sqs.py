"""GnarSQS: long-polling SQS queues in background threads, and send_sqs_message."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from blinker import NamedSignal
from flask import Flask

from . import signals
from .aws import ClientFactory, SharedClient, resolve_client_settings
from .config import Settings, parse_float, parse_int, parse_list, parse_str
from .exceptions import ConfigError
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)

Message = dict[str, Any]
Callback = Callable[[Message], Any]

#: SQS's own limits.
MAX_WAIT_TIME_SECONDS = 20
MAX_MESSAGES_PER_RECEIVE = 10
MAX_VISIBILITY_TIMEOUT = 43200
#: The queue's visibility timeout when SQS does not tell us (the SQS default).
DEFAULT_VISIBILITY_TIMEOUT = 30

DEFAULT_BACKOFF_SECONDS = 0.5
DEFAULT_BACKOFF_MAX_SECONDS = 30.0
DEFAULT_STOP_TIMEOUT_SECONDS = 25.0


def float_from(low: float, *, above: bool = False) -> Callable[[Any], float]:
    """A parser of numbers of at least ``low`` (or above it, with ``above=True``)."""

    def parse(value: Any) -> float:
        number = parse_float(value)
        if number < low or (above and number == low):
            bound = "above" if above else "of at least"
            raise ValueError(f"expected a number {bound} {low:g}, got {number:g}")
        return number

    return parse


parse_non_negative_float = float_from(0)
parse_positive_float = float_from(0, above=True)


def int_between(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = parse_int(value)
        if not low <= number <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {number}")
        return number

    return parse


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

    def receive_arguments(self) -> dict[str, Any]:
        """The ReceiveMessage keyword arguments (without QueueUrl)."""
        arguments = {
            "AttributeNames": self.attribute_names,
            "MaxNumberOfMessages": self.max_number_of_messages,
            "MessageAttributeNames": self.message_attribute_names,
            "ReceiveRequestAttemptId": self.receive_request_attempt_id,
            "VisibilityTimeout": self.visibility_timeout,
            "WaitTimeSeconds": self.wait_time_seconds,
        }
        return {key: value for key, value in arguments.items() if value is not None}


def parse_queue_config(entry: Any, where: str) -> QueueConfig:
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
    return QueueConfig(**values)


def parse_queue_configs(
    sqs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
) -> list[QueueConfig]:
    """The ``sqs`` option (a dict, a list of dicts or ``None``) as :class:`QueueConfig` s."""
    if sqs is None:
        return []
    if isinstance(sqs, Mapping):
        return [parse_queue_config(sqs, "sqs")]
    if isinstance(sqs, (str, bytes)) or not isinstance(sqs, Sequence):
        raise ConfigError("sqs", f"expected a dict or a list of dicts, got {sqs!r}")
    return [parse_queue_config(entry, f"sqs[{index}]") for index, entry in enumerate(sqs)]


def send_runtime_signal(signal: NamedSignal, app: Flask, **kwargs: Any) -> None:
    """Send ``signal``; a receiver that raises is logged and cannot stop the poller."""
    try:
        signal.send(app, **kwargs)
    except Exception:
        log.exception("a receiver of %s raised; the poller carries on", signal.name)


def is_missing_queue(error: Exception) -> bool:
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return "NonExistentQueue" in code or "QueueDoesNotExist" in code


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


@dataclass
class HeldMessages:
    """The messages a poller holds: received, not yet deleted, released or failed."""

    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Message]:
        with self.lock:
            return list(self.messages)

    def drop(self, message: Message) -> None:
        with self.lock:
            self.messages = [held for held in self.messages if held is not message]


class Heartbeat:
    """Extends the visibility of held messages while a batch is being handled.

    Every third of the visibility timeout the held messages are made invisible
    for one more full timeout, so a slow callback does not see its message
    delivered to another consumer at the same time.
    """

    def __init__(self, client: Any, queue_url: str, held: HeldMessages, timeout: int) -> None:
        self.client = client
        self.queue_url = queue_url
        self.held = held
        self.timeout = timeout
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gnar-sqs-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self.timeout > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self.timeout / 3):
            messages = self.held.snapshot()
            if not messages:
                continue
            try:
                self.client.change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=batch_entries(messages, VisibilityTimeout=self.timeout),
                )
            except Exception as error:
                log.warning("could not extend the visibility of %d message(s): %s", len(messages), error)


class SQSPoller:
    """Long-polls one queue in a daemon thread and hands each message to its callback."""

    def __init__(self, queues: SQSQueues, config: QueueConfig) -> None:
        self.queues = queues
        self.config = config
        self._stopping = threading.Event()
        self._handling = threading.Condition()
        self._busy = False
        self._thread = threading.Thread(
            target=self._run, name=f"gnar-sqs-{config.queue_name}", daemon=True
        )
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
            "Polling SQS queue %s (long polling up to %ss, then a pause of %ss when empty)",
            self.config.queue_name,
            self.config.wait_time_seconds,
            self.config.interval_seconds,
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the poller to stop; wait (up to ``timeout``) for the batch in hand.

        A poller waiting in a long poll is not waited for: whatever that poll
        returns is put back on the queue at once. Returns ``False`` when the
        batch in hand was still being handled after ``timeout`` seconds.
        """
        self.request_stop()
        with self._handling:
            finished = self._handling.wait_for(lambda: not self._busy, timeout)
        if finished:
            log.info("Stopped polling SQS queue %s", self.config.queue_name)
        return finished

    def request_stop(self) -> None:
        """Ask the poller to stop without waiting (see :meth:`stop`)."""
        with self._handling:
            self._stopping.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end (a long poll in progress included)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _set_busy(self, busy: bool) -> None:
        with self._handling:
            self._busy = busy
            self._handling.notify_all()

    def _run(self) -> None:
        delays = self.queues.backoff.delays()
        while not self._stopping.is_set():
            try:
                self._poll_once()
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

    def _poll_once(self) -> None:
        messages = self._receive()
        if messages:
            self._handle_batch(messages)
        elif self.config.interval_seconds:
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

    def _receive(self) -> list[Message]:
        url = self._resolve_queue()
        response = self._client.receive_message(QueueUrl=url, **self.config.receive_arguments())
        messages: list[Message] = response.get("Messages", [])
        with self._handling:
            if not self._stopping.is_set():
                self._busy = bool(messages)
                return messages
        self._release(url, messages)
        return []

    def _handle_batch(self, messages: list[Message]) -> None:
        url = self._queue_url
        assert url is not None
        held = HeldMessages(list(messages))
        handled: list[Message] = []
        seconds: dict[int, float] = {}
        try:
            with Heartbeat(self._client, url, held, self._visibility_timeout):
                for message in messages:
                    if self._stopping.is_set():
                        break
                    if self._run_callback(message, seconds):
                        handled.append(message)
                    else:
                        held.drop(message)
            for message in handled:
                held.drop(message)
            self._delete(url, handled, seconds)
            self._release(url, held.snapshot())
        finally:
            self._set_busy(False)

    def _run_callback(self, message: Message, seconds: dict[int, float]) -> bool:
        """Run the callback in an app context; ``False`` when the message must stay.

        ``seconds[id(message)]`` gets the time the callback took.
        """
        with self.queues.app.app_context():
            started = time.perf_counter()
            try:
                result = self.config.callback(message)
            except Exception as error:
                seconds[id(message)] = time.perf_counter() - started
                self._report_failure(message, "the callback raised", error, seconds[id(message)])
                return False
            seconds[id(message)] = time.perf_counter() - started
            if result is False:
                self._report_failure(message, "the callback returned False", None, seconds[id(message)])
                return False
        return True

    def _report_failure(
        self, message: Message, what: str, error: Exception | None, elapsed: float
    ) -> None:
        log.log(
            logging.ERROR if error else logging.WARNING,
            "SQS queue %s: %s on message %s; it stays on the queue",
            self.config.queue_name,
            what,
            message.get("MessageId"),
            exc_info=error,
        )
        send_runtime_signal(
            signals.sqs_message_failed,
            self.queues.app,
            queue_name=self.config.queue_name,
            message=message,
            error=error,
            elapsed=elapsed,
        )

    def _delete(self, url: str, messages: list[Message], seconds: dict[int, float]) -> None:
        if not messages:
            return
        try:
            response = self._client.delete_message_batch(
                QueueUrl=url, Entries=batch_entries(messages)
            )
        except Exception as error:
            log.error(
                "SQS queue %s: could not delete %d handled message(s), they will come back: %s",
                self.config.queue_name,
                len(messages),
                error,
            )
            return
        failed = {entry["Id"] for entry in response.get("Failed", [])}
        for index, message in enumerate(messages):
            if str(index) in failed:
                log.error(
                    "SQS queue %s: message %s was handled but could not be deleted",
                    self.config.queue_name,
                    message.get("MessageId"),
                )
                continue
            with self.queues.app.app_context():
                send_runtime_signal(
                    signals.sqs_message_handled,
                    self.queues.app,
                    queue_name=self.config.queue_name,
                    message=message,
                    elapsed=seconds.get(id(message)),
                )

    def _release(self, url: str, messages: list[Message]) -> None:
        """Make messages received but not handled visible again at once."""
        if not messages:
            return
        try:
            self._client.change_message_visibility_batch(
                QueueUrl=url, Entries=batch_entries(messages, VisibilityTimeout=0)
            )
        except Exception as error:
            log.warning(
                "SQS queue %s: could not put back %d message(s) (they return after their "
                "visibility timeout): %s",
                self.config.queue_name,
                len(messages),
                error,
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
        optional = {
            "DelaySeconds": delay_seconds,
            "MessageAttributes": message_attributes,
            "MessageDeduplicationId": message_deduplication_id,
            "MessageGroupId": message_group_id,
        }
        arguments = {key: value for key, value in optional.items() if value is not None}
        try:
            response = self.client.send_message(
                QueueUrl=self.queue_url(queue_name), MessageBody=message_body, **arguments
            )
        except Exception as error:
            if is_missing_queue(error):
                self.forget_queue_url(queue_name)
            raise
        return dict(response)

    def start_pollers(self) -> None:
        """One poller thread per configured queue (run by ``state.start()`` when serving)."""
        self.pollers = [SQSPoller(self, config) for config in self.configs]
        for poller in self.pollers:
            poller.start()

    def stop_pollers(self, timeout: float | None = None) -> bool:
        """Stop every poller; each finishes the message in hand. ``False`` on timeout."""
        timeout = self.stop_timeout if timeout is None else timeout
        for poller in self.pollers:
            poller.request_stop()
        return all([poller.stop(timeout) for poller in self.pollers])

    def stop_at_shutdown(self) -> None:
        if not self.stop_pollers():
            log.warning("SQS pollers still busy after %ss; stopping anyway", self.stop_timeout)

    def pollers_running(self) -> bool:
        """The readiness check: every configured queue has a running poller."""
        return len(self.pollers) == len(self.configs) and all(
            poller.running for poller in self.pollers
        )


class GnarSQS(GnarExtension):
    """Polls SQS queues while the app serves and sends messages (``gnar.send_sqs_message``).

    ``queues`` is the seed's ``sqs`` argument: a dict or a list of dicts with
    ``queue_name`` and ``callback`` and the optional ReceiveMessage keys.
    ``endpoint_url`` points the clients at a local stand-in (``GNAR_SQS_ENDPOINT_URL``).
    """

    extension_name = "GnarSQS"
    configured_signal = signals.sqs_configured
    options_accepted = frozenset({"queues", "endpoint_url"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        configs = parse_queue_configs(self.option("queues"))
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
        state.provide(sqs=queues, send_sqs_message=queues.send_message)
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
