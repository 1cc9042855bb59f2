"""A flask-gnar service for the tracing tests, run twice (as two services) under bjoern.

TRACY_PORT: the port; TRACY_QUEUE: an SQS queue to poll (none when unset);
TRACY_PRODUCTION: "0" for the development mode (the W3C harness against werkzeug).
"""

import logging
import os

from flask_gnar import create_app, serve

log = logging.getLogger(__name__)


def on_message(message):
    """A body starting with "reject" stays on the queue (the callback returns False)."""
    log.info("handled %s", message["Body"])
    return not message["Body"].startswith("reject")


queue = os.environ.get("TRACY_QUEUE")
app = create_app(
    "tracy",
    production=os.environ.get("TRACY_PRODUCTION", "1") == "1",
    port=int(os.environ.get("TRACY_PORT", "9600")),
    no_db=True,
    no_jwt=True,
    sqs={"queue_name": queue, "callback": on_message, "wait_time_seconds": 1} if queue else None,
)

if __name__ == "__main__":
    serve(app, host="127.0.0.1")
