"""serve(): bjoern in production, the reloading dev server otherwise, in real processes."""

import signal
import threading
import time

import pytest
import requests

from flask_gnar import create_app, get_state, serve
from helpers import free_port, start_module, stop, wait_for_http, wait_until


def start_slowpoke(production, port):
    return start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1" if production else "0")


def test_production_serves_with_bjoern():
    port = free_port()
    process = start_slowpoke(True, port)
    try:
        response = wait_for_http(f"http://127.0.0.1:{port}/pid", process=process)
        assert response.status_code == 200 and response.json()["pid"] == process.pid
        assert "Server" not in response.headers or "Werkzeug" not in response.headers["Server"]
        assert requests.get(f"http://127.0.0.1:{port}/nowhere", timeout=5).json()["error"]
    finally:
        output = stop(process)
    assert "(production)" in output and output.count("HOOK start") == 1


def test_sigterm_finishes_the_request_in_flight_and_exits_zero(tmp_path):
    port = free_port()
    started = tmp_path / "started"
    process = start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1",
                           SLOWPOKE_STARTED=str(started))
    wait_for_http(f"http://127.0.0.1:{port}/pid", process=process)
    result = {}

    def slow_request():
        result["response"] = requests.get(f"http://127.0.0.1:{port}/slow/1.0", timeout=10)

    worker = threading.Thread(target=slow_request)
    worker.start()
    wait_until(started.exists, what="the slow request under way")
    process.send_signal(signal.SIGTERM)
    worker.join(timeout=10)
    try:
        assert process.wait(timeout=15) == 0
    finally:
        output = stop(process)
    assert result["response"].status_code == 200, output
    assert result["response"].json() == {"slept": 1.0}
    assert "HOOK stop" in output


def test_sigterm_with_an_idle_keep_alive_client_exits_once_nothing_is_in_flight():
    port = free_port()
    process = start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1",
                           GNAR_SHUTDOWN_GRACE_SECONDS="60")
    session = requests.Session()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/pid", process=process)
        assert session.get(f"http://127.0.0.1:{port}/pid", timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        session.close()
        output = stop(process)
    assert "no request in flight: stopping" in output and "HOOK stop" in output


def test_a_request_longer_than_the_grace_period_is_cut_and_the_process_still_exits_zero(tmp_path):
    port = free_port()
    started = tmp_path / "started"
    process = start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1",
                           GNAR_SHUTDOWN_GRACE_SECONDS="0.5", SLOWPOKE_STARTED=str(started))
    try:
        wait_for_http(f"http://127.0.0.1:{port}/pid", process=process)
        worker = threading.Thread(
            target=lambda: pytest.raises(requests.RequestException, requests.get,
                                         f"http://127.0.0.1:{port}/slow/5.0", timeout=10)
        )
        worker.start()
        wait_until(started.exists, what="the slow request under way")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        worker.join(timeout=10)
    finally:
        output = stop(process)
    assert "grace period over with 1 request(s) in flight" in output


def test_development_serves_with_the_reloader_and_starts_hooks_only_in_the_child():
    port = free_port()
    process = start_slowpoke(False, port)
    try:
        response = wait_for_http(f"http://127.0.0.1:{port}/pid", process=process)
        assert response.json()["pid"] != process.pid, "the reloader's child serves"
    finally:
        output = stop(process)
    assert "(development)" in output
    assert output.count("HOOK start") == 1
    assert f"HOOK start pid={response.json()['pid']}" in output


def test_serve_needs_an_app_built_with_flask_gnar():
    from flask import Flask

    with pytest.raises(RuntimeError, match="not registered"):
        serve(Flask("plain"))


def test_port_defaults_to_the_one_given_to_create_app():
    application = create_app("snowy", port=9123, no_db=True, no_jwt=True)
    assert get_state(application).port == 9123


def answers_by_worker(port, path="/pid", requests_count=40):
    """``path``'s JSON answer by the pid of the worker that gave it; a connection
    queued at a worker just killed is reset."""
    answers = {}
    for _ in range(requests_count):
        try:
            answer = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5,
                                  headers={"Connection": "close"}).json()
        except requests.ConnectionError:
            continue
        answers[answer.pop("pid")] = answer
    return answers


def distinct_pids(port):
    """The workers that answered."""
    return set(answers_by_worker(port))


def wait_for_workers(port, count, process, path="/pid", timeout=20.0):
    """``answers_by_worker`` once ``count`` workers have answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, stop(process)
        answers = answers_by_worker(port, path)
        if len(answers) >= count:
            return answers
    raise AssertionError(f"never saw {count} workers answering")


def wait_for_pids(port, count, process):
    return set(wait_for_workers(port, count, process))


def test_two_workers_share_the_port_and_a_dead_worker_is_replaced():
    port = free_port()
    process = start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1", GNAR_WORKERS="2")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/pid", process=process)
        first = wait_for_pids(port, 2, process)
        assert process.pid not in first, "the supervisor does not serve"
        victim = sorted(first)[0]
        import os

        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = distinct_pids(port)
            if len(pids) == 2 and victim not in pids:
                break
        else:
            raise AssertionError("the dead worker was not replaced")
    finally:
        output = stop(process)
    assert "exited (killed by SIGKILL); starting a new one" in output


def test_sigterm_to_two_workers_answers_every_accepted_request_and_exits_zero():
    port = free_port()
    process = start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1", GNAR_WORKERS="2")
    wait_for_http(f"http://127.0.0.1:{port}/pid", process=process)
    wait_for_pids(port, 2, process)
    results = []

    def client():
        for _ in range(30):
            try:
                response = requests.get(f"http://127.0.0.1:{port}/slow/0.05", timeout=10)
            except requests.ConnectionError as error:
                results.append("refused" if "refused" in str(error).lower() else f"dropped: {error}")
                return
            results.append(response.status_code)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    wait_until(lambda: len(results) >= 8, what="requests answered before SIGTERM")
    process.send_signal(signal.SIGTERM)
    for thread in clients:
        thread.join(timeout=20)
    try:
        assert process.wait(timeout=20) == 0
    finally:
        output = stop(process)
    answered = [r for r in results if isinstance(r, int)]
    assert answered and all(status == 200 for status in answered), results
    assert not [r for r in results if str(r).startswith("dropped")], results
    assert output.count("HOOK stop") == 2


def test_during_the_shutdown_delay_readiness_fails_while_requests_are_still_served():
    port = free_port()
    process = start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1",
                           GNAR_SHUTDOWN_DELAY_SECONDS="6")
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for_http(f"{base}/health/ready", process=process).status_code == 200
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while requests.get(f"{base}/health/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "readiness never turned false"
            time.sleep(0.05)
        assert requests.get(f"{base}/pid", timeout=5).status_code == 200
        assert process.wait(timeout=15) == 0
    finally:
        output = stop(process)
    assert "readiness is false" in output


def test_production_options_are_ignored_with_a_warning_in_development():
    port = free_port()
    code = (
        "import sys; from flask_gnar import create_app, serve;"
        f"app = create_app('snowy', port={port}, no_db=True, no_jwt=True);"
        "serve(app, host='127.0.0.1', workers=4, grace=3, use_reloader=False)"
    )
    from helpers import start_process

    process = start_process(code)
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/lifts/", process=process).status_code == 200
    finally:
        output = stop(process)
    assert "workers, grace apply in production only" in output


def test_stop_hooks_share_the_grace_period():
    port = free_port()
    process = start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1",
                           GNAR_SHUTDOWN_GRACE_SECONDS="1", SLOWPOKE_STOP_HANG="60")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/pid", process=process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        output = stop(process)
    assert "stop hooks still running at the end of the grace period" in output


def test_in_flight_count_drops_when_the_response_is_closed():
    from werkzeug.test import EnvironBuilder

    from flask_gnar.inflight import InFlight

    application = create_app("snowy", no_db=True, no_jwt=True)
    counter = InFlight(application.wsgi_app)
    body = counter(EnvironBuilder(path="/lifts/").get_environ(), lambda status, headers, exc=None: None)
    assert counter.count == 1
    assert b"gondola" in b"".join(body)
    body.close()
    assert counter.count == 0

    def plain_wsgi(environ, start_response):
        start_response("200 OK", [])
        return iter([b"plain"])

    plain = InFlight(plain_wsgi)
    body = plain({}, lambda status, headers, exc=None: None)
    assert plain.count == 1 and list(body) == [b"plain"]
    body.close()
    assert plain.count == 0


def test_a_taken_port_stops_the_supervisor_before_any_worker_starts():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1", GNAR_WORKERS="2")
        try:
            assert process.wait(timeout=30) != 0
        finally:
            output = stop(process)
    assert "Address already in use" in output
    assert "HOOK start" not in output and "starting 2 bjoern workers" not in output


def test_production_workers_start_with_the_start_up_objects_frozen_and_still_collect():
    port = free_port()
    process = start_module("slowpoke.app.main", str(port), SLOWPOKE_PRODUCTION="1", GNAR_WORKERS="2")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/pid", process=process)
        workers = wait_for_workers(port, 2, process, path="/gc")
    finally:
        stop(process)
    for answer in workers.values():
        assert answer["enabled"] is True
        assert answer["frozen"] > 10_000, answer  # the app, its extensions and their imports


def test_the_development_server_freezes_nothing():
    port = free_port()
    process = start_slowpoke(False, port)
    try:
        answer = wait_for_http(f"http://127.0.0.1:{port}/gc", process=process).json()
    finally:
        stop(process)
    assert answer["frozen"] == 0 and answer["enabled"] is True
