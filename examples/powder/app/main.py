"""powder, the worker: polls piste's events, calls piste through gnar.peer."""

import os

from flask_gnar import create_app, serve

from .events import handle_event

app = create_app(
    "powder",
    production=os.environ.get("POWDER_PRODUCTION") == "1",
    port=int(os.environ.get("POWDER_HTTP_PORT", "9401")),
    no_db=True,
    sqs={"queue_name": "piste-events", "callback": handle_event, "wait_time_seconds": 20},
)

if __name__ == "__main__":
    serve(app)
