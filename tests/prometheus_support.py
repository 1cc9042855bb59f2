"""A real Prometheus server (Debian's /usr/bin/prometheus) scraping a service on 127.0.0.1."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from helpers import free_port, stop, wait_for_http, wait_until

PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_INTERVAL = "250ms"


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[str]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector of ``expression`` (its latest stored samples)."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def value(self, expression: str) -> float | None:
        """The single value of ``expression``, ``None`` while there is none."""
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def wait_for_value(self, expression: str, expected: float, timeout: float = 30.0) -> None:
        """Poll until Prometheus stores ``expected``; fail showing the last value seen."""
        seen: list[float | None] = []

        def stored() -> bool:
            seen.append(self.value(expression))
            return seen[-1] == expected

        try:
            wait_until(stored, timeout=timeout, what=f"{expression} == {expected}")
        except AssertionError:
            raise AssertionError(f"{expression}: expected {expected}, last stored {seen[-1:]}") from None


@contextmanager
def prometheus_scraping(target: str, metrics_path: str, folder: Path) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` (``host:port``) every 250 ms, storing in ``folder``."""
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  scrape_timeout: {SCRAPE_INTERVAL}\n"
        "scrape_configs:\n"
        "  - job_name: service\n"
        f"    metrics_path: {metrics_path}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        wait_for_http(f"{server.url}/-/ready", timeout=30, process=process)
        wait_until(lambda: requests.get(f"{server.url}/-/ready", timeout=2).ok, timeout=30,
                   what="Prometheus ready")
        yield server
    finally:
        stop(process)
