"""A database route: ``gnar.db.one("SELECT 1")`` under ``create_app`` + ``serve()`` against bare
Flask + postgres.py, both on bjoern (1 worker) and on one embedded Postgres.

    python bench/bench_db.py [--rounds 15] [--seconds 2] [--connections 4]

Both servers run for the whole benchmark; wrk measures them in turn, alternating which
goes first. Prints the medians of requests per second and the median of the per-round
ratios, from one run.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from contextlib import ExitStack

from pgserver.postgres_server import get_server

from common import free_port, machine, median, start_server, stop_server, wait_until_up, wrk

KINDS = ("db-gnar", "db-bare")


def start(stack: ExitStack, kind: str, uri: str) -> str:
    port = free_port()
    process: subprocess.Popen[bytes] = start_server(
        ["servers.py", kind, str(port), "1"], env={"BENCH_PG_URI": uri}
    )
    stack.callback(stop_server, process)
    url = f"http://127.0.0.1:{port}/db"
    wait_until_up(url, process)
    return url


def measure(kind: str, url: str, seconds: float, connections: int) -> dict[str, float]:
    result = wrk(url, seconds, connections)
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"{kind}: {result['non_2xx']:.0f} non-2xx answers or socket errors")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as data_dir, ExitStack() as stack:
        server = get_server(f"{data_dir}/pgdata", cleanup_mode="stop")
        stack.callback(server.cleanup)
        urls = {kind: start(stack, kind, server.get_uri()) for kind in KINDS}
        for kind in KINDS:
            measure(kind, urls[kind], 1, args.connections)  # warm-up
        for round_number in range(args.rounds):
            for kind in KINDS if round_number % 2 == 0 else KINDS[::-1]:
                results[kind].append(measure(kind, urls[kind], args.seconds, args.connections))
            print(f"round {round_number + 1}/{args.rounds}: " + ", ".join(
                f"{kind} {results[kind][-1]['rps']:.0f} req/s" for kind in KINDS), flush=True)
    print(f"\nmachine: {machine()}; wrk -t1 -c{args.connections} -d{args.seconds}s, "
          f"{args.rounds} alternating rounds, medians")
    rps = {}
    for kind in KINDS:
        rps[kind] = median([run["rps"] for run in results[kind]])
        p50 = median([run["p50_ms"] for run in results[kind]])
        p99 = median([run["p99_ms"] for run in results[kind]])
        print(f"{kind:<8} {rps[kind]:>8.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    ratios = [g["rps"] / b["rps"] for g, b in zip(results["db-gnar"], results["db-bare"])]
    print(f"flask-gnar / bare Flask + postgres.py: {rps['db-gnar'] / rps['db-bare']:.3f}x "
          f"(ratio of the medians), {median(ratios):.3f}x (median of the per-round ratios)")


if __name__ == "__main__":
    main()
