"""powder, the worker: polls piste's events, calls piste through gnar.peer."""

import os
from importlib.util import find_spec

from flask_gnar import create_app, serve

from .events import handle_event


def tracing_installed():
    """flask-gnar[tracing] brings OpenTelemetry's SDK (find_spec raises without its parent)."""
    return find_spec("opentelemetry") is not None and find_spec("opentelemetry.sdk") is not None


app = create_app(
    "powder",
    production=os.environ.get("POWDER_PRODUCTION") == "1",
    port=int(os.environ.get("POWDER_HTTP_PORT", "9401")),
    # traced when flask-gnar[tracing] is installed, unless GNAR_TRACING says otherwise
    config={"GNAR_TRACING": os.environ.get("GNAR_TRACING", str(tracing_installed()))},
    no_db=True,
    sqs={"queue_name": "piste-events", "callback": handle_event, "wait_time_seconds": 20},
)

if __name__ == "__main__":
    serve(app)
