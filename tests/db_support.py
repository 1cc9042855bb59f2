"""Real servers for the GnarDB tests: a Postgres of their own, and a TCP proxy that can cut."""

from __future__ import annotations

import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from psycopg2.extensions import parse_dsn


@dataclass
class OwnPostgres:
    """A pgserver cluster the tests may stop and restart (the shared one stays up)."""

    server: object = field(repr=False)

    @property
    def uri(self) -> str:
        return str(self.server.get_uri())  # type: ignore[attr-defined]

    @property
    def socket_path(self) -> str:
        params = parse_dsn(self.uri)
        return f"{params['host']}/.s.PGSQL.{params.get('port', '5432')}"

    def pg_ctl(self, *args: str) -> None:
        import pgserver

        pgserver.pg_ctl(
            list(args),
            pgdata=self.server.pgdata,  # type: ignore[attr-defined]
            user=self.server.system_user,  # type: ignore[attr-defined]
            timeout=30,
        )

    def restart(self) -> None:
        """Start the server, or restart it (``pg_ctl restart`` reuses the start options)."""
        self.pg_ctl("-w", "-m", "fast", "restart")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")

    def running(self) -> bool:
        try:
            self.pg_ctl("status")
        except subprocess.CalledProcessError:
            return False
        return True


def start_own_postgres(data_dir: Path) -> OwnPostgres:
    import pgserver

    return OwnPostgres(pgserver.get_server(str(data_dir), cleanup_mode="stop"))


def stop_own_postgres(postgres: OwnPostgres) -> None:
    if postgres.running():
        postgres.stop()
    postgres.server.cleanup()  # type: ignore[attr-defined]


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.cut = False


class CuttingProxy:
    """127.0.0.1:port -> a Postgres unix socket; ``cut()`` kills the open connections silently.

    After a cut the client is told nothing until it sends something, then its
    socket is closed: a connection that looks alive in the pool but is dead,
    as after a failover that sent no goodbye.
    """

    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.pairs: list[_Pair] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.unix_path)
            pair = _Pair(client, upstream)
            with self.lock:
                self.pairs.append(pair)
            threading.Thread(target=self.pump, args=(pair, client, upstream), daemon=True).start()
            threading.Thread(target=self.pump, args=(pair, upstream, client), daemon=True).start()

    def pump(self, pair: _Pair, source: socket.socket, target: socket.socket) -> None:
        try:
            while (data := source.recv(65536)) and not pair.cut:
                target.sendall(data)
        except OSError:
            pass
        if not pair.cut or source is pair.client:
            for sock in (pair.client, pair.upstream):
                close_quietly(sock)

    def cut(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            pair.cut = True
            close_quietly(pair.upstream)

    def close(self) -> None:
        close_quietly(self.listener)
        self.cut()


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
