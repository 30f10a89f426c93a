"""The metrics endpoint: prometheus_client's WSGI app on a thread-per-connection server that no client can wedge.

Why not `prometheus_client.start_http_server`, which serves the same app: its handler waits without
limit for a request line and for a client to read the response, so each client that connects and
never sends, or stops reading, holds a thread forever. Here reading a request and writing a
response each get `CONNECTION_TIMEOUT` seconds, then the connection is closed and its thread ends.
Other scrapes never wait for a stuck one: each connection has its own thread, and the response is
rendered in full before it is written, so no metric lock is held while a slow client reads.

A forked child closes its copy of the listening socket (see `_after_fork_in_child`): it neither
answers on, nor keeps bound, a port its parent serves, and its `stop()` does not wait for a serving
thread that fork did not copy.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import weakref
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = ["CONNECTION_TIMEOUT", "MetricsServer"]

# Seconds to read a request, and to write a response (Prometheus' default scrape timeout is 10 s).
CONNECTION_TIMEOUT: Final = 30.0
# How often the serving loop checks for stop(): the most stop() waits.
POLL_INTERVAL: Final = 0.1

_running: weakref.WeakSet[MetricsServer] = weakref.WeakSet()
_fork_hook_lock = threading.Lock()
_fork_hook_registered = False


class _ClientErrorsSilenced:
    """stderr for wsgiref's handler, less its tracebacks of timed-out or broken connections (a client's doing)."""

    def write(self, text: str) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _Handler(WSGIRequestHandler):
    """Silent, and with the server's per-connection timeout on its socket."""

    def setup(self) -> None:
        self.timeout = self.server.connection_timeout  # type: ignore[attr-defined]
        super().setup()

    def get_stderr(self) -> Any:
        return _ClientErrorsSilenced()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        """No access log: scrapes every few seconds are no news."""


class _Server(ThreadingWSGIServer):
    daemon_threads = True  # a stuck connection's thread never holds up stop() or the process' exit

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, reuse_port: bool, timeout: float):
        self.address_family = family
        self.reuse_port = reuse_port
        self.connection_timeout = timeout
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a timed-out or vanished client is no error of ours
            super().handle_error(request, client_address)

    def server_bind(self) -> None:
        if self.reuse_port and hasattr(socket, "SO_REUSEPORT"):
            # Several processes bind the same port and the kernel spreads connections over them.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class MetricsServer:
    """Serves `registry` as Prometheus text or OpenMetrics (by the scraper's Accept header) on `host:port`.

    :param reuse_port: bind with SO_REUSEPORT, so that worker processes can all serve one port
        (multiprocess mode, where any of them answers with every worker's metrics).
    :param connection_timeout: seconds to read a request, and to write a response, on one connection.
    :raises OSError: when the address cannot be bound.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        connection_timeout: float = CONNECTION_TIMEOUT,
    ) -> None:
        family, address = _address(host, port)
        self._server = _Server(address, family, reuse_port, connection_timeout)
        self._server.set_app(make_wsgi_app(registry))
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, name="hayscope-metrics", daemon=True
        )
        self._thread.start()
        _watch_forks(self)

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """Where to scrape, e.g. `http://127.0.0.1:9464/metrics`."""
        host, port = self.server_address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/metrics"

    @property
    def serving(self) -> bool:
        """True in the process that started it, until `stop()`."""
        return self._pid == os.getpid() and self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving and free the port (in a forked child: close the child's copy only). Idempotent."""
        _running.discard(self)
        if self._pid == os.getpid() and self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def _close_forked_copy(self) -> None:
        self._server.server_close()


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The address family and address to bind, e.g. IPv6 for `::1`, or for a name that resolves only to IPv6."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, (str(sockaddr[0]), port)


def _after_fork_in_child() -> None:
    for server in list(_running):
        _running.discard(server)
        server._close_forked_copy()


def _watch_forks(server: MetricsServer) -> None:
    global _fork_hook_registered
    with _fork_hook_lock:
        _running.add(server)
        if not _fork_hook_registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_registered = True
