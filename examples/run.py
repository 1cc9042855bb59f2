"""Run the example services on embedded defaults.

    python examples/run.py            # run until Ctrl-C
    python examples/run.py --smoke    # start, exercise every route once, stop (exit 0 on success)
    python examples/run.py --production   # serve with bjoern instead of the dev server
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent

SERVICES = {"piste": 9400}


def start_service(name: str, port: int, production: bool, env: dict[str, str]) -> subprocess.Popen[bytes]:
    service_env = {
        **env,
        f"{name.upper()}_PORT": str(port),
        f"{name.upper()}_PRODUCTION": "1" if production else "0",
        "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", f"{name}.app.main"], cwd=HERE, env=service_env, start_new_session=True
    )


def wait_until_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {timeout}s")


def smoke(ports: dict[str, int]) -> None:
    base = f"http://127.0.0.1:{ports['piste']}"
    checks = [
        (f"{base}/hello/", 200, {"hello": "world", "service": "piste"}),
        (f"{base}/hello/gnar", 200, {"hello": "gnar", "service": "piste"}),
        (f"{base}/nowhere", 404, None),
    ]
    for url, status, body in checks:
        response = requests.get(url, timeout=10)
        assert response.status_code == status, (url, response.status_code, response.text)
        assert body is None or response.json() == body, (url, response.text)
        print(f"ok  {status} {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="exercise the services once and stop")
    parser.add_argument("--production", action="store_true", help="serve with bjoern")
    parser.add_argument("--port-base", type=int, default=9400)
    args = parser.parse_args()

    ports = {name: args.port_base + offset for offset, name in enumerate(SERVICES)}
    env = dict(os.environ)
    processes = {name: start_service(name, port, args.production, env) for name, port in ports.items()}
    try:
        for name, port in ports.items():
            wait_until_up(f"http://127.0.0.1:{port}/")
            print(f"{name} is up on http://127.0.0.1:{port}/")
        if args.smoke:
            smoke(ports)
            return 0
        print("Ctrl-C stops everything.")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        for process in processes.values():
            signal_group(process, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """The service and whatever it started (the dev server's reloader child)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    sys.exit(main())
