"""GnarArgon2: the hasher's parameters, the seed's password helpers, bad settings."""

from __future__ import annotations

import os
from typing import Any

import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import VerifyMismatchError
from flask import Flask

from flask_gnar import ConfigError, GnarArgon2, GnarErrors, NotInitialisedError, create_app, signals
from flask_gnar.state import get_state

#: Cheap parameters so the tests hash quickly.
FAST = {"GNAR_ARGON2_TIME_COST": 1, "GNAR_ARGON2_MEMORY_COST": 1024, "GNAR_ARGON2_PARALLELISM": 1}


def argon2_app(config: dict[str, Any] | None = None, **options: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    GnarArgon2(app, **options)
    return app


@pytest.fixture
def passwords() -> Any:
    return get_state(argon2_app(FAST))


def test_defaults_are_argon2_cffi_current_ones_not_the_seeds_512_kib() -> None:
    hasher = get_state(argon2_app()).argon2
    reference = PasswordHasher()
    assert hasher.type is Type.ID
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (
        reference.time_cost, reference.memory_cost, reference.parallelism,
    )
    assert hasher.memory_cost > 512
    assert hasher.hash("powder").startswith(f"$argon2id$v=19$m={reference.memory_cost},")


def test_seed_environment_variables_override_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "TIME_COST": "2", "MEMORY_COST": "2048", "PARALLELISM": "2",
        "HASH_LEN": "20", "SALT_LEN": "12", "ENCODING": "latin-1", "TYPE": "argon2i",
    }.items():
        monkeypatch.setenv(f"GNAR_ARGON2_{name}", value)
    hasher = get_state(argon2_app()).argon2
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (2, 2048, 2)
    assert (hasher.hash_len, hasher.salt_len, hasher.encoding) == (20, 12, "latin-1")
    assert hasher.hash("powder").startswith("$argon2i$v=19$m=2048,t=2,p=2$")


def test_option_beats_config_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_ARGON2_TIME_COST", "4")
    monkeypatch.setenv("GNAR_ARGON2_MEMORY_COST", "4096")
    app = argon2_app({"GNAR_ARGON2_TIME_COST": 3, "GNAR_ARGON2_PARALLELISM": 1}, time_cost=2)
    hasher = get_state(app).argon2
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (2, 4096, 1)


def test_env_prefix_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_APP_ARGON2_TIME_COST", "5")
    monkeypatch.setenv("GNAR_ARGON2_TIME_COST", "7")
    hasher = get_state(argon2_app({"GNAR_ENV_PREFIX": "MY_APP"})).argon2
    assert hasher.time_cost == 5


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TIME_COST", "abc", "GNAR_ARGON2_TIME_COST: expected a whole number, got 'abc'"),
        ("MEMORY_COST", "0", "GNAR_ARGON2_MEMORY_COST: expected a whole number from 8 to "),
        ("PARALLELISM", "-2", "GNAR_ARGON2_PARALLELISM: expected a whole number from 1 to "),
        ("HASH_LEN", "2", "GNAR_ARGON2_HASH_LEN: expected a whole number from 4 to 4294967295"),
        ("SALT_LEN", "4", "GNAR_ARGON2_SALT_LEN: expected a whole number from 8 to 4294967295"),
        ("TIME_COST", "99999999999999999999", "GNAR_ARGON2_TIME_COST: expected a whole number "
         "from 1 to 4294967295 (libargon2's limit), got 99999999999999999999"),
        ("MEMORY_COST", "16", "GNAR_ARGON2_MEMORY_COST: must be at least 8 KiB per lane"),
        ("ENCODING", "klingon", "GNAR_ARGON2_ENCODING: expected a text encoding"),
        ("TYPE", "argon3", "GNAR_ARGON2_TYPE: expected one of argon2id, argon2i, argon2d"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"GNAR_ARGON2_{name}", value)
    app = Flask(__name__)
    with pytest.raises(ConfigError) as caught:
        GnarArgon2(app)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)
    state = get_state(app)
    assert "GnarArgon2" not in state.extensions
    assert not hasattr(state, "argon2")


def test_bad_config_value_names_the_config_key() -> None:
    with pytest.raises(ConfigError, match=r"app.config\['GNAR_ARGON2_HASH_LEN'\]: expected a whole number from 4"):
        argon2_app({"GNAR_ARGON2_HASH_LEN": 3})


def test_a_memory_cost_past_the_machines_memory_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2-cffi would take it and every login would then fail to allocate (or be killed)."""
    memory_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    monkeypatch.setenv("GNAR_ARGON2_MEMORY_COST", str(memory_kib + 1))
    with pytest.raises(ConfigError) as caught:
        argon2_app()
    assert str(caught.value).startswith("GNAR_ARGON2_MEMORY_COST: expected a whole number from 8 to ")
    assert "the machine's memory" in str(caught.value)
    assert str(memory_kib + 1) in str(caught.value)


def test_a_parallelism_too_large_for_the_default_memory_names_the_parallelism(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default_memory = PasswordHasher().memory_cost
    lanes = default_memory // 8 + 1
    monkeypatch.setenv("GNAR_ARGON2_PARALLELISM", str(lanes))
    with pytest.raises(ConfigError) as caught:
        argon2_app()
    assert caught.value.key == "GNAR_ARGON2_PARALLELISM"
    assert f"is {lanes} lanes, which need {8 * lanes} KiB" in str(caught.value)
    assert "set GNAR_ARGON2_MEMORY_COST too" in str(caught.value)


def test_memory_too_small_for_the_lanes_set_names_the_memory_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GNAR_ARGON2_PARALLELISM", "8")
    monkeypatch.setenv("GNAR_ARGON2_MEMORY_COST", "32")
    with pytest.raises(ConfigError) as caught:
        argon2_app()
    assert caught.value.key == "GNAR_ARGON2_MEMORY_COST"
    assert "8 x parallelism 8 = 64" in str(caught.value)


def test_long_hashes_and_salts_within_the_bounds_work() -> None:
    """The bounds are libargon2's, not tighter ones of ours."""
    hasher = get_state(argon2_app({**FAST, "GNAR_ARGON2_HASH_LEN": 4096, "GNAR_ARGON2_SALT_LEN": 4096})).argon2
    stored = hasher.hash("powder")
    assert hasher.verify(stored, "powder")


def test_generate_and_check_a_password(passwords: Any) -> None:
    stored = passwords.generate_password_hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert passwords.check_password_hash(stored, "correct horse") is True
    assert passwords.generate_password_hash("correct horse") != stored  # salted


def test_empty_password_cannot_be_hashed(passwords: Any) -> None:
    for empty in ("", b"", None):
        with pytest.raises(ValueError, match="password cannot be empty"):
            passwords.generate_password_hash(empty)


@pytest.mark.parametrize("attempt", ["correct hors", "Correct horse", "", None, "correct horse "])
def test_wrong_passwords_are_false_not_exceptions(passwords: Any, attempt: Any) -> None:
    stored = passwords.generate_password_hash("correct horse")
    assert passwords.check_password_hash(stored, attempt) is False


@pytest.mark.parametrize(
    "stored",
    [
        "not-a-hash",
        "",
        None,
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ",  # truncated: no digest
        "$argon2id$v=19$m=1024,t=1,p=1$!!!!$!!!!",  # not base64
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
    ],
)
def test_malformed_stored_hash_is_false_not_an_exception(passwords: Any, stored: Any) -> None:
    assert passwords.check_password_hash(stored, "correct horse") is False


def test_raw_hasher_still_raises_like_the_seed_said(passwords: Any) -> None:
    stored = passwords.generate_password_hash("correct horse")
    with pytest.raises(VerifyMismatchError):
        passwords.argon2.verify(stored, "wrong")


def test_a_hash_made_with_old_parameters_still_verifies_and_needs_rehash() -> None:
    old = get_state(argon2_app({**FAST, "GNAR_ARGON2_TYPE": "i"}))
    current = get_state(argon2_app({**FAST, "GNAR_ARGON2_MEMORY_COST": 2048}))
    stored = old.generate_password_hash("correct horse")
    assert current.check_password_hash(stored, "correct horse") is True
    assert current.password_needs_rehash(stored) is True
    rehashed = current.generate_password_hash("correct horse")
    assert current.password_needs_rehash(rehashed) is False
    assert current.password_needs_rehash("not-a-hash") is True


def test_gnar_proxy_and_create_app_publish_the_helpers() -> None:
    received: list[Any] = []
    app = create_app("snowy", no_db=True, no_jwt=True, config=FAST)
    with app.app_context():
        from flask_gnar import gnar

        stored = gnar.generate_password_hash("pow")
        assert gnar.check_password_hash(stored, "pow") is True
        assert gnar.argon2.memory_cost == 1024
    app2 = Flask(__name__)
    with signals.argon2_configured.connected_to(lambda sender, **kw: received.append((sender, kw)), app2):
        GnarArgon2(app2)
    assert received == [(app2, {"hasher": get_state(app2).argon2})]


def test_two_apps_keep_their_own_hasher() -> None:
    first = get_state(argon2_app({**FAST, "GNAR_ARGON2_HASH_LEN": 16}))
    second = get_state(argon2_app({**FAST, "GNAR_ARGON2_HASH_LEN": 24}))
    assert first.argon2 is not second.argon2
    assert (first.argon2.hash_len, second.argon2.hash_len) == (16, 24)


def test_missing_extension_is_named() -> None:
    app = Flask(__name__)
    GnarErrors(app)
    with pytest.raises(NotInitialisedError, match="GnarArgon2"):
        get_state(app).generate_password_hash("pow")
    assert not hasattr(get_state(app), "argon2")
