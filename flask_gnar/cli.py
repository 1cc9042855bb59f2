"""The ``flask gnar`` command group: flask-gnar's own commands on the Flask CLI.

Each app gets a group of its own (``app.cli`` is per app); an extension adds
its commands with :func:`gnar_cli`, the way Flask-Migrate adds ``flask db``.
"""

from __future__ import annotations

import os
from typing import Any, cast

import click
from flask import Flask
from flask.cli import ScriptInfo


def gnar_cli(app: Flask) -> click.Group:
    """The app's ``flask gnar`` group, created (with ``serve``) on first use."""
    group = app.cli.commands.get("gnar")
    if group is None:
        group = click.Group("gnar", help="flask-gnar's commands: serve the app, migrate its database.")
        group.add_command(serve_command)
        app.cli.add_command(group)
    return cast(click.Group, group)


def loaded_app() -> Flask:
    """The app ``flask --app`` names."""
    return click.get_current_context().ensure_object(ScriptInfo).load_app()


@click.command("serve")
@click.option("--host", default="0.0.0.0", show_default=True, help="The address to listen on.")
@click.option("--port", type=int, help="The port (default: the one given to create_app).")
@click.option("--workers", type=click.IntRange(min=1), help="bjoern worker processes (production).")
@click.option("--grace", type=click.FloatRange(min=0), help="Shutdown grace period in seconds (production).")
def serve_command(host: str, port: int | None, workers: int | None, grace: float | None) -> None:
    """Run the app with flask_gnar.serve(): bjoern in production, else the development server."""
    from .serve import serve  # serve.py sits above the extensions that add commands here

    options: dict[str, Any] = {
        name: value for name, value in (("workers", workers), ("grace", grace)) if value is not None
    }
    app = loaded_app()
    # Flask's app.run() refuses to start under the `flask` command; this command is meant to.
    os.environ.pop("FLASK_RUN_FROM_CLI", None)
    serve(app, port=port, host=host, **options)
