"""moto's server with one fix: a message is received by one consumer at a time.

moto checks that a message is visible and marks it received without a lock, so two
pollers receiving at the same moment can both get the same message, which real SQS
never does within the visibility timeout. Here each scan of a queue runs under a lock;
long polling waits outside it. Run as ``python -m flask_gnar._moto_server -H HOST -p PORT``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

POLL_INTERVAL_SECONDS = 0.02


def serialise_receives() -> None:
    from moto.sqs.models import SQSBackend

    scan = SQSBackend.receive_message
    lock = threading.Lock()

    def receive_message(
        self: Any, queue_name: str, count: int, wait_seconds_timeout: int,
        visibility_timeout: int, message_attribute_names: list[str] | None = None,
    ) -> Any:
        polling_end = time.monotonic() + (wait_seconds_timeout or 0)
        while True:
            with lock:
                result = scan(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            if result or time.monotonic() >= polling_end:
                return result
            time.sleep(POLL_INTERVAL_SECONDS)

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


def main() -> None:
    from moto.server import main as moto_main

    serialise_receives()
    moto_main()


if __name__ == "__main__":
    main()
