"""A pool used before serve() forks is not shared with the workers."""

import re

import requests

from helpers import free_port, start_module, stop, wait_for_http


def test_workers_never_share_the_parents_database_connection(gnar_postgres):
    port = free_port()
    process = start_module("forky.app.main", str(port), GNAR_PG_DSN=gnar_postgres.uri)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/backend", process=process)
        answers = [requests.get(f"http://127.0.0.1:{port}/backend", timeout=5,
                                headers={"Connection": "close"}) for _ in range(60)]
    finally:
        output = stop(process)
    assert all(answer.status_code == 200 for answer in answers), output
    parent_backend = int(re.search(r"PARENT backend=(\d+)", output).group(1))
    backends_by_worker = {}
    for answer in answers:
        backends_by_worker.setdefault(answer.json()["pid"], set()).add(answer.json()["backend"])
    assert len(backends_by_worker) == 2, "both workers answered"
    worker_backends = set().union(*backends_by_worker.values())
    assert parent_backend not in worker_backends
    first, second = backends_by_worker.values()
    assert not first & second, "each worker has its own connections"
