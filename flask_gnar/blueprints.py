"""GnarBlueprints: register every module-level ``blueprint`` under ``<name>/app``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from flask import Blueprint, Flask

from . import signals
from .config import Settings, parse_list
from .exceptions import BlueprintLoadError
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)


def app_package_dir(name: str) -> Path | None:
    """The folder of ``<name>.app``, or ``None`` when it cannot be found."""
    try:
        spec = importlib.util.find_spec(f"{name}.app")
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


#: The seed's modules that build the app (``<name>/app/main.py``); the scan never imports them.
APP_BUILDING_MODULES = frozenset({("main",), ("__main__",)})


def scan_module_names(name: str) -> list[str]:
    """Every module under ``<name>/app`` but the one that builds the app, in a stable order.

    Importing ``app/main.py`` would build a second app (with its own development
    database) whenever something else, a test or ``flask --app``, builds this one.
    """
    root = app_package_dir(name)
    if root is None:
        return []
    modules = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if "__pycache__" in parts or any(not part.isidentifier() for part in parts):
            continue
        if parts in APP_BUILDING_MODULES:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append(".".join((name, "app", *parts)))
    return modules


def named_module_names(name: str, modules: list[str]) -> list[str]:
    """The seed's forms: ``user`` is ``<name>.app.user.apis``, ``user.views`` is ``<name>.app.user.views``."""
    return [f"{name}.app.{m}" if "." in m else f"{name}.app.{m}.apis" for m in modules]


def files_being_executed() -> set[str]:
    """Source files on the call stack: the module creating the app is among them."""
    files = {os.path.realpath(frame.filename) for frame in inspect.stack(context=0)}
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file:
        files.add(os.path.realpath(main_file))
    return files


def module_file(module_name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    return os.path.realpath(spec.origin) if spec and spec.origin else None


class GnarBlueprints(GnarExtension):
    """Import the app's modules and register each module-level ``blueprint``.

    ``modules`` (``create_app(blueprint_modules=...)``, ``GNAR_BLUEPRINT_MODULES``)
    skips the auto-scan. In development a module that fails to import is logged
    with its traceback and watched by the reloader; in production it stops start-up.
    """

    extension_name = "GnarBlueprints"
    configured_signal = signals.blueprints_configured
    options_accepted = frozenset({"modules", "name"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        name = self.option("name") or state.name
        listed = settings.get("BLUEPRINT_MODULES", parse_list, explicit=self.option("modules"))
        module_names = named_module_names(name, listed) if listed else scan_module_names(name)
        running = files_being_executed()
        registered = []
        for module_name in module_names:
            if module_file(module_name) in running:
                continue
            module = self.load(app, state, module_name, required=bool(listed))
            blueprint = getattr(module, "blueprint", None) if module else None
            if isinstance(blueprint, Blueprint):
                app.register_blueprint(blueprint)
                registered.append(blueprint.name)
        log.info("Registered blueprints: %s", ", ".join(registered) or "none")
        return {"blueprints": registered}

    def load(
        self, app: Flask, state: GnarState, module_name: str, required: bool
    ) -> ModuleType | None:
        try:
            return importlib.import_module(module_name)
        except Exception as error:
            if isinstance(error, ModuleNotFoundError) and error.name == module_name and not required:
                return None
            if state.production:
                raise BlueprintLoadError(
                    f"blueprint module {module_name!r} failed to import: {error}"
                ) from error
            log.exception("Blueprint module %s failed to load; the rest of the app serves", module_name)
            broken = module_file(module_name)
            if broken:
                state.watch_files.add(broken)
            signals.blueprint_failed.send(app, module=module_name, error=error)
            return None
