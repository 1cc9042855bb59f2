"""Sessions: tests (the whole suite), docs (Sphinx, warnings as errors), typing (mypy strict), examples, bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "docs", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    # A folder of this checkout's own: pytest's shared default under /tmp keeps the last
    # three runs of every checkout and deletes older ones, even while they still run.
    session.run("pytest", f"--basetemp={session.virtualenv.location}/pytest-tmp", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy", "types-requests")
    session.run("mypy")


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    session.install("-e", ".[embedded,tracing]")
    session.run("python", "examples/run.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmarks (needs wrk: ./dev bench installs it)."""
    session.install("-e", ".[test]", "gunicorn")
    for script in session.posargs or ["http_bench.py", "login_burst.py", "jwt_refresh.py", "peer.py", "sqs.py", "bench_db.py"]:
        session.run("python", f"bench/{script}")
