"""What GnarDB's restart-safe checkout costs: ``one("SELECT 1")`` against plain postgres.py.

Run: python bench/bench_db.py  (starts an embedded Postgres in a temporary directory).
Prints the median time per query of each, over several rounds, and their ratio.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable

import postgres
from pgserver.postgres_server import get_server

from flask_gnar.db import GnarPostgres

QUERIES = 2000
ROUNDS = 7


def per_query(one: Callable[[str], object]) -> float:
    start = time.perf_counter()
    for _ in range(QUERIES):
        one("SELECT 1")
    return (time.perf_counter() - start) / QUERIES


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        server = get_server(f"{data_dir}/pgdata", cleanup_mode="stop")
        uri = server.get_uri()
        plain = postgres.Postgres(uri, minconn=1, maxconn=2)
        gnar = GnarPostgres(uri, minconn=1, maxconn=2, idle_timeout=600, target="bench")
        timings: dict[str, list[float]] = {"postgres.Postgres": [], "GnarPostgres": []}
        for _ in range(ROUNDS):
            timings["postgres.Postgres"].append(per_query(plain.one))
            timings["GnarPostgres"].append(per_query(gnar.one))
        medians = {name: statistics.median(values) for name, values in timings.items()}
        for name, median in medians.items():
            print(f"{name:18} median {median * 1e6:8.1f} us per one('SELECT 1')")
        ratio = medians["GnarPostgres"] / medians["postgres.Postgres"]
        print(f"ratio GnarPostgres / postgres.Postgres: {ratio:.3f}")
        plain.pool.clear()
        gnar.close()
        server.cleanup()


if __name__ == "__main__":
    main()
