"""What a burst of logins does to other routes: bjoern serves one request at a time per
worker, and an Argon2 verification with the default parameters takes ~150-200 ms.

    python bench/login_burst.py [--rounds 3] [--seconds 4] [--logins 8]

For 1 and 2 workers: the p50/p99 latency of GET /json at a light load (wrk, 2
connections), alone and while --logins clients post /login back to back.
"""

from __future__ import annotations

import argparse
import threading
import time

import requests

from common import free_port, machine, median, start_server, stop_server, wait_until_up, wrk


def hammer_logins(url: str, stop: threading.Event, durations: list[float]) -> None:
    with requests.Session() as session:
        while not stop.is_set():
            started = time.perf_counter()
            session.post(url, json={"password": "correct horse battery staple"}, timeout=60)
            durations.append(time.perf_counter() - started)


def measure(workers: int, seconds: int, logins: int) -> dict[str, float]:
    port = free_port()
    process = start_server(["servers.py", "gnar-login", str(port), str(workers)])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/json", process)
        wrk(f"{base}/json", 1, 2)
        quiet = wrk(f"{base}/json", seconds, 2)
        stop, durations = threading.Event(), []
        clients = [threading.Thread(target=hammer_logins, args=(f"{base}/login", stop, durations))
                   for _ in range(logins)]
        for client in clients:
            client.start()
        time.sleep(0.5)
        busy = wrk(f"{base}/json", seconds, 2)
        stop.set()
        for client in clients:
            client.join(timeout=120)
        return {"quiet_p50": quiet["p50_ms"], "quiet_p99": quiet["p99_ms"], "quiet_rps": quiet["rps"],
                "busy_p50": busy["p50_ms"], "busy_p99": busy["p99_ms"], "busy_rps": busy["rps"],
                "login_ms": median(durations) * 1000, "logins_per_s": len(durations) / (seconds + 0.5)}
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--logins", type=int, default=8)
    args = parser.parse_args()
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for round_number in range(args.rounds):
        for workers in ((1, 2) if round_number % 2 == 0 else (2, 1)):
            runs[workers].append(measure(workers, args.seconds, args.logins))
        print(f"round {round_number + 1}/{args.rounds} done", flush=True)
    print(f"\nmachine: {machine()}; {args.logins} login clients, GET /json at wrk -c2, "
          f"{args.rounds} alternating rounds, medians")
    print(f"{'workers':>7}{'json p50 quiet':>16}{'p99 quiet':>11}{'p50 burst':>11}{'p99 burst':>11}"
          f"{'json req/s quiet/burst':>24}{'login ms':>10}{'logins/s':>10}")
    for workers, results in runs.items():
        row = {key: median([r[key] for r in results]) for key in results[0]}
        print(f"{workers:>7}{row['quiet_p50']:>16.2f}{row['quiet_p99']:>11.2f}{row['busy_p50']:>11.2f}"
              f"{row['busy_p99']:>11.2f}{row['quiet_rps']:>12.0f}/{row['busy_rps']:<11.0f}"
              f"{row['login_ms']:>10.0f}{row['logins_per_s']:>10.1f}")


if __name__ == "__main__":
    main()
