"""The blinker signals flask-gnar sends.

The sender is always the Flask app. Lifecycle signals are sent during
:func:`~flask_gnar.create_app` or ``init_app``; a receiver that raises stops
start-up. Runtime signals are sent while the app serves; a receiver that raises
there is logged and ignored so it cannot stop a worker.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent by ``create_app`` before the first extension is initialised.
preconfig = _signals.signal("gnar.preconfig")
#: Sent by ``create_app`` after the last extension is initialised.
postconfig = _signals.signal("gnar.postconfig")

#: GnarLogging is configured. Keyword arguments: ``level`` (the level name).
logging_configured = _signals.signal("gnar.logging-configured")
#: GnarArgon2 is configured. Keyword arguments: ``hasher`` (the PasswordHasher).
argon2_configured = _signals.signal("gnar.argon2-configured")
#: GnarDB is configured. Keyword arguments: ``db`` (the postgres.Postgres).
database_configured = _signals.signal("gnar.database-configured")
#: GnarBlueprints registered its blueprints. Keyword arguments: ``blueprints`` (names).
blueprints_configured = _signals.signal("gnar.blueprints-configured")
#: GnarErrors registered its error handler.
errorhandler_configured = _signals.signal("gnar.errorhandler-configured")
#: GnarJWT is configured. Keyword arguments: ``jwt`` (the JWTManager).
jwt_configured = _signals.signal("gnar.jwt-configured")
#: GnarCORS is configured. Keyword arguments: ``origins`` (allowed origins).
cors_configured = _signals.signal("gnar.cors-configured")
#: GnarSQS is configured. Keyword arguments: ``queues`` (queue names polled).
sqs_configured = _signals.signal("gnar.sqs-configured")
#: GnarSES is configured.
ses_configured = _signals.signal("gnar.ses-configured")
#: GnarPeer is configured. Keyword arguments: ``timeout`` (seconds), ``retries``.
peer_configured = _signals.signal("gnar.peer-configured")
#: GnarTracing is configured. Keyword arguments: ``enabled`` (bool), ``service_name``
#: (the traces' service name, ``None`` when off).
tracing_configured = _signals.signal("gnar.tracing-configured")
#: GnarMetrics is configured. Keyword arguments: ``path`` (the scrape path, ``None`` when
#: ``GNAR_METRICS`` is false).
metrics_configured = _signals.signal("gnar.metrics-configured")
#: GnarHealth registered its probes. Keyword arguments: ``paths`` (the URL rules).
health_configured = _signals.signal("gnar.health-configured")

#: A blueprint module failed to import in development. Keyword arguments:
#: ``module`` (dotted name), ``error`` (the exception).
blueprint_failed = _signals.signal("gnar.blueprint-failed")
#: The app started serving (start hooks have run) in this process.
serving_started = _signals.signal("gnar.serving-started")
#: The app is stopping (before stop hooks run). Keyword arguments: ``reason``.
serving_stopping = _signals.signal("gnar.serving-stopping")
#: An SQS message was handled and deleted. Keyword arguments: ``queue_name``, ``message``,
#: ``elapsed`` (seconds the callback took).
sqs_message_handled = _signals.signal("gnar.sqs-message-handled")
#: An SQS message was left on its queue. Keyword arguments: ``queue_name``,
#: ``message``, ``error`` (the exception, or ``None`` when the callback returned False),
#: ``elapsed`` (seconds the callback took).
sqs_message_failed = _signals.signal("gnar.sqs-message-failed")
#: A peer request finished. Keyword arguments: ``service`` (``None`` for
#: ``gnar.external``), ``method``, ``url``,
#: ``status`` (``None`` on a connection error), ``elapsed`` (seconds).
peer_request = _signals.signal("gnar.peer-request")
