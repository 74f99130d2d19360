"""A farm of loopback probe targets for the benchmarks, run as its own process.

Every target is a distinct address in 127.0.0.0/8 on one port, so thousands of them cost no
ephemeral ports and look like the many hosts of a consortium:

- open:    a listener; the farm accepts and closes at once (the handshake completes);
- refused: nothing bound to the address: the kernel answers the SYN with a reset;
- silent:  a listener with a full accept queue (listen(0) and one filler connection), so the
           kernel drops further SYNs, as a firewall's drop rule does;
- slow:    an HTTP listener that answers only ``--slow-after`` seconds after accepting.

Prints one JSON line (the targets) when ready, then serves until SIGTERM or stdin closes.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import resource
import selectors
import signal
import socket
import sys
import time

SLOW_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok"


def raise_open_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def address(block: int, index: int, second: int) -> str:
    """The index-th address of a block: 127.<second + block>.x.y, never .0 or .255."""
    return f"127.{second + block}.{index // 250}.{index % 250 + 1}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--open", type=int, default=0)
    parser.add_argument("--refused", type=int, default=0)
    parser.add_argument("--silent", type=int, default=0)
    parser.add_argument("--slow", type=int, default=0)
    parser.add_argument("--slow-after", type=float, default=1.0)
    args = parser.parse_args()
    limit = raise_open_file_limit()
    needed = args.open + 2 * args.silent + args.slow + 64
    if needed > limit:
        print(f"farm: needs about {needed} open files, the limit is {limit}", file=sys.stderr)
        return 1

    # One port for every target, held on 127.0.0.1 so no other process takes it meanwhile.
    anchor = socket.socket()
    anchor.bind(("127.0.0.1", 0))
    port = anchor.getsockname()[1]
    second = random.Random().randrange(100, 240)  # a /16 of 127/8 per run (4 blocks)

    selector = selectors.DefaultSelector()
    keep: list[socket.socket] = [anchor]
    targets: dict[str, list[str]] = {"open": [], "refused": [], "silent": [], "slow": []}

    def listener(host: str, backlog: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        keep.append(sock)
        return sock

    for i in range(args.open):
        host = address(0, i, second)
        selector.register(listener(host, 512), selectors.EVENT_READ, "open")
        targets["open"].append(host)
    for i in range(args.refused):
        targets["refused"].append(address(1, i, second))
    for i in range(args.silent):
        host = address(2, i, second)
        listener(host, 0)
        filler = socket.create_connection((host, port), timeout=2)
        keep.append(filler)
        targets["silent"].append(host)
    for i in range(args.slow):
        host = address(3, i, second)
        selector.register(listener(host, 512), selectors.EVENT_READ, "slow")
        targets["slow"].append(host)

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print(json.dumps({"port": port, **targets}), flush=True)

    due: list[tuple[float, int, socket.socket]] = []  # slow answers: (when, fd, connection)
    while not stop:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else 1.0
        for key, _ in selector.select(timeout):
            if key.data == "stdin":
                if not sys.stdin.readline():
                    stop = True
                continue
            if key.data == "conn":  # a slow target's client sent its request: wait for due time
                try:
                    key.fileobj.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    pass
                continue
            try:
                conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
            except (BlockingIOError, OSError):
                continue
            if key.data == "open":
                conn.close()
            else:
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ, "conn")
                heapq.heappush(due, (time.monotonic() + args.slow_after, conn.fileno(), conn))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, conn = heapq.heappop(due)
            try:
                selector.unregister(conn)
                conn.send(SLOW_ANSWER)
            except OSError:
                pass
            conn.close()
    for sock in keep:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
