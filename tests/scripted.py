"""Hand-made loopback servers for what no real peer does on purpose: answer garbage, cut an
answer short, never answer, or record every byte a client sends; a SQL Server Browser.

Each serves on 127.0.0.1 in a daemon thread, is a context manager, and is closed (with every
connection it accepted) on exit even when the test fails. The TCP one is a
fakes.ThreadedServer with a scripted handler.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from .fakes import ThreadedServer


class ScriptedServer(ThreadedServer):
    """Accepts TCP connections; for each, reads the client's first bytes (up to ``read``
    bytes, or nothing when ``read`` is 0), sends ``reply`` and then closes, or holds the
    connection open when ``hold`` is set. ``received`` collects, per connection, every byte
    the client sent until it closed (only when ``record`` is set: the server then reads until
    the client's FIN and sends nothing)."""

    def __init__(self, reply: bytes | Callable[[bytes], bytes] = b"", *, read: int = 4096, hold: bool = False,
                 record: bool = False) -> None:
        super().__init__(self._script, backlog=16)
        self.reply = reply
        self.read = read
        self.hold = hold
        self.record = record
        self.received: list[bytes] = []
        self.closed_by_client = threading.Event()

    def __enter__(self) -> ScriptedServer:
        super().__enter__()
        return self

    def _script(self, connection: socket.socket, server: ThreadedServer) -> None:
        connection.settimeout(5)
        if self.record:
            data = bytearray()
            while chunk := connection.recv(4096):
                data += chunk
            self.received.append(bytes(data))
            self.closed_by_client.set()
            return
        request = connection.recv(self.read) if self.read else b""
        reply = self.reply(request) if callable(self.reply) else self.reply
        if reply:
            connection.sendall(reply)
        if not self.hold:
            connection.shutdown(socket.SHUT_WR)
        # Open until the server stops: closing with the client's bytes unread would send a
        # reset, not the end of the answer.
        self.sleep(60)


class SilentBrowser:
    """A UDP socket on loopback that receives SQL Browser requests and never answers."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]

    def __enter__(self) -> SilentBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.socket.close()


class FakeBrowser:
    """A SQL Server Browser on loopback (Debian ships none): answers CLNT_UCAST_INST for the
    instances it knows with ``replies[name]`` and, like the real Browser, says nothing about
    an instance it does not know."""

    def __init__(self, replies: dict[str, bytes]) -> None:
        self.replies = {name.upper(): reply for name, reply in replies.items()}
        self.requests: list[bytes] = []
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port: int = self.socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeBrowser:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                request, client = self.socket.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            self.requests.append(request)
            if request[:1] == b"\x04" and request.endswith(b"\x00"):
                reply = self.replies.get(request[1:-1].decode("ascii", "replace").upper())
                if reply is not None:
                    self.socket.sendto(reply, client)
