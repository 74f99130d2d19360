"""Hand-made servers for what no real peer does: count and hold connections, answer slowly.

Each runs its accept loop in a daemon thread on a loopback port, with blocking sockets, so
the bytes a probe reads in the test's event loop are never confused with the server's own.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable


class ThreadedServer:
    """Accepts on 127.0.0.1 (or ``host``); each connection is handled by ``handler`` in its
    own thread. Counts connections, the most open at once, and bytes sent."""

    def __init__(self, handler: Callable[[socket.socket, ThreadedServer], None], *, host: str = "127.0.0.1",
                 port: int = 0, backlog: int = 128) -> None:
        self.handler = handler
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(backlog)
        self.listener.settimeout(0.2)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self.open_now = 0
        self.max_open = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    def __enter__(self) -> ThreadedServer:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except OSError:
                    pass
        for thread in self._threads:
            thread.join(3)

    def sent(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open_now += 1
                self.max_open = max(self.max_open, self.open_now)
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            with self._lock:
                self.open_now -= 1
            try:
                conn.close()
            except OSError:
                pass

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops; True when the full time passed."""
        return not self._stop.wait(seconds)


def slow_http_ok(delay: float) -> Callable[[socket.socket, ThreadedServer], None]:
    """Read the request, wait ``delay`` seconds, answer 200 and close."""

    def handler(conn: socket.socket, server: ThreadedServer) -> None:
        conn.settimeout(delay + 5)
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        if server.sleep(delay):
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            conn.sendall(answer)
            server.sent(len(answer))
            time.sleep(0.05)

    return handler
