"""Peer calls per second: gnar.peer (pooled keep-alive) against the seed's way.

The seed called ``requests.get(url)``: a new TCP connection per call. Both clients
call the same flask-gnar service served by bjoern on 127.0.0.1, in alternating
rounds; the figures are medians and the ratio is gnar.peer / seed. A plain
``requests.Session`` is measured too, to show what the peer layer itself costs.

    python bench/peer.py [--rounds 7] [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from flask_gnar import GnarPeer, gnar
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
SERVE_SUMMIT = "from summit.app.main import app; from flask_gnar import serve; serve(app, host='127.0.0.1')"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNAR_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "packages"), str(ROOT)]),
        SUMMIT_PORT=str(port),
        GNAR_LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_SUMMIT], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/hits/ready", timeout=1)
            return process
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the summit service did not start")


def calls_per_second(call: Callable[[], requests.Response], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        response = call()
        assert response.status_code == 200, response.status_code
    return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    port = free_port()
    service = start_service(port)
    url = f"http://127.0.0.1:{port}/hits/bench"
    app = Flask("bench")
    GnarPeer(app, peers={"summit": f"http://127.0.0.1:{port}"})
    plain = requests.Session()
    try:
        with app.app_context():
            peer = gnar.peer("summit")
            clients: dict[str, Callable[[], requests.Response]] = {
                "seed requests.get": lambda: requests.get(url),
                "gnar.peer": lambda: peer.get("/hits/bench"),
                "plain Session": lambda: plain.get(url, timeout=10),
            }
            for call in clients.values():  # warm up: imports, first connections
                calls_per_second(call, 20)
            results: dict[str, list[float]] = {name: [] for name in clients}
            for round_number in range(args.rounds):
                order = list(clients) if round_number % 2 == 0 else list(reversed(clients))
                for name in order:
                    results[name].append(calls_per_second(clients[name], args.calls))
    finally:
        plain.close()
        service.kill()
        service.wait()

    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"{args.rounds} alternating rounds of {args.calls} GET calls to a bjoern flask-gnar service")
    for name, median in medians.items():
        print(f"  {name:<18} median {median:8.0f} calls/s")
    print(f"  gnar.peer / seed requests.get: {medians['gnar.peer'] / medians['seed requests.get']:.2f}x")
    print(f"  gnar.peer / plain Session:     {medians['gnar.peer'] / medians['plain Session']:.2f}x")


if __name__ == "__main__":
    main()
