"""Tracing's cost: the same flask-gnar JSON route with GnarTracing off and on.

On, every request is sampled (``OTEL_TRACES_SAMPLER=always_on``) and exported over
OTLP/HTTP to a local receiver (``otlp_sink.py``, its own process). Bare Flask on
bjoern is the baseline that shows tracing off costs nothing. One worker each,
alternating rounds, medians; server CPU per request from /proc.

    python bench/tracing.py [--rounds 5] [--seconds 4] [--connections 16]
"""

from __future__ import annotations

import argparse
import os

import requests

from common import free_port, machine, median, start_server, stop_server, wait_until_up, wrk

SETUPS = {
    "bare bjoern": (["bjoern-rp"], {}),
    "gnar tracing off": (["gnar"], {"GNAR_TRACING": "false"}),
    "gnar spans only": (["gnar"], {"GNAR_TRACING": "true", "OTEL_TRACES_SAMPLER": "always_on",
                                   "OTEL_TRACES_EXPORTER": "none"}),
    "gnar tracing on": (["gnar"], {"GNAR_TRACING": "true", "OTEL_TRACES_SAMPLER": "always_on"}),
}
TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in the process group."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def measure(name: str, sink_url: str, seconds: float, connections: int) -> dict[str, float]:
    kind, env = SETUPS[name]
    port = free_port()
    env = {**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{sink_url}/v1/traces"}
    process = start_server(["servers.py", kind[0], str(port), "1"], env=env)
    url = f"http://127.0.0.1:{port}/json"
    try:
        wait_until_up(url, process)
        wrk(url, 1, connections)
        spans_before = int(requests.get(f"{sink_url}/count", timeout=5).text)
        cpu_before = group_cpu_seconds(process.pid)
        result = wrk(url, seconds, connections)
        cpu = group_cpu_seconds(process.pid) - cpu_before
        requests_done = result["rps"] * seconds
        result["cpu_us"] = cpu / requests_done * 1e6
        result["spans"] = float(int(requests.get(f"{sink_url}/count", timeout=5).text) - spans_before)
        return result
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    sink_port = free_port()
    sink = start_server(["otlp_sink.py", str(sink_port)])
    sink_url = f"http://127.0.0.1:{sink_port}"
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SETUPS}
    try:
        wait_until_up(f"{sink_url}/count", sink)
        names = list(SETUPS)
        for round_number in range(args.rounds):
            order = names[round_number % len(names):] + names[:round_number % len(names)]
            for name in order:
                results[name].append(measure(name, sink_url, args.seconds, args.connections))
            print(f"round {round_number + 1}/{args.rounds} done", flush=True)
    finally:
        stop_server(sink)
    summary = {name: {key: median([run[key] for run in runs]) for key in runs[0]} for name, runs in results.items()}
    print(f"\nmachine: {machine()}; wrk -t1 -c{args.connections} -d{args.seconds}s, 1 worker, "
          f"{args.rounds} alternating rounds, medians")
    print(f"{'setup':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'spans':>9}")
    for name, row in summary.items():
        print(f"{name:<18}{row['rps']:>9.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
              f"{row['cpu_us']:>12.0f}{row['spans']:>9.0f}")
    on, off, bare = (summary[n]["rps"] for n in ("gnar tracing on", "gnar tracing off", "bare bjoern"))
    print(f"\ntracing on / tracing off: {on / off:.3f}x")
    print(f"tracing off / bare bjoern: {off / bare:.3f}x")


if __name__ == "__main__":
    main()
