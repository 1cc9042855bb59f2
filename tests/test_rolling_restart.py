"""A rolling restart behind HAProxy (Debian's), health-checking readiness and retrying nothing.

Two replicas of ``hardy`` (each ``serve()`` with 2 bjoern workers) behind one HAProxy,
under a steady stream of keep-alive and new-connection clients (GET and POST with a
body): replica A is restarted, then B. No request may fail.
"""

from __future__ import annotations

import csv
import io
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardening_support import Hardy, free_port, start_hardy, wait_until
from traffic_support import Traffic

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CHECK_INTERVAL_MS = 200
FALL = 2
# Above what HAProxy needs to see a replica's readiness fail (FALL checks, one interval apart).
SHUTDOWN_DELAY_SECONDS = "1.5"

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="needs haproxy (./dev installs it)")

CONFIG = """\
global
    stats socket {admin} mode 600 level admin
defaults
    mode http
    retries 0
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend service
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
    default-server inter {inter}ms fall {fall} rise 2
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
"""


class HAProxy:
    def __init__(self, folder: Path, backends: dict[str, int]) -> None:
        self.port = free_port()
        self.admin = folder / "admin.sock"
        config = folder / "haproxy.cfg"
        config.write_text(CONFIG.format(
            admin=self.admin, port=self.port, inter=CHECK_INTERVAL_MS, fall=FALL, **backends
        ))
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(config)], check=True)
        self.process = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )

    def status(self) -> dict[str, str]:
        """The state HAProxy gives each server (UP, DOWN, ...), from its admin socket."""
        try:
            with socket.socket(socket.AF_UNIX) as admin:
                admin.connect(str(self.admin))
                admin.sendall(b"show stat\n")
                data = b"".join(iter(lambda: admin.recv(65536), b""))
        except OSError:
            return {}
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "replicas"}

    def wait_until_up(self, *servers: str) -> None:
        wait_until(lambda: all(self.status().get(name) == "UP" for name in servers),
                   timeout=30, what=f"HAProxy to see {servers} UP")

    def stop(self) -> str:
        self.process.terminate()
        output, _ = self.process.communicate(timeout=10)
        return output


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[dict[str, Hardy]]:
    started: dict[str, Hardy] = {}
    try:
        for name in ("a", "b"):
            started[name] = start_replica()
        yield started
    finally:
        for service in started.values():
            service.stop()


def start_replica(port: int | None = None) -> Hardy:
    return start_hardy(
        ready_path="/health/ready", port=port, GNAR_WORKERS="2",
        GNAR_SHUTDOWN_DELAY_SECONDS=SHUTDOWN_DELAY_SECONDS, GNAR_SHUTDOWN_GRACE_SECONDS="20",
    )


@pytest.mark.slow
def test_a_rolling_restart_behind_haproxy_fails_no_request(
    replicas: dict[str, Hardy], tmp_path: Path
) -> None:
    proxy = HAProxy(tmp_path, {name: service.port for name, service in replicas.items()})
    exits: dict[str, int] = {}
    try:
        proxy.wait_until_up("a", "b")
        with Traffic(proxy.port, new=4, keep_alive=2, stop_when_refused=False) as traffic:
            wait_until(lambda: traffic.count("ok") >= 100, what="traffic through HAProxy")
            for name in ("a", "b"):
                old = replicas[name]
                old.process.send_signal(signal.SIGTERM)
                exits[name] = old.process.wait(timeout=30)
                old.stop()
                replicas[name] = start_replica(old.port)
                proxy.wait_until_up("a", "b")
                before = traffic.count("ok")
                wait_until(lambda: traffic.count("ok") >= before + 100, what="traffic after restart")
        summary = traffic.summary()
        print(f"rolling restart through HAProxy: {dict(summary)}")
    finally:
        output = proxy.stop()
    assert exits == {"a": 0, "b": 0}, output
    assert traffic.failures() == [], summary
    assert set(summary) == {"ok"}, summary
