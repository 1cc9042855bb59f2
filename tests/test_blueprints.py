"""GnarBlueprints: auto-scan, named modules, fault-tolerant development loading."""

import importlib
import itertools
import logging
import sys
import textwrap

import pytest
import requests

from flask_gnar import BlueprintLoadError, create_app, signals
from helpers import free_port, start_module, stop, wait_for_http

GOOD_API = """
from flask import Blueprint, jsonify

blueprint = Blueprint("{name}", __name__, url_prefix="/{name}")


@blueprint.get("/")
def index():
    return jsonify({{"api": "{name}"}})
"""
BROKEN_API = GOOD_API + "\nimport no_such_module_anywhere\n"

_names = itertools.count()


def make_package(root, files):
    """A fresh top-level package under ``root`` with ``files`` under its ``app/``."""
    name = f"gnarpkg{next(_names)}_{root.name[-8:].replace('-', '_')}"
    app_dir = root / name / "app"
    app_dir.mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (app_dir / "__init__.py").write_text("")
    for relative, text in files.items():
        path = app_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent != app_dir and not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text("")
        path.write_text(textwrap.dedent(text))
    return name


@pytest.fixture
def package(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return lambda files: make_package(tmp_path, files)


def routes(app):
    return {rule.rule for rule in app.url_map.iter_rules()}


def test_auto_scan_registers_every_module_level_blueprint(app, client):
    assert {"/lifts/", "/runs/"} <= routes(app)
    assert client.get("/runs/").json == {"runs": ["black", "blue"]}


def test_configured_signal_lists_the_blueprints():
    received = []
    with signals.blueprints_configured.connected_to(lambda s, **kw: received.append(kw["blueprints"])):
        create_app("snowy", no_db=True, no_jwt=True)
    assert sorted(received[0]) == ["lifts", "runs"]


def test_a_name_without_a_dot_means_app_name_apis():
    application = create_app("snowy", blueprint_modules="lifts", no_db=True, no_jwt=True)
    assert "/lifts/" in routes(application) and "/runs/" not in routes(application)


def test_a_dotted_name_is_taken_under_app():
    application = create_app("snowy", blueprint_modules=["runs.views", "lifts"], no_db=True, no_jwt=True)
    assert {"/lifts/", "/runs/"} <= routes(application)


def test_nested_folders_are_scanned(package):
    name = package({"a/b/deep.py": GOOD_API.format(name="deep")})
    assert "/deep/" in routes(create_app(name, no_db=True, no_jwt=True))


def test_a_listed_module_that_does_not_exist_stops_production(package):
    name = package({})
    with pytest.raises(BlueprintLoadError, match=f"{name}.app.ghost.apis"):
        create_app(name, production=True, blueprint_modules="ghost", no_db=True, no_jwt=True)


def test_broken_module_in_development_is_logged_and_the_rest_serves(package, caplog):
    name = package({"good.py": GOOD_API.format(name="good"), "bad.py": BROKEN_API.format(name="bad")})
    failures = []
    with caplog.at_level(logging.ERROR), signals.blueprint_failed.connected_to(
        lambda s, **kw: failures.append(kw)
    ):
        application = create_app(name, no_db=True, no_jwt=True)
    assert application.test_client().get("/good/").json == {"api": "good"}
    assert "/bad/" not in routes(application)
    assert [f["module"] for f in failures] == [f"{name}.app.bad"]
    logged = [r for r in caplog.records if f"{name}.app.bad" in r.getMessage()]
    assert logged and "no_such_module_anywhere" in caplog.text and logged[0].exc_info
    watched = application.extensions["gnar"].watch_files
    assert any(path.endswith("bad.py") for path in watched)


def test_broken_module_in_production_stops_start_up(package):
    name = package({"good.py": GOOD_API.format(name="good"), "bad.py": BROKEN_API.format(name="bad")})
    with pytest.raises(BlueprintLoadError, match=f"{name}.app.bad.*no_such_module_anywhere"):
        create_app(name, production=True, no_db=True, no_jwt=True)


def test_the_module_creating_the_app_is_not_run_again(package):
    main = f"""
    from flask_gnar import create_app
    app = create_app(__name__.split(".")[0], no_db=True, no_jwt=True)
    """
    name = package({"main.py": main, "api.py": GOOD_API.format(name="api")})
    created = []
    with signals.preconfig.connected_to(lambda sender: created.append(sender)):
        module = importlib.import_module(f"{name}.app.main")
    assert created == [module.app]
    assert "/api/" in routes(module.app)


def test_the_module_that_builds_the_app_is_left_out_when_something_else_builds_it(package):
    """A test (or ``flask --app``) building the app must not run app/main.py, which builds another."""
    main = """
    from flask import Blueprint
    from flask_gnar import create_app
    blueprint = Blueprint("main", __name__, url_prefix="/main")
    app = create_app(__name__.split(".")[0], no_db=True, no_jwt=True)
    """
    name = package({"main.py": main, "__main__.py": main, "api.py": GOOD_API.format(name="api")})
    created = []
    with signals.preconfig.connected_to(lambda sender: created.append(sender)):
        application = create_app(name, no_db=True, no_jwt=True)
    assert created == [application]
    assert f"{name}.app.main" not in sys.modules and f"{name}.app.__main__" not in sys.modules
    assert "/api/" in routes(application) and "/main/" not in routes(application)


def test_served_with_python_dash_m_the_main_module_is_imported_once():
    port = free_port()
    process = start_module("snowy.app.main", SNOWY_PRODUCTION="1", SNOWY_PORT=str(port))
    try:
        response = wait_for_http(f"http://127.0.0.1:{port}/lifts/", process=process)
        assert response.json() == {"lifts": ["gondola", "t-bar"]}
    finally:
        output = stop(process)
    assert output.count("Registered blueprints") == 1, output


@pytest.mark.slow
def test_development_reloader_brings_a_fixed_module_back(package, tmp_path):
    main = """
    import sys
    from flask_gnar import create_app, serve
    app = create_app(__spec__.name.split(".")[0], port=int(sys.argv[1]), no_db=True, no_jwt=True)
    if __name__ == "__main__":
        serve(app, host="127.0.0.1", reloader_type="stat")
    """
    name = package({"main.py": main, "good.py": GOOD_API.format(name="good"),
                    "bad.py": BROKEN_API.format(name="bad")})
    port = free_port()
    process = start_module(f"{name}.app.main", str(port), cwd=tmp_path, PYTHONPATH=str(tmp_path))
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/good/", process=process).status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/bad/", timeout=5).status_code == 404
        (tmp_path / name / "app" / "bad.py").write_text(GOOD_API.format(name="bad"))
        fixed = wait_until_status(f"http://127.0.0.1:{port}/bad/", 200, process)
        assert fixed.json() == {"api": "bad"}
    finally:
        output = stop(process)
    assert "no_such_module_anywhere" in output


def wait_until_status(url, status, process, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert process.poll() is None, stop(process)
        try:
            last = requests.get(url, timeout=2)
            if last.status_code == status:
                return last
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {status} (last: {last and last.status_code})")
