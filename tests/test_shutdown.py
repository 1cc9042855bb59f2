"""SIGTERM under continuous load: every accepted connection is answered, no client is reset.

Real bjoern workers in a real process; the clients classify each outcome (traffic_support).
"""

from __future__ import annotations

import signal
import socket

import pytest

from flask_gnar import listener
from hardening_support import start_hardy, worker_pids, wait_until
from traffic_support import Traffic


@pytest.mark.slow
@pytest.mark.parametrize("round_", [1, 2, 3])
def test_sigterm_under_new_connection_load_resets_no_client(round_: int) -> None:
    service = start_hardy(GNAR_WORKERS="2", GNAR_SHUTDOWN_GRACE_SECONDS="20")
    try:
        worker_pids(service, 2)
        with Traffic(service.port, new=6, keep_alive=2) as traffic:
            wait_until(lambda: traffic.count("ok") >= 200, what="traffic under way")
            service.process.send_signal(signal.SIGTERM)
            assert service.process.wait(timeout=30) == 0
            traffic.wait_until_stopped()
        summary = traffic.summary()
        print(f"SIGTERM under load, round {round_}: {dict(summary)}")
        assert traffic.failures() == [], summary
        assert set(summary) <= {"ok", "503", "refused"}, summary
        assert summary["refused"] == 8, "every client ends on a refused connection, not a reset"
    finally:
        output = service.stop()
    assert output.count("no request in flight: stopping") == 2, output


def test_a_refusing_socket_keeps_its_queue_and_hands_new_clients_to_the_others() -> None:
    """The mechanism itself: SYNs to the leaving socket are dropped, queued ones are kept,
    and once it is released the clients' retransmitted SYNs reach the remaining socket."""
    leaving, port = reuse_port_listener(0)
    staying, _ = reuse_port_listener(port)
    with leaving, staying:
        queued = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(16)]
        wait_until(lambda: queue_lengths(leaving, staying) == 16, what="connections queued")
        in_queue = listener.queued_connections(leaving)
        listener.refuse_new_connections(leaving)
        late = [socket.socket() for _ in range(16)]
        for client in late:
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
        accepted = accept_all(leaving)
        assert len(accepted) == in_queue and listener.queued_connections(leaving) == 0
        listener.release(leaving)
        staying.settimeout(10)
        total = len(queued) + len(late) - in_queue
        taken = [staying.accept()[0] for _ in range(total)]
        for conn in taken + accepted:
            conn.close()
        for client in late + queued:
            client.close()
    assert len(taken) == total


def queue_lengths(*sockets: socket.socket) -> int:
    return sum(listener.queued_connections(sock) for sock in sockets)


def reuse_port_listener(port: int) -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock, sock.getsockname()[1]


def accept_all(sock: socket.socket) -> list[socket.socket]:
    sock.setblocking(False)
    accepted = []
    while True:
        try:
            accepted.append(sock.accept()[0])
        except BlockingIOError:
            return accepted
