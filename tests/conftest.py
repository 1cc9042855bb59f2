"""Shared fixtures: a scrubbed environment, sample packages on sys.path, free ports."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_gnar import create_app

pytest_plugins = ["pytester"]

PACKAGES = Path(__file__).parent / "packages"
sys.path.insert(0, str(PACKAGES))

SCRUBBED_PREFIXES = ("GNAR_", "AWS_", "MY_APP_", "WERKZEUG_", "OTEL_")


def scrub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(SCRUBBED_PREFIXES) or key.endswith(("_SERVICE_HOST", "_SERVICE_PORT")):
            monkeypatch.delenv(key)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No GNAR_*/AWS_* variable from the developer's shell leaks into a test.

    Services a test serves (and kills) keep their metrics folders in pytest's own
    temporary folder, not in /dev/shm.
    """
    scrub_environment(monkeypatch)
    monkeypatch.setenv("GNAR_METRICS_DIR", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def clean_module_env() -> Iterator[None]:
    """``clean_env`` for module-scoped fixtures (they are set up before it)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        scrub_environment(monkeypatch)
        yield


@pytest.fixture
def app() -> Iterator[Flask]:
    """The sample service ``snowy`` as create_app builds it (pytest-flask uses it)."""
    application = create_app(
        "snowy", production=False, port=9400, no_db=True, no_jwt=True, config={"TESTING": True}
    )
    yield application
