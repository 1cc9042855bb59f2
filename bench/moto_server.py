"""The project's moto stand-in without moto's cost per message of counting the queue.

moto 5.2 evaluates every queue attribute (the ``ApproximateNumberOfMessages*`` counts
walk all messages) for each message it receives, to read the retention period, and for
each message it sends, to read ``ContentBasedDeduplication``. With a backlog of a few
hundred messages that makes a receive of 10 take 100-200 ms, whatever the poller does,
which real SQS does not. For the benchmark only, those two look-ups read the one
attribute they need. Run as ``python bench/moto_server.py -H HOST -p PORT``.
"""

from __future__ import annotations

import threading
from typing import Any

from flask_gnar._moto_server import serialise_receives


def skip_counting() -> None:
    from moto.sqs.models import Queue, SQSBackend

    full_attributes = Queue.attributes.fget
    assert full_attributes is not None
    sending = threading.local()

    def attributes(self: Any) -> dict[str, Any]:
        if getattr(sending, "active", False):
            if not self.fifo_queue:
                return {}
            return {"ContentBasedDeduplication": str(self.content_based_deduplication).lower()}
        return full_attributes(self)  # type: ignore[no-any-return]

    def while_sending(method: Any) -> Any:
        def send(*args: Any, **kwargs: Any) -> Any:
            sending.active = True
            try:
                return method(*args, **kwargs)
            finally:
                sending.active = False

        return send

    def retained(self: Any, queue_name: str, message: Any) -> bool:
        period = int(self.get_queue(queue_name).message_retention_period)
        return bool(period + message.sent_timestamp / 1000 > time_now())

    from moto.core.utils import unix_time as time_now

    Queue.attributes = property(attributes)  # type: ignore[method-assign,assignment]
    SQSBackend.send_message = while_sending(SQSBackend.send_message)  # type: ignore[method-assign]
    SQSBackend.send_message_batch = while_sending(SQSBackend.send_message_batch)  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = retained  # type: ignore[method-assign]


def main() -> None:
    from moto.server import main as moto_main

    serialise_receives()
    skip_counting()
    moto_main()


if __name__ == "__main__":
    main()
