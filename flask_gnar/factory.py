"""create_app: a Flask app with every flask-gnar extension, in the seed's order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from . import signals
from .auth import GnarJWT
from .blueprints import GnarBlueprints
from .cli import gnar_cli
from .cors import GnarCORS
from .db import GnarDB
from .errors import GnarErrors
from .extension import GnarExtension
from .health import GnarHealth
from .json_provider import GnarJSONProvider
from .log import GnarLogging
from .metrics import GnarMetrics
from .passwords import GnarArgon2
from .peer import GnarPeer
from .ses import GnarSES
from .sessions import GnarSessionInterface
from .sqs import GnarSQS
from .state import init_state
from .tracing import GnarTracing


def create_app(
    name: str,
    production: bool = False,
    port: int = 8000,
    *,
    env_prefix: str = "GNAR",
    log_level: str | None = None,
    blueprint_modules: str | list[str] | None = None,
    sqs: Mapping[str, Any] | list[Mapping[str, Any]] | None = None,
    no_db: bool = False,
    no_jwt: bool = False,
    config: Mapping[str, Any] | None = None,
) -> Flask:
    """Build a fully configured :class:`flask.Flask` for the package ``name``.

    ``name`` is the top-level package holding ``app/``. ``config`` is applied to
    ``app.config`` before any extension reads it. :data:`~flask_gnar.signals.preconfig`
    is sent before the first extension and :data:`~flask_gnar.signals.postconfig`
    after the last.
    """
    app = Flask(name)
    app.json = GnarJSONProvider(app)
    app.session_interface = GnarSessionInterface()
    if config:
        app.config.update(config)
    app.config["GNAR_ENV_PREFIX"] = env_prefix
    init_state(app, name=name, production=production, port=port, env_prefix=env_prefix)
    gnar_cli(app)
    signals.preconfig.send(app)
    for extension in extensions_in_seed_order(
        log_level=log_level,
        blueprint_modules=blueprint_modules,
        sqs=sqs,
        no_db=no_db,
        no_jwt=no_jwt,
    ):
        extension.init_app(app)
    signals.postconfig.send(app)
    return app


def extensions_in_seed_order(
    *,
    log_level: str | None,
    blueprint_modules: str | list[str] | None,
    sqs: Mapping[str, Any] | list[Mapping[str, Any]] | None,
    no_db: bool,
    no_jwt: bool,
) -> list[GnarExtension]:
    """configure_logger (then tracing), argon2, database, blueprints, errorhandler, jwt, after_request (CORS), sqs, ses."""
    modules = [blueprint_modules] if isinstance(blueprint_modules, str) else blueprint_modules
    return [
        GnarLogging(level=log_level),
        GnarTracing(),
        GnarArgon2(),
        *([] if no_db else [GnarDB()]),
        GnarBlueprints(modules=modules),
        GnarErrors(),
        *([] if no_jwt else [GnarJWT()]),
        GnarCORS(),
        GnarSQS(queues=sqs),
        GnarSES(),
        GnarPeer(),
        GnarHealth(),
        GnarMetrics(),
    ]
