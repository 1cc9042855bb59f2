"""Sessions: tests (the whole suite), docs (Sphinx, warnings as errors), examples, typing."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    session.install("-e", ".", "mypy", "types-requests", "boto3-stubs")
    session.run("mypy")


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    session.install("-e", ".[embedded]")
    session.run("python", "examples/run.py", *session.posargs)
