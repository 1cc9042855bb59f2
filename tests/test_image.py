"""The Dockerfile: its shape, deploy/k8s running its images, and its install steps run for real.

Images cannot be built on this machine; the build stage's steps are repeated in a fresh
venv instead (the same files copied, the same pip command), and piste is started from it
the way the image and deploy/k8s start it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from flask_gnar.testing import EmbeddedPostgres
from helpers import ROOT, free_port, wait_for_http
from image_support import Stage, build_commands, stages
from service_support import fresh_database

DOCKERFILE = ROOT / "Dockerfile"
STAGES = stages(DOCKERFILE)
SERVICES = {"piste": 9400, "powder": 9401}


def deployment(service: str) -> dict:
    docs = yaml.safe_load_all((ROOT / "deploy" / "k8s" / f"{service}.yaml").read_text())
    return next(doc for doc in docs if doc["kind"] == "Deployment")


def test_build_compiles_bjoern_and_the_runtime_only_has_libev4() -> None:
    build, runtime = STAGES["build"], STAGES["runtime"]

    build_steps = " ".join(build.all("RUN"))
    assert "libev-dev" in build_steps and "gcc" in build_steps
    assert any(step.startswith("pip install") for step in build.all("RUN"))
    runtime_steps = " ".join(runtime.all("RUN"))
    assert "libev4" in runtime_steps
    assert "libev-dev" not in runtime_steps and "gcc" not in runtime_steps
    assert runtime.base == build.base  # the venv's python is the same interpreter
    assert runtime.all("COPY") == ["--from=build /opt/venv /opt/venv"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_stage_runs_its_main_in_exec_form_as_a_non_root_user(service: str) -> None:
    stage = STAGES[service]
    runtime = STAGES["runtime"]
    pod = deployment(service)["spec"]["template"]["spec"]

    assert stage.base == "runtime"
    assert stage.exec_form("CMD") == ["python", "-m", f"{service}.app.main"]
    assert stage.exec_form("HEALTHCHECK")[:2] == ["python", "-c"]
    assert stage.env()[f"{service.upper()}_HTTP_PORT"] == str(SERVICES[service])
    assert stage.one("EXPOSE") == str(SERVICES[service])
    user = runtime.one("USER")
    assert user.isdigit() and int(user) != 0
    assert f"--uid {user}" in " ".join(runtime.all("RUN"))
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": int(user)}


@pytest.mark.parametrize("service", SERVICES)
def test_deploy_k8s_runs_the_image_the_dockerfile_builds(service: str) -> None:
    image = build_commands(DOCKERFILE)[service]
    pod = deployment(service)["spec"]["template"]["spec"]

    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        assert container["image"] == image
    main = next(c for c in pod["containers"] if c["name"] == service)
    assert main["command"] == STAGES[service].exec_form("CMD")
    assert main["ports"][0]["containerPort"] == SERVICES[service]


def copy_build_context(stage: Stage, target: Path) -> None:
    """The build stage's COPY instructions, from the repository into ``target`` (its WORKDIR)."""
    ignored = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".nox", ".git")
    for args in stage.all("COPY"):
        *sources, destination = shlex.split(args)
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target / destination, ignore=ignored, dirs_exist_ok=True)
            else:
                (target / destination).mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / destination)


def install_like_the_build_stage(tmp_path: Path) -> Path:
    build = STAGES["build"]
    source = tmp_path / "src"
    source.mkdir()
    copy_build_context(build, source)
    venv = tmp_path / "venv"
    assert "python -m venv /opt/venv" in build.all("RUN")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    for step in build.all("RUN"):
        if step.startswith("pip install"):
            result = subprocess.run(
                [str(venv / "bin" / "pip"), *shlex.split(step)[1:]], cwd=source,
                capture_output=True, text=True, timeout=900,
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return venv


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_build_steps_install_a_service_that_runs_from_a_fresh_venv(
    tmp_path: Path, gnar_postgres: EmbeddedPostgres
) -> None:
    venv = install_like_the_build_stage(tmp_path)
    workdir = tmp_path / "srv"
    workdir.mkdir()
    port = free_port()
    stage = STAGES["piste"]
    env = {
        # ENV PATH=/opt/venv/bin:$PATH, nothing of the repository on the path
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        **stage.env(),
        "PISTE_HTTP_PORT": str(port),
        "GNAR_PG_DSN": fresh_database(gnar_postgres),
        "GNAR_JWT_SECRET_KEY": "a-test-secret-of-at-least-thirty-two-bytes",
        "GNAR_WORKERS": "2",
    }
    where = subprocess.run(["python", "-c", "import flask_gnar, piste; print(flask_gnar.__file__, piste.__file__)"],
                           cwd=workdir, env=env, capture_output=True, text=True, check=True)
    assert all(path.startswith(str(venv)) for path in where.stdout.split()), where.stdout

    init = deployment("piste")["spec"]["template"]["spec"]["initContainers"][0]
    migrated = subprocess.run(init["command"], cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "applied 0001_users.sql" in migrated.stdout  # the SQL file shipped in the wheel

    process = subprocess.Popen(stage.exec_form("CMD"), cwd=workdir, env={**env, "GNAR_PG_MIGRATE": "0"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    healthcheck = stage.exec_form("HEALTHCHECK")
    try:
        ready = wait_for_http(f"http://127.0.0.1:{port}/health/ready", timeout=60, process=process)
        assert ready.status_code == 200, ready.text
        assert subprocess.run(healthcheck, cwd=workdir, env=env, timeout=30).returncode == 0
        login = requests.post(f"http://127.0.0.1:{port}/users/login",
                              json={"email": "nobody@piste.example", "password": "x"}, timeout=10)
        assert login.status_code == 401, login.text  # the users table is there
        process.send_signal(signal.SIGTERM)  # what docker stop sends PID 1
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, out
        assert "starting 2 bjoern workers" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert subprocess.run(healthcheck, cwd=workdir, env=env, capture_output=True, timeout=30).returncode != 0
