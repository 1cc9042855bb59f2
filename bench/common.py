"""Helpers shared by the benchmarks: servers in subprocesses, wrk runs, medians."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

from flask_gnar.embedded import free_port  # noqa: F401 (used by the benchmarks)

HERE = Path(__file__).resolve().parent


def start_server(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args], cwd=HERE, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


_LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_latency(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _LATENCY_UNITS[match.group(2)]


def wrk(url: str, seconds: float, connections: int, threads: int = 1,
        headers: dict[str, str] | None = None) -> dict[str, float]:
    """One wrk run: requests/s, p50 and p99 latency in ms, and non-2xx count."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (./dev bench installs it)")
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", url]
    for key, value in (headers or {}).items():
        command[1:1] = ["-H", f"{key}: {value}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_latency(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = parse_latency(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": total,
            "non_2xx": float(bad.group(1)) if bad else 0.0,
            "socket_errors": 1.0 if errors else 0.0}


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (pre-forked workers)."""
    found = [pid]
    for parent in found:
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found.extend(int(child) for child in children)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants: other jobs on a shared
    machine slow a server down but do not add to this."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def alternating_rounds(variants: Iterable[str], rounds: int,
                       measure: Callable[[str], float]) -> dict[str, list[float]]:
    """``measure(variant)`` for every variant in each round, every other round backwards."""
    results: dict[str, list[float]] = {variant: [] for variant in variants}
    for round_number in range(rounds):
        order = list(results)
        if round_number % 2:
            order.reverse()
        for variant in order:
            results[variant].append(measure(variant))
    return results


def with_create_apps_flask_parts(app: Any) -> Any:
    """``app`` with the JSON provider and session interface ``create_app`` sets."""
    from flask_gnar import GnarJSONProvider, GnarSessionInterface

    app.json = GnarJSONProvider(app)
    app.session_interface = GnarSessionInterface()
    return app


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
