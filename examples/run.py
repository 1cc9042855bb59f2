"""Run the example services on embedded defaults: an embedded Postgres, moto as a local AWS.

    python examples/run.py               # run until Ctrl-C
    python examples/run.py --smoke       # start, walk through the whole flow once, stop
    python examples/run.py --production  # serve with bjoern instead of the dev server

piste (user service)  sign-up stores an Argon2 hash in Postgres, sends a welcome mail (SES)
                      and publishes an event (SQS); login returns a JWT; /users/me is protected
                      and answers with a refreshed token in its Authorization header.
powder (worker)       polls piste's events from SQS; /feed/ calls piste through
                      gnar.peer("piste") with auto_auth.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import requests

from flask_gnar.embedded import (
    free_port,
    start_embedded_postgres,
    start_local_aws,
    stop_embedded_postgres,
    stop_local_aws,
)

HERE = Path(__file__).resolve().parent
SERVICES = ("piste", "powder")
SENDER = "welcome@piste.example"
QUEUE = "piste-events"


def prepare_aws(env: dict[str, str]) -> None:
    """The queue piste publishes to and the sender identity SES requires."""
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    session.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"]).create_queue(QueueName=QUEUE)
    session.client("ses", endpoint_url=env["AWS_ENDPOINT_URL"]).verify_email_identity(EmailAddress=SENDER)


def service_env(base: dict[str, str], ports: dict[str, int], production: bool) -> dict[str, str]:
    env = {
        **base,
        "PYTHONPATH": os.pathsep.join([str(HERE), base.get("PYTHONPATH", "")]),
        "GNAR_SES_SENDER": SENDER,
        "GNAR_JWT_SECRET_KEY": base.get("GNAR_JWT_SECRET_KEY") or secrets.token_urlsafe(48),
    }
    for name, port in ports.items():
        env[f"{name.upper()}_HTTP_PORT"] = str(port)
        env[f"{name.upper()}_PRODUCTION"] = "1" if production else "0"
    if production:
        env["PISTE_SERVICE_HOST"], env["PISTE_SERVICE_PORT"] = "127.0.0.1", str(ports["piste"])
    else:
        env["GNAR_PISTE_SERVICE_PORT"] = f"127.0.0.1:{ports['piste']}"
    return env


def start_service(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", f"{name}.app.main"], cwd=HERE, env=env, start_new_session=True
    )


def migrate(name: str, env: dict[str, str]) -> None:
    """What deploy/k8s's init container does: production applies no migration at start-up."""
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", f"{name}.app.main", "gnar", "migrate"],
        cwd=HERE, env=env, check=True,
    )


def wait_until_ready(url: str, processes: dict[str, subprocess.Popen[bytes]], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with status {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} was not ready within {timeout}s")


def check(response: requests.Response, status: int, what: str) -> requests.Response:
    if response.status_code != status:
        raise SystemExit(f"FAILED {what}: {response.status_code} {response.text}")
    print(f"ok  {status} {what}")
    return response


def smoke(ports: dict[str, int], aws_env: dict[str, str]) -> None:
    """The whole flow: sign-up, mail, event, login, refreshed token, worker, peer call."""
    piste, powder = (f"http://127.0.0.1:{ports[name]}" for name in SERVICES)
    email, password = f"rider-{uuid.uuid4().hex[:8]}@piste.example", "correct horse battery"
    for name, url in (("piste", piste), ("powder", powder)):
        home = check(requests.get(f"{url}/", timeout=10), 200, f"GET {name} / says what it is").json()
        if home["service"] != name or "/health/ready" not in home["routes"]:
            raise SystemExit(f"FAILED: {name}'s / does not describe it: {home}")
    check(requests.get(f"{piste}/hello/", timeout=10), 200, "GET piste /hello/")
    check(requests.get(f"{piste}/nowhere", timeout=10), 404, "GET piste /nowhere is a JSON 404")
    user = check(requests.post(f"{piste}/users/signup", json={"email": email, "password": password}, timeout=30),
                 201, "POST /users/signup").json()
    check(requests.post(f"{piste}/users/signup", json={"email": email, "password": password}, timeout=30),
          409, "signing up twice is refused")
    check(requests.post(f"{piste}/users/login", json={"email": email, "password": "wrong"}, timeout=30),
          401, "a wrong password is refused")
    token = check(requests.post(f"{piste}/users/login", json={"email": email, "password": password}, timeout=30),
                  200, "POST /users/login").json()["access_token"]
    check(requests.get(f"{piste}/users/me", timeout=10), 401, "GET /users/me without a token")
    me = check(requests.get(f"{piste}/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=10),
               200, "GET /users/me with the token")
    refreshed = me.headers.get("Authorization", "")
    if not refreshed.startswith("Bearer ") or me.json()["email"] != email:
        raise SystemExit(f"FAILED: no refreshed token or wrong user: {me.headers} {me.text}")
    print("ok  the response carries a refreshed token")
    deadline = time.monotonic() + 30
    while True:
        feed = check(requests.get(f"{powder}/feed/", headers={"Authorization": refreshed}, timeout=10),
                     200, "GET powder /feed/ (calls piste through gnar.peer with auto_auth)").json()
        if feed["me"]["email"] == email and any(e["id"] == user["id"] for e in feed["events"]):
            print("ok  powder handled piste's sign-up event from SQS")
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"FAILED: powder never saw the sign-up event: {feed}")
        time.sleep(0.5)
    ses = boto3.client("ses", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name=aws_env["AWS_DEFAULT_REGION"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    if ses.get_send_quota()["SentLast24Hours"] < 1:
        raise SystemExit("FAILED: no welcome mail was sent")
    print("ok  the welcome mail went out through SES")


TOUR = """
A short tour (paste it into a shell):

  curl -s {piste}/
  curl -s -X POST {piste}/users/signup -H 'Content-Type: application/json' \\
       -d '{{"email": "rider@piste.example", "password": "correct horse battery"}}'
  TOKEN=$(curl -s -X POST {piste}/users/login -H 'Content-Type: application/json' \\
       -d '{{"email": "rider@piste.example", "password": "correct horse battery"}}' \\
       | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
  curl -s {piste}/users/me -H "Authorization: Bearer $TOKEN"
  curl -s {powder}/feed/ -H "Authorization: Bearer $TOKEN"
  curl -s {piste}/metrics
"""

TRACES = """
Metrics: GET /metrics on each service (Prometheus' text format, every worker added up).
Traces: with flask-gnar[tracing] installed (nox installs it) both services send OTLP to
$OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318): run a collector such as
Jaeger there to follow a sign-up from piste through SQS into powder."""


def tour(ports: dict[str, int]) -> str:
    """Commands a newcomer can paste: sign up, log in, /users/me, powder's feed, metrics."""
    return TOUR.format(**{name: f"http://127.0.0.1:{port}" for name, port in ports.items()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="walk through the flow once and stop")
    parser.add_argument("--production", action="store_true", help="serve with bjoern")
    parser.add_argument("--port-base", type=int, default=9400, help="piste's port, powder's is next; 0: any free ports")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="gnar-examples-pg-"))
    postgres = start_embedded_postgres(data_dir)
    aws = start_local_aws()
    if args.port_base:
        ports = {name: args.port_base + offset for offset, name in enumerate(SERVICES)}
    else:
        ports = {name: free_port() for name in SERVICES}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        base = {**os.environ, **aws.env, "GNAR_PG_DSN": postgres.uri}
        prepare_aws(base)
        env = service_env(base, ports, args.production)
        if args.production:
            migrate("piste", env)
        for name in SERVICES:
            processes[name] = start_service(name, env)
            wait_until_ready(f"http://127.0.0.1:{ports[name]}/health/ready", processes)
            print(f"{name} is up on http://127.0.0.1:{ports[name]}/")
        if args.smoke:
            smoke(ports, aws.env)
            return 0
        print(f"Postgres: {postgres.uri}\nAWS stand-in: {aws.endpoint_url}")
        print(TRACES, tour(ports), "Ctrl-C stops everything.", sep="\n", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        for process in processes.values():
            signal_group(process, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
        stop_local_aws(aws)
        stop_embedded_postgres(postgres)


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """The service and whatever it started (the dev server's reloader child)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    sys.exit(main())
