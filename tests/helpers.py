"""Helpers for tests that run real processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from collections.abc import Callable
from typing import Any

import requests

from flask_gnar.embedded import free_port  # noqa: F401 (used by the tests)

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = Path(__file__).resolve().parent / "packages"


def child_env(**extra: str) -> dict[str, str]:
    """The test's (scrubbed) environment, with the sample packages importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGES), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def start_process(code: str, cwd: Path | None = None, **env: str) -> subprocess.Popen[str]:
    """``python -c code`` with stdout and stderr merged into one pipe."""
    return start_python(["-c", code], cwd=cwd, **env)


def start_module(module: str, *args: str, cwd: Path | None = None, **env: str) -> subprocess.Popen[str]:
    """``python -m module args`` (how a service's main is run) in its own process group."""
    return start_python(["-m", module, *args], cwd=cwd, **env)


def start_python(args: list[str], cwd: Path | None = None, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_http(url: str, timeout: float = 20.0, process: subprocess.Popen[str] | None = None) -> requests.Response:
    """Poll ``url`` until it answers; fail with the process output if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited {process.returncode}:\n{output_of(process)}")
        try:
            return requests.get(url, timeout=1)
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to start
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def output_of(process: subprocess.Popen[str]) -> str:
    """Everything the process printed; kills its whole process group first."""
    kill_group(process)
    out, _ = process.communicate(timeout=10)
    return out or ""


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL the process and its children (reloader children, workers)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(process: subprocess.Popen[str]) -> str:
    """Kill the process and whatever it started, and return its output."""
    return output_of(process)


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
