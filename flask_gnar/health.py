"""GnarHealth: liveness and readiness endpoints for Kubernetes probes."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify

from . import signals
from .config import Settings, parse_bool
from .extension import GnarExtension
from .state import GnarState

DEFAULT_LIVE_PATH = "/health/live"
DEFAULT_READY_PATH = "/health/ready"


class GnarHealth(GnarExtension):
    """``GET /health/live`` (the process answers) and ``GET /health/ready``.

    Readiness runs every check registered in ``state.readiness_checks`` (the
    database answers, the SQS pollers run) and is false while the app drains
    after SIGTERM. Both answer without auth and never carry a refreshed token.
    """

    extension_name = "GnarHealth"
    configured_signal = signals.health_configured
    options_accepted = frozenset({"enabled", "live_path", "ready_path"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        enabled = settings.get("HEALTH_ENABLED", parse_bool, explicit=self.option("enabled"), default=True)
        if not enabled:
            return {"paths": []}
        live_path: str = settings.get("HEALTH_LIVE_PATH", explicit=self.option("live_path"), default=DEFAULT_LIVE_PATH)
        ready_path: str = settings.get("HEALTH_READY_PATH", explicit=self.option("ready_path"), default=DEFAULT_READY_PATH)

        def live() -> Any:
            return jsonify({"live": True})

        def ready() -> Any:
            checks = state.ready()
            if state.draining:
                checks["draining"] = False
            is_ready = all(checks.values())
            return jsonify({"ready": is_ready, "checks": checks}), 200 if is_ready else 503

        app.add_url_rule(live_path, "gnar_health_live", live, methods=["GET"])
        app.add_url_rule(ready_path, "gnar_health_ready", ready, methods=["GET"])
        return {"paths": [live_path, ready_path]}
