"""HTTP benchmark: a flask-gnar JSON route under serve() against bare Flask on bjoern and
on gunicorn, with 1 and 2 workers. Alternating rounds, medians, ratios in one run.

    python bench/http_bench.py [--rounds 5] [--seconds 4] [--connections 16]
"""

from __future__ import annotations

import argparse

from common import (
    cpu_seconds,
    free_port,
    machine,
    median,
    start_server,
    stop_server,
    wait_until_up,
    wrk,
)

KINDS = ["gnar", "gnar-nometrics", "bjoern", "bjoern-rp", "bjoern-lean", "gunicorn"]


def measure(kind: str, workers: int, seconds: float, connections: int) -> dict[str, float]:
    port = free_port()
    process = start_server(["servers.py", kind, str(port), str(workers)])
    url = f"http://127.0.0.1:{port}/json"
    try:
        wait_until_up(url, process)
        wrk(url, 1, connections)
        cpu_before = cpu_seconds(process.pid)
        result = wrk(url, seconds, connections)
        result["cpu_us"] = (cpu_seconds(process.pid) - cpu_before) / result["requests"] * 1e6
        return result
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS))
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    worker_counts = [int(w) for w in args.workers.split(",")]

    configs = [(kind, workers) for workers in worker_counts for kind in kinds]
    results: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in configs}
    for round_number in range(args.rounds):
        order = configs[round_number % len(configs):] + configs[:round_number % len(configs)]
        for kind, workers in order:
            results[(kind, workers)].append(measure(kind, workers, args.seconds, args.connections))
        print(f"round {round_number + 1}/{args.rounds} done", flush=True)

    summary = {
        config: {key: median([run[key] for run in runs]) for key in runs[0]}
        for config, runs in results.items()
    }
    print(f"\nmachine: {machine()}; wrk -t1 -c{args.connections} -d{args.seconds}s, "
          f"{args.rounds} alternating rounds, medians")
    print(f"{'server':<16}{'workers':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
          f"{'CPU us/req':>12}")
    for (kind, workers), row in summary.items():
        print(f"{kind:<16}{workers:>8}{row['rps']:>10.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
              f"{row['non_2xx']:>9.0f}{row['cpu_us']:>12.1f}")
    print()
    for workers in worker_counts:
        gnar = summary.get(("gnar", workers), {}).get("rps")
        for other in KINDS[1:]:
            if gnar and (other, workers) in summary:
                theirs = summary[(other, workers)]
                print(f"{workers} worker(s): flask-gnar / {other} = {gnar / theirs['rps']:.3f}x "
                      f"req/s, {theirs['cpu_us'] / summary[('gnar', workers)]['cpu_us']:.3f}x "
                      "by CPU per request")
    if 1 in worker_counts and 2 in worker_counts:
        for kind in kinds:
            print(f"{kind}: 2 workers / 1 worker = {summary[(kind, 2)]['rps'] / summary[(kind, 1)]['rps']:.2f}x")


if __name__ == "__main__":
    main()
