"""The per-app state at app.extensions["gnar"] and the gnar proxy."""

import pytest
from flask import Flask

from flask_gnar import AlreadyInitialisedError, GnarErrors, NotInitialisedError, create_app, get_state, gnar
from flask_gnar.state import ASSET_OWNERS


def test_create_app_fills_in_name_mode_and_port(app):
    state = app.extensions["gnar"]
    assert (state.name, state.production, state.port) == ("snowy", False, 9400)


def test_proxy_points_at_the_current_apps_state(app):
    other = create_app("snowy", port=9500, no_db=True, no_jwt=True)
    with other.app_context():
        assert gnar.port == 9500
    with app.app_context():
        assert gnar.port == 9400
        assert gnar._get_current_object() is app.extensions["gnar"]


def test_proxy_outside_an_app_context_fails_clearly():
    with pytest.raises(RuntimeError, match="application context"):
        gnar.name  # noqa: B018


@pytest.mark.parametrize(("asset", "extension"), sorted(ASSET_OWNERS.items()))
def test_assets_of_uninitialised_extensions_name_the_extension(asset, extension):
    plain = Flask("plain")
    GnarErrors(plain)
    state = get_state(plain)
    with pytest.raises(NotInitialisedError) as caught:
        getattr(state, asset)
    assert extension in str(caught.value) and f"gnar.{asset}" in str(caught.value)
    assert not hasattr(state, asset)


def test_unknown_attributes_are_plain_attribute_errors(app):
    with pytest.raises(AttributeError) as caught:
        app.extensions["gnar"].no_such_thing  # noqa: B018
    assert not isinstance(caught.value, NotInitialisedError)


def test_get_state_on_a_plain_app_says_flask_gnar_is_not_registered():
    with pytest.raises(RuntimeError, match="not registered"):
        get_state(Flask("plain"))


def test_two_apps_never_share_state():
    first = create_app("snowy", no_db=True, no_jwt=True)
    second = create_app("snowy", production=True, port=80, no_db=True, no_jwt=True)
    assert first.extensions["gnar"] is not second.extensions["gnar"]
    assert first.extensions["gnar"].production is False
    assert second.extensions["gnar"].production is True


def test_an_extension_refuses_a_second_registration_on_the_same_app():
    plain = Flask("plain")
    errors = GnarErrors(plain)
    with pytest.raises(AlreadyInitialisedError, match="GnarErrors is already initialised"):
        errors.init_app(plain)
    errors.init_app(Flask("another"))


def test_unknown_extension_options_are_refused():
    with pytest.raises(TypeError, match="unknown option.*colour"):
        GnarErrors(colour="red")


def test_standalone_state_reads_name_mode_and_port_from_config():
    plain = Flask("plain")
    plain.config.update(GNAR_NAME="lodge", GNAR_PRODUCTION="true", GNAR_PORT="9100")
    GnarErrors(plain)
    state = get_state(plain)
    assert (state.name, state.production, state.port) == ("lodge", True, 9100)


def test_env_reads_config_then_prefixed_environment(monkeypatch):
    monkeypatch.setenv("MY_APP_SNOW_DEPTH", "120")
    application = create_app("snowy", env_prefix="MY_APP", no_db=True, no_jwt=True)
    state = application.extensions["gnar"]
    assert state.env("SNOW_DEPTH") == "120"
    assert state.env("MISSING", "none") == "none"
    application.config["GNAR_SNOW_DEPTH"] = 80
    assert state.env("SNOW_DEPTH") == "80"


def test_start_and_stop_hooks_run_once_in_order(app):
    state = app.extensions["gnar"]
    calls = []
    state.on_start(lambda: calls.append("start a"))
    state.on_start(lambda: calls.append("start b"))
    state.on_stop(lambda: calls.append("stop a"))
    state.on_stop(lambda: 1 / 0)
    state.on_stop(lambda: calls.append("stop c"))
    state.start()
    state.start()
    assert state.started
    state.stop()
    state.stop()
    assert calls == ["start a", "start b", "stop c", "stop a"]


def test_readiness_counts_a_failing_check_as_not_ready(app):
    state = app.extensions["gnar"]
    state.readiness_checks["always"] = lambda: True
    state.readiness_checks["broken"] = lambda: 1 / 0
    assert state.ready() == {"always": True, "broken": False}


def test_env_upper_cases_the_name_like_the_seed(monkeypatch):
    monkeypatch.setenv("GNAR_PG_ENDPOINT", "db.internal")
    application = create_app("snowy", no_db=True, no_jwt=True)
    assert application.extensions["gnar"].env("pg_endpoint") == "db.internal"
