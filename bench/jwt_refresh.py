"""Protected-route throughput under bjoern: flask-gnar against bare Flask + flask-jwt-extended.

Both services answer ``GET /slopes/<id>`` behind ``@jwt_required()`` and slide the
token (an ``after_request`` that sends a new access token when the request had a
valid one). The flask-gnar one is ``create_app("glade", production=True)``; the
bare one is what a user would write by hand. Rounds alternate between the two;
the report gives medians and their ratio (above 1.0 means flask-gnar is faster).

Run: ``python bench/jwt_refresh.py [--rounds 5] [--seconds 3] [--connections 4]``.
Uses ``wrk`` when installed (``apt-get install -y wrk``), else a threaded
keep-alive Python client.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = "bench-secret-bench-secret-bench-secret-42"
IDENTITY = "ic3b3rg"
PATH = "/slopes/7"

GNAR_SERVICE = f"""
from flask_gnar import create_app, serve
app = create_app("glade", production=True, port={{port}}, no_db=True)
serve(app, host="127.0.0.1")
"""

BARE_SERVICE = f"""
import bjoern
from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, create_access_token, get_jwt_identity, jwt_required

app = Flask("bare")
app.config["JWT_SECRET_KEY"] = {SECRET!r}
JWTManager(app)

@app.get("/slopes/<int:slope_id>")
@jwt_required()
def slope(slope_id):
    return jsonify(slope=slope_id, identity=get_jwt_identity())

@app.after_request
def slide(response):
    try:
        identity = get_jwt_identity()
    except RuntimeError:  # not a protected route
        return response
    if identity is not None:
        response.headers["Authorization"] = "Bearer " + create_access_token(identity=identity)
    return response

bjoern.run(app, "127.0.0.1", {{port}})
"""

TOKEN = f"""
from flask import Flask
from flask_jwt_extended import JWTManager, create_access_token
app = Flask("token")
app.config["JWT_SECRET_KEY"] = {SECRET!r}
JWTManager(app)
with app.app_context():
    print(create_access_token(identity={IDENTITY!r}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GNAR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")])
    env["GNAR_JWT_SECRET_KEY"] = SECRET
    env["GNAR_LOG_LEVEL"] = "WARNING"
    env["GNAR_WORKERS"] = "1"  # one bjoern process, like the bare service
    return env


def start(code: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code.format(port=port)],
        env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def get(port: int, token: str) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", PATH, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Authorization")
    finally:
        connection.close()


def wait_until_serving(port: int, token: str, process: subprocess.Popen[bytes]) -> None:
    """Poll until the route answers 200 with a refreshed token (20 s at most)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"service on port {port} exited with {process.returncode}")
        try:
            status, refreshed = get(port, token)
        except OSError:
            time.sleep(0.1)
            continue
        if status != 200 or not refreshed:
            raise SystemExit(f"port {port}: expected 200 with a new token, got {status}")
        return
    raise SystemExit(f"service on port {port} did not answer within 20 s")


def run_wrk(port: int, token: str, seconds: float, connections: int) -> float:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
         "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout
    if "Non-2xx" in output:
        raise SystemExit(f"non-2xx answers during the run:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise SystemExit(f"could not read wrk's output:\n{output}")
    return float(match.group(1))


def run_python_client(port: int, token: str, seconds: float, connections: int) -> float:
    """Keep-alive connections, one thread each, for ``seconds``; requests per second."""
    counts = [0] * connections
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while time.monotonic() < deadline:
            connection.request("GET", PATH, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            counts[index] += 1
        connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return sum(counts) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    load = run_wrk if shutil.which("wrk") else run_python_client
    token = subprocess.run(
        [sys.executable, "-c", TOKEN], capture_output=True, text=True, check=True, env=child_env()
    ).stdout.strip()
    ports = {"flask-gnar": free_port(), "bare": free_port()}
    processes = {
        "flask-gnar": start(GNAR_SERVICE, ports["flask-gnar"]),
        "bare": start(BARE_SERVICE, ports["bare"]),
    }
    results: dict[str, list[float]] = {name: [] for name in ports}
    try:
        for name, port in ports.items():
            wait_until_serving(port, token, processes[name])
            load(port, token, 1.0, args.connections)  # warm-up
        for round_number in range(args.rounds):
            order = list(ports) if round_number % 2 == 0 else list(reversed(ports))
            for name in order:
                results[name].append(load(ports[name], token, args.seconds, args.connections))
            print(f"round {round_number + 1}: " + ", ".join(
                f"{name} {results[name][-1]:.0f} req/s" for name in ports))
    finally:
        for process in processes.values():
            process.kill()
            process.wait(10)
    gnar, bare = (statistics.median(results[name]) for name in ("flask-gnar", "bare"))
    print(f"load generator: {'wrk' if load is run_wrk else 'python keep-alive client'}, "
          f"{args.connections} connections, {args.rounds} rounds of {args.seconds:g} s")
    print(f"median flask-gnar: {gnar:.0f} req/s, bare Flask + flask-jwt-extended: {bare:.0f} req/s")
    print(f"ratio flask-gnar / bare: {gnar / bare:.3f}x")


if __name__ == "__main__":
    main()
