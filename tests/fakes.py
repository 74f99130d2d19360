"""Hand-made servers for what no real peer does: count and hold connections, answer slowly.

Each runs its accept loop in a daemon thread on a loopback port, with blocking sockets, so
the bytes a probe reads in the test's event loop are never confused with the server's own.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable

from illiad_exporter.probers import PROBERS
from illiad_exporter.probers.tlsclient import TlsOptions


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

    def wait_accepted(self, count: int, timeout: float = 5.0) -> int:
        """Wait (bounded) until ``count`` connections were accepted: the kernel completes a
        handshake before the accept thread gets to it. Returns how many were."""
        deadline = time.monotonic() + timeout
        while self.accepted < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.accepted

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


# --- hostile servers: each a handler for ThreadedServer -------------------------------------

GARBAGE_BYTES = 8 * 1024 * 1024
TRICKLE = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"


def hold_silently(conn: socket.socket, server: ThreadedServer) -> None:
    """Accept and never say a word (until the server stops)."""
    server.sleep(60)


def trickle(conn: socket.socket, server: ThreadedServer) -> None:
    """A byte a second of a plausible HTTP answer: the slow-loris of servers."""
    for byte in TRICKLE:
        conn.sendall(bytes([byte]))
        server.sent(1)
        if not server.sleep(1.0):
            return


def garbage(conn: socket.socket, server: ThreadedServer) -> None:
    """Megabytes of random bytes as fast as the client takes them, then close."""
    chunk = random_bytes(64 * 1024)
    conn.settimeout(10)
    remaining = GARBAGE_BYTES
    while remaining > 0 and not server.stopping:
        sent = conn.send(chunk[: min(len(chunk), remaining)])
        server.sent(sent)
        remaining -= sent


def reset_at_once(conn: socket.socket, server: ThreadedServer) -> None:
    """Accept, then a TCP RST (SO_LINGER 0) before a byte is exchanged."""
    _reset(conn)


def reset_after_first_bytes(conn: socket.socket, server: ThreadedServer) -> None:
    """Read what the client sends first (a request, a TLS ClientHello), then RST."""
    conn.settimeout(5)
    try:
        conn.recv(4096)
    except OSError:
        pass
    _reset(conn)


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def random_bytes(count: int) -> bytes:
    return random.Random(1611).randbytes(count)


class DroppingListener:
    """A listener on ``host``:``port`` whose accept queue is full, so the kernel ignores new
    SYNs: a firewall's drop rule, on one loopback address."""

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(0)
        self.filler = socket.create_connection((host, port), timeout=1)

    def __enter__(self) -> DroppingListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.filler.close()
        self.listener.close()


def tls_then_silence(cert: str, key: str) -> Callable[[socket.socket, ThreadedServer], None]:
    """A TLS server that completes the handshake for any application protocol (nginx refuses
    TDS 8.0's ALPN before the client could judge its certificate), then says nothing."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["tds/8.0", "http/1.1", "ldap"])

    def handler(conn: socket.socket, server: ThreadedServer) -> None:
        conn.settimeout(5)
        try:
            with context.wrap_socket(conn, server_side=True):
                server.sleep(5)
        except (ssl.SSLError, OSError):
            pass  # the client refused our certificate: that is the point

    return handler


# -- pointing probers at them -------------------------------------------------------------------


def tls_first_options(name: str) -> dict[str, object] | None:
    """Options that make this prober start with a TLS handshake; None if it cannot."""
    options = PROBERS[name].options
    if not issubclass(options, TlsOptions):
        return None
    fields = options.model_fields
    if name in ("tls", "illiad_web"):
        return {}
    if "scheme" in fields:
        return {"scheme": "https"}
    if "tls_mode" in fields:
        return {"tls_mode": "ldaps"}
    if "strict" in fields:
        return {"strict": True}
    raise AssertionError(f"prober {name} takes TLS options: teach tls_first_options how it starts with TLS")
