"""The setting resolver: argument, app.config, prefixed environment, default."""

import threading
from datetime import timedelta

import pytest
from flask import Flask

from flask_gnar import ConfigError, Settings
from flask_gnar.config import (
    MAX_WAIT_SECONDS,
    float_between,
    int_between,
    parse_bool,
    parse_int,
    parse_list,
    parse_log_level,
    parse_minutes,
    parse_seconds,
)


@pytest.fixture
def plain_app() -> Flask:
    return Flask("plain")


def test_explicit_argument_wins_over_everything(plain_app, monkeypatch):
    plain_app.config["GNAR_ARGON2_TIME_COST"] = 4
    monkeypatch.setenv("GNAR_ARGON2_TIME_COST", "5")
    assert Settings(plain_app).get("ARGON2_TIME_COST", parse_int, explicit=3, default=2) == 3


def test_app_config_wins_over_environment(plain_app, monkeypatch):
    plain_app.config["GNAR_ARGON2_TIME_COST"] = 4
    monkeypatch.setenv("GNAR_ARGON2_TIME_COST", "5")
    assert Settings(plain_app).get("ARGON2_TIME_COST", parse_int, default=2) == 4


def test_environment_wins_over_default(plain_app, monkeypatch):
    monkeypatch.setenv("GNAR_ARGON2_TIME_COST", "5")
    assert Settings(plain_app).get("ARGON2_TIME_COST", parse_int, default=2) == 5


def test_default_when_nothing_is_set(plain_app):
    assert Settings(plain_app).get("ARGON2_TIME_COST", parse_int, default=2) == 2


def test_env_prefix_changes_the_variable_read(plain_app, monkeypatch):
    monkeypatch.setenv("GNAR_PG_ENDPOINT", "wrong")
    monkeypatch.setenv("MY_APP_PG_ENDPOINT", "db.internal")
    assert Settings(plain_app, "MY_APP").get("PG_ENDPOINT") == "db.internal"


def test_malformed_environment_value_names_the_variable(plain_app, monkeypatch):
    monkeypatch.setenv("GNAR_ARGON2_TIME_COST", "abc")
    with pytest.raises(ConfigError) as caught:
        Settings(plain_app).get("ARGON2_TIME_COST", parse_int, default=2)
    assert isinstance(caught.value, ValueError)
    assert caught.value.key == "GNAR_ARGON2_TIME_COST"
    assert "GNAR_ARGON2_TIME_COST" in str(caught.value) and "'abc'" in str(caught.value)


def test_malformed_config_value_names_the_config_key(plain_app):
    plain_app.config["GNAR_ARGON2_TIME_COST"] = "many"
    with pytest.raises(ConfigError, match=r"app.config\['GNAR_ARGON2_TIME_COST'\]"):
        Settings(plain_app).get("ARGON2_TIME_COST", parse_int)


def test_missing_required_setting_names_variable_and_config_key(plain_app):
    with pytest.raises(ConfigError) as caught:
        Settings(plain_app).get("JWT_SECRET_KEY", required=True, secret=True)
    assert caught.value.key == "GNAR_JWT_SECRET_KEY"
    assert "app.config['GNAR_JWT_SECRET_KEY']" in str(caught.value)


def test_secret_values_are_never_echoed(plain_app, monkeypatch):
    monkeypatch.setenv("GNAR_PG_PASSWORD", "hunter2-not-a-number")
    with pytest.raises(ConfigError) as caught:
        Settings(plain_app).get("PG_PASSWORD", parse_int, secret=True)
    assert "hunter2" not in str(caught.value)
    assert "GNAR_PG_PASSWORD" in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False), ("false", False),
     ("no", False), ("off", False), (True, True), (False, False)],
)
def test_booleans(raw, expected):
    assert parse_bool(raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", 1, None])
def test_bad_booleans(raw):
    with pytest.raises(ValueError):
        parse_bool(raw)


def test_integers_reject_floats_and_booleans():
    assert parse_int(" 7 ") == 7
    for bad in ("7.5", True, "", None):
        with pytest.raises(ValueError):
            parse_int(bad)


def test_minutes_become_timedeltas():
    assert parse_minutes("15") == timedelta(minutes=15)
    assert parse_minutes("0.5") == timedelta(seconds=30)
    assert parse_minutes(timedelta(hours=1)) == timedelta(hours=1)
    for bad in ("0", "-3", "soon"):
        with pytest.raises(ValueError):
            parse_minutes(bad)


def test_lists_split_on_commas():
    assert parse_list("a, b,,c ") == ["a", "b", "c"]
    assert parse_list(["x", "y"]) == ["x", "y"]


def test_log_levels():
    assert parse_log_level("debug") == "DEBUG"
    assert parse_log_level(30) == "WARNING"
    with pytest.raises(ValueError, match="DEBUG, INFO"):
        parse_log_level("LOUD")


# --- bounded numbers --------------------------------------------------------------------


def test_int_between_names_the_range_and_where_it_comes_from(plain_app, monkeypatch):
    parse_size = int_between(1, 100, limit="the pool's size")
    monkeypatch.setenv("GNAR_PAGE_SIZE", "99999999999999999999")
    with pytest.raises(ConfigError) as caught:
        Settings(plain_app).get("PAGE_SIZE", parse_size)
    assert str(caught.value) == (
        "GNAR_PAGE_SIZE: expected a whole number from 1 to 100 (the pool's size), "
        "got 99999999999999999999"
    )
    assert parse_size("1") == 1 and parse_size(100) == 100


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e400", float("nan")])
def test_float_between_refuses_nan_and_infinities(raw):
    with pytest.raises(ValueError, match="expected a number of at least 0 and at most 5, got"):
        float_between(0, 5)(raw)


def test_above_excludes_the_low_end():
    parse_delay = float_between(0, 2.5, above=True)
    assert parse_delay("0.001") == 0.001
    with pytest.raises(ValueError, match=r"^expected a number above 0 and at most 2\.5, got 0$"):
        parse_delay("0")


def test_a_high_end_given_as_a_function_is_read_when_the_value_is_parsed():
    limit = [3]
    parse_lanes = int_between(1, lambda: limit[0])
    assert parse_lanes("3") == 3
    limit[0] = 2
    with pytest.raises(ValueError, match="from 1 to 2, got 3"):
        parse_lanes("3")


def test_durations_stop_short_of_what_threads_can_wait():
    assert parse_seconds(str(MAX_WAIT_SECONDS)) == MAX_WAIT_SECONDS < threading.TIMEOUT_MAX
    with pytest.raises(ValueError, match="the longest wait Python's threads accept"):
        parse_seconds(str(threading.TIMEOUT_MAX))


def test_token_minutes_end_before_the_year_9999():
    assert parse_minutes(str(1000 * 365 * 24 * 60)) == timedelta(days=1000 * 365)
    with pytest.raises(ValueError, match="before the year 9999"):
        parse_minutes(str(8000 * 365 * 24 * 60))
    with pytest.raises(ValueError, match="before the year 9999"):
        parse_minutes(timedelta.max)
