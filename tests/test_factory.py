"""create_app: every keyword of the contract, the seed's step order, signals."""

import subprocess
import sys

import pytest
from flask import Flask

from flask_gnar import ConfigError, create_app, signals

STEP_SIGNALS = [
    signals.preconfig,
    signals.logging_configured,
    signals.argon2_configured,
    signals.database_configured,
    signals.blueprints_configured,
    signals.errorhandler_configured,
    signals.jwt_configured,
    signals.cors_configured,
    signals.sqs_configured,
    signals.ses_configured,
    signals.peer_configured,
    signals.postconfig,
]


def record_signals(sent):
    receivers = []
    for signal in STEP_SIGNALS:
        def receiver(sender, _name=signal.name, **kwargs):
            sent.append((_name, sender))
        signal.connect(receiver)
        receivers.append((signal, receiver))
    return receivers


def test_returns_a_flask_app_with_the_callers_config_applied_first():
    application = create_app("snowy", no_db=True, no_jwt=True,
                             config={"GNAR_SEED_ERROR_STATUS": True, "TESTING": True})
    assert isinstance(application, Flask) and application.name == "snowy"
    assert application.config["TESTING"] is True
    assert application.test_client().get("/nowhere").status_code == 200


def test_signals_frame_the_steps_with_the_app_as_sender():
    sent = []
    receivers = record_signals(sent)
    try:
        application = create_app("snowy", no_db=True, no_jwt=True)
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
    names = [name for name, _ in sent]
    assert names[0] == "gnar.preconfig" and names[-1] == "gnar.postconfig"
    assert all(sender is application for _, sender in sent)
    order = [s.name for s in STEP_SIGNALS]
    assert names == sorted(names, key=order.index), "steps run in the seed's order"
    assert "gnar.logging-configured" in names and "gnar.blueprints-configured" in names


def test_a_preconfig_receiver_can_adjust_config_before_extensions_read_it():
    def prefer_seed_errors(app):
        app.config["GNAR_SEED_ERROR_STATUS"] = True

    with signals.preconfig.connected_to(prefer_seed_errors):
        application = create_app("snowy", no_db=True, no_jwt=True)
    assert application.test_client().get("/nowhere").status_code == 200


def test_a_failing_lifecycle_receiver_stops_start_up():
    def refuse(app):
        raise RuntimeError("not today")

    with signals.postconfig.connected_to(refuse), pytest.raises(RuntimeError, match="not today"):
        create_app("snowy", no_db=True, no_jwt=True)


def test_env_prefix_applies_to_every_setting(monkeypatch):
    monkeypatch.setenv("MY_APP_SEED_ERROR_STATUS", "yes")
    application = create_app("snowy", env_prefix="MY_APP", no_db=True, no_jwt=True)
    assert application.test_client().get("/nowhere").status_code == 200


def test_a_malformed_setting_stops_start_up_with_one_error(monkeypatch):
    monkeypatch.setenv("GNAR_SEED_ERROR_STATUS", "perhaps")
    with pytest.raises(ConfigError, match="GNAR_SEED_ERROR_STATUS"):
        create_app("snowy", no_db=True, no_jwt=True)


def test_importing_flask_gnar_has_no_side_effects():
    code = (
        "import logging, os; before = dict(os.environ); handlers = list(logging.getLogger().handlers);"
        "import flask_gnar, flask_gnar.testing;"
        "assert dict(os.environ) == before; assert logging.getLogger().handlers == handlers;"
        "import sys; assert 'bjoern' not in sys.modules; print('clean')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "clean", result.stderr
