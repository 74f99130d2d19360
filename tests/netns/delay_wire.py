"""A delay wire: a point-to-point link between two network namespaces that holds every
packet for a fixed time before passing it on.

This kernel has no ``tc netem``, so latency is added in userspace: one TUN device is opened
in each namespace (``setns`` into ``/run/netns/NAME``, then ``/dev/net/tun`` with
``TUNSETIFF``), each end gets a point-to-point address, and packets read from one device
are written to the other once their due time has passed (a heap of due times and
``select``). Routes through the devices are the caller's business; they vanish with the
devices when this process exits, so the namespaces fall back to their ordinary links.

Run as a program (it is a standalone file, imports nothing from the tests)::

    python delay_wire.py --end NS_A:DEV:ADDR_A:ADDR_B --end NS_B:DEV:ADDR_B:ADDR_A \\
        --delay 0.020 --lifetime 300

It prints ``ready`` once both ends are up, and exits on SIGTERM, when a device goes away, or
after ``--lifetime`` seconds, whichever comes first, so a test that dies cannot leave it
running for long. (While it runs, its TUN devices keep both namespaces alive even after
``ip netns del``: stop it first.)
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import heapq
import os
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
# Packets held at once; beyond this the wire drops, like a full router queue (bounded memory).
MAX_IN_FLIGHT = 4096
MAX_PACKET = 65535


@dataclass(frozen=True)
class End:
    netns: str
    device: str
    address: str
    peer: str

    @classmethod
    def parse(cls, text: str) -> End:
        parts = text.split(":")
        if len(parts) != 4 or not all(parts):
            raise argparse.ArgumentTypeError(f"expected NETNS:DEVICE:ADDRESS:PEER_ADDRESS, got {text!r}")
        netns, device, address, peer = parts
        if not 0 < len(device) < 16:
            raise argparse.ArgumentTypeError(f"device name must be 1-15 characters: {device!r}")
        return cls(netns, device, address, peer)


def setns_net(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_tun(end: End) -> int:
    """A TUN device created inside ``end.netns``: the device belongs to the namespace the
    opening task is in, so this process steps in for the open and back out afterwards."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{end.netns}", os.O_RDONLY)
    try:
        setns_net(target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", end.device.encode(), IFF_TUN | IFF_NO_PI))
        finally:
            setns_net(home)
    finally:
        os.close(target)
        os.close(home)
    return fd


def configure(end: End) -> None:
    for command in (
        ["ip", "-n", end.netns, "addr", "add", end.address, "peer", end.peer, "dev", end.device],
        ["ip", "-n", end.netns, "link", "set", end.device, "up"],
    ):
        subprocess.run(command, check=True, timeout=10, capture_output=True)


def relay(fd_a: int, fd_b: int, delay: float, lifetime: float) -> None:
    other = {fd_a: fd_b, fd_b: fd_a}
    due: list[tuple[float, int, int, bytes]] = []  # (due time, arrival order, out fd, packet)
    order = 0
    stop_at = time.monotonic() + lifetime
    while True:
        now = time.monotonic()
        if now >= stop_at:
            return
        wait = min(stop_at - now, due[0][0] - now if due else 1.0)
        readable, _, _ = select.select([fd_a, fd_b], [], [], max(wait, 0.0))
        now = time.monotonic()
        for fd in readable:
            for _ in range(256):  # drain, but let the other side and due packets have a turn
                try:
                    packet = os.read(fd, MAX_PACKET)
                except BlockingIOError:
                    break
                except OSError:
                    return  # the device is gone (its namespace was deleted): nothing left to carry
                if len(due) < MAX_IN_FLIGHT:
                    heapq.heappush(due, (now + delay, order, other[fd], packet))
                    order += 1
        while due and due[0][0] <= now:
            _, _, out, packet = heapq.heappop(due)
            try:
                os.write(out, packet)
            except OSError:
                pass  # the device is going away or its queue is full: a lost packet, as on a wire


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Two TUN devices in two namespaces, packets delayed between them.")
    parser.add_argument("--end", type=End.parse, action="append", required=True,
                        help="NETNS:DEVICE:ADDRESS:PEER_ADDRESS (give exactly two)")
    parser.add_argument("--delay", type=float, required=True, help="seconds each packet is held, each way")
    parser.add_argument("--lifetime", type=float, default=300.0, help="exit after this many seconds regardless")
    args = parser.parse_args(argv)
    if len(args.end) != 2:
        parser.error("give exactly two --end")
    if not 0 <= args.delay <= 10:
        parser.error("--delay must be between 0 and 10 seconds")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fds = [open_tun(end) for end in args.end]
    for end in args.end:
        configure(end)
    print("ready", flush=True)
    relay(fds[0], fds[1], args.delay, args.lifetime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
