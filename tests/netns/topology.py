"""A simulated ILLiad site built from network namespaces: each host role gets its own
network stack, joined to the others through a router namespace.

::

    web_server   198.18.1.10 --+
    sql_server   198.18.2.10 --+
    staff_client 198.18.3.10 --+-- router (IP forwarding; the site firewall)
    external     198.19.1.10 --+
    public       198.19.2.10 --+   (stands in for OCLC's and the vendors' hosts)

Every address is in 198.18.0.0/15, the range set aside for network tests; nothing is added
to the machine's own namespace, so several test runs can build this at the same time. The
router knows no route beyond these subnets: nothing a test sends can leave the site.
Namespace names carry the test process's pid and a random suffix; :func:`sweep_leftovers`
removes those whose process is gone.
"""

from __future__ import annotations

import os
import secrets
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .delay_wire import setns_net

T = TypeVar("T")

PREFIX = "ipxn"  # illiad-port-exporter netns tests; leftovers are swept by this prefix
DELAY_WIRE = Path(__file__).with_name("delay_wire.py")


@dataclass(frozen=True)
class Host:
    role: str  # web_server, sql_server, staff_client, external, public
    short: str  # a part of the namespace name and the router's interface name
    address: str
    gateway: str


HOSTS = (
    Host("web_server", "web", "198.18.1.10", "198.18.1.1"),
    Host("sql_server", "sql", "198.18.2.10", "198.18.2.1"),
    Host("staff_client", "staff", "198.18.3.10", "198.18.3.1"),
    Host("external", "ext", "198.19.1.10", "198.19.1.1"),
    Host("public", "pub", "198.19.2.10", "198.19.2.1"),
)
BY_ROLE = {h.role: h for h in HOSTS}
HOST_LINK = "lan0"  # each host's one interface


def run(argv: list[str], *, stdin: str | None = None, timeout: float = 15.0) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def in_netns(netns: str, fn: Callable[[], T], *, timeout: float = 30.0) -> T:
    """Call ``fn`` with its sockets in ``netns``: a network namespace is per thread, so a
    fresh thread steps in and ends afterwards; the test's own threads stay where they are."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                setns_net(fd)
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"call in {netns} did not finish within {timeout}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _kill_pids_in(netns: str) -> None:
    try:
        pids = [int(p) for p in run(["ip", "netns", "pids", netns]).split()]
    except (RuntimeError, ValueError):
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def delete_netns(names: Iterable[str]) -> None:
    """Kill what still runs in these namespaces (by pid), then delete them; links go with them."""
    for name in names:
        _kill_pids_in(name)
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)


def sweep_leftovers(prefix: str = PREFIX) -> list[str]:
    """Remove namespaces an earlier run of these tests left behind (its pid is gone)."""
    try:
        listed = run(["ip", "netns", "list"])
    except RuntimeError:
        return []
    stale = []
    for line in listed.splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] == prefix and parts[1].isdigit() and not _alive(int(parts[1])):
            stale.append(name)
    delete_netns(stale)
    return stale


@dataclass
class Topology:
    """The namespaces and links; :meth:`build` makes them, :meth:`destroy` removes them."""

    run_id: str = field(default_factory=lambda: f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}")
    created: list[str] = field(default_factory=list)
    # A wire's TUN devices hold their namespaces alive past ``ip netns del``: stopped first.
    wires: list[DelayWire] = field(default_factory=list)

    def netns(self, role: str) -> str:
        return f"{self.run_id}-{BY_ROLE[role].short}" if role != "router" else f"{self.run_id}-router"

    def address(self, role: str) -> str:
        return BY_ROLE[role].address

    def build(self) -> Topology:
        router = self.netns("router")
        for name in [router, *(self.netns(h.role) for h in HOSTS)]:
            run(["ip", "netns", "add", name])
            self.created.append(name)
        router_cmds = ["link set lo up"]
        for host in HOSTS:
            ns = self.netns(host.role)
            # Created straight inside the two namespaces, so names never clash with other runs.
            run(["ip", "link", "add", HOST_LINK, "netns", ns, "type", "veth", "peer", "name", host.short,
                 "netns", router])
            run(["ip", "-n", ns, "-b", "-"], stdin="\n".join([
                "link set lo up",
                f"addr add {host.address}/24 dev {HOST_LINK}",
                f"link set {HOST_LINK} up",
                f"route add default via {host.gateway}",
            ]) + "\n")
            router_cmds += [f"addr add {host.gateway}/24 dev {host.short}", f"link set {host.short} up"]
        run(["ip", "-n", router, "-b", "-"], stdin="\n".join(router_cmds) + "\n")
        # No ICMP rate limit: a probe must hear "unreachable" every time, not one in six.
        run(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"])
        return self

    def destroy(self) -> None:
        for wire in self.wires:
            wire.stop()
        self.wires.clear()
        delete_netns(self.created)
        self.created.clear()

    # -- firewalls -----------------------------------------------------------------------

    def nft(self, role: str, script: str) -> None:
        run(["ip", "netns", "exec", self.netns(role), "nft", "-f", "-"], stdin=script)

    def flush_firewalls(self) -> None:
        for role in ["router", *(h.role for h in HOSTS)]:
            run(["ip", "netns", "exec", self.netns(role), "nft", "flush", "ruleset"])

    # -- latency -------------------------------------------------------------------------

    def delay_link(self, role: str, delay: float, *, lifetime: float = 120.0) -> DelayWire:
        """Send all of ``role``'s traffic through a delay wire to the router, ``delay``
        seconds each way. Stop the returned wire and the ordinary link carries it again."""
        host = BY_ROLE[role]
        ns, router = self.netns(role), self.netns("router")
        near, far = "198.18.200.1", "198.18.200.2"
        wire = DelayWire([sys.executable, str(DELAY_WIRE), "--end", f"{router}:dly0:{near}:{far}",
                          "--end", f"{ns}:dly0:{far}:{near}", "--delay", str(delay), "--lifetime", str(lifetime)])
        self.wires.append(wire)
        wire.start()
        try:
            # More specific than the veth routes; they vanish with the TUN devices.
            run(["ip", "-n", router, "route", "add", f"{host.address}/32", "dev", "dly0"])
            run(["ip", "-n", ns, "-b", "-"], stdin="route add 0.0.0.0/1 dev dly0\nroute add 128.0.0.0/1 dev dly0\n")
        except Exception:
            wire.stop()
            raise
        return wire


class DelayWire:
    """The delay wire process (see delay_wire.py), stopped by its pid."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.1) and self.process.stdout.readline().strip() == "ready":
                    return
                if self.process.poll() is not None:
                    break
        error = self.process.stderr.read() if self.process.poll() is not None and self.process.stderr else ""
        self.stop()
        raise RuntimeError(f"the delay wire did not come up: {error.strip()[-2000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> DelayWire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
