"""piste, the user service: ``python -m piste.app.main`` from examples/.

Its schema is in ``piste/migrations/``: applied at start-up in development,
by ``flask --app piste.app.main gnar migrate`` in production.
"""

import os
from importlib.util import find_spec

from flask_gnar import create_app, serve


def tracing_installed():
    """flask-gnar[tracing] brings OpenTelemetry's SDK (find_spec raises without its parent)."""
    return find_spec("opentelemetry") is not None and find_spec("opentelemetry.sdk") is not None


app = create_app(
    "piste",
    production=os.environ.get("PISTE_PRODUCTION") == "1",
    port=int(os.environ.get("PISTE_HTTP_PORT", "9400")),
    # traced when flask-gnar[tracing] is installed, unless GNAR_TRACING says otherwise
    config={"GNAR_TRACING": os.environ.get("GNAR_TRACING", str(tracing_installed()))},
)

if __name__ == "__main__":
    serve(app)
