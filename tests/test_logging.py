"""GnarLogging: the seed's configure_logger, idempotent, with a JSON option."""

import json
import logging

import pytest
from flask import Flask

from flask_gnar import ConfigError, GnarLogging, create_app, signals
from flask_gnar.log import StdoutHandler


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def our_handlers():
    return [h for h in logging.getLogger().handlers if isinstance(h, StdoutHandler)]


def build(**env_and_options):
    return create_app("snowy", no_db=True, no_jwt=True, **env_and_options)


def test_default_level_is_info_and_logs_go_to_stdout(capsys):
    build()
    assert logging.getLogger().level == logging.INFO
    logging.getLogger("lift").info("chair %s is running", 4)
    out = capsys.readouterr().out
    assert "INFO     lift:" in out and "chair 4 is running" in out


def test_level_order_argument_then_app_variable_then_global(monkeypatch):
    monkeypatch.setenv("GNAR_LOG_LEVEL", "ERROR")
    build()
    assert logging.getLogger().level == logging.ERROR
    monkeypatch.setenv("GNAR_SNOWY_LOG_LEVEL", "WARNING")
    build()
    assert logging.getLogger().level == logging.WARNING
    build(log_level="DEBUG")
    assert logging.getLogger().level == logging.DEBUG


def test_app_level_variable_uses_the_env_prefix_and_app_name(monkeypatch):
    monkeypatch.setenv("MY_APP_SNOWY_LOG_LEVEL", "CRITICAL")
    build(env_prefix="MY_APP")
    assert logging.getLogger().level == logging.CRITICAL


def test_bad_level_stops_start_up_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GNAR_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError, match="GNAR_LOG_LEVEL"):
        build()


def test_format_and_msec_format(monkeypatch, capsys):
    monkeypatch.setenv("GNAR_LOG_FORMAT", "%(asctime)s|%(levelname)s|%(message)s")
    monkeypatch.setenv("GNAR_LOG_FORMAT_MSEC", "%s,%03d!")
    build()
    logging.getLogger("lift").warning("wind hold")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    stamp, level, message = line.split("|")
    assert stamp.endswith("!") and "," in stamp
    assert (level, message) == ("WARNING", "wind hold")


def test_json_format_for_log_collectors(monkeypatch, capsys):
    monkeypatch.setenv("GNAR_LOG_JSON", "true")
    build()
    capsys.readouterr()
    try:
        raise KeyError("boot")
    except KeyError:
        logging.getLogger("lift").exception("binding failed")
    entry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert entry["level"] == "ERROR" and entry["logger"] == "lift"
    assert entry["message"] == "binding failed" and "KeyError" in entry["exc_info"]


def test_two_apps_and_two_calls_never_double_the_handler(capsys):
    build()
    build()
    GnarLogging(Flask("plain"))
    assert len(our_handlers()) == 1
    capsys.readouterr()
    logging.getLogger("lift").info("once")
    assert capsys.readouterr().out.count("once") == 1


def test_flask_app_logger_does_not_log_twice(capsys):
    application = build()
    capsys.readouterr()
    application.logger.warning("only once")
    captured = capsys.readouterr()
    assert captured.out.count("only once") == 1 and "only once" not in captured.err


def test_configured_signal_carries_the_level():
    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs["level"]))

    with signals.logging_configured.connected_to(receiver):
        application = build(log_level="warning")
    assert received == [(application, "WARNING")]
