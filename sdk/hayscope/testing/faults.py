"""Collectors in trouble, for tests and benchmarks: one that hangs, and an endpoint that refuses connections.

`OtlpReceiver(fail=True)` answers every export with an error and `OtlpReceiver(delay=...)` answers
slowly; these two cover what a receiver cannot: no answer at all, and no connection at all.

>>> with HangingCollector() as collector:
...     setup_telemetry(otlp_endpoint=collector.endpoint, otlp_timeout=1, ...)   # every export times out
>>> with refusing_endpoint() as endpoint:
...     setup_telemetry(otlp_endpoint=endpoint, ...)                            # every connection is refused
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

__all__ = ["HangingCollector", "refusing_endpoint"]


class HangingCollector:
    """Accepts every connection and reads every byte sent to it, and never answers (gRPC or HTTP alike).

    `endpoint` is its URL (`http://127.0.0.1:PORT`), `accepted` how many connections it took.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._listener = socket.create_server((host, 0))
        self._listener.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hanging-collector", daemon=True)
        self._accepted = 0

    @property
    def endpoint(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def accepted(self) -> int:
        return self._accepted

    def start(self) -> HangingCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket: clients waiting on it see the connection drop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._listener.close()

    def __enter__(self) -> HangingCollector:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            # The short select timeout only bounds how long stop() waits.
            while not self._stop.is_set():
                for key, _events in selector.select(timeout=0.05):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if sock is self._listener:
                        self._accept(selector)
                    elif not self._drain(sock):
                        selector.unregister(sock)
                        sock.close()
            for key in list(selector.get_map().values()):
                if key.fileobj is not self._listener:
                    key.fileobj.close()  # type: ignore[union-attr]

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            connection, _address = self._listener.accept()
        except BlockingIOError:
            return
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ)
        self._accepted += 1

    @staticmethod
    def _drain(sock: socket.socket) -> bool:
        """Read what arrived; False once the client has gone."""
        try:
            return bool(sock.recv(65536))
        except BlockingIOError:
            return True
        except OSError:
            return False


@contextmanager
def refusing_endpoint(host: str = "127.0.0.1") -> Iterator[str]:
    """An endpoint whose port is bound (so nothing else takes it) but not listening: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield f"http://{host}:{sock.getsockname()[1]}"
