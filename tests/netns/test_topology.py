"""The test site's own promises: it cleans up after itself, and its delay wire is bounded."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time

import pytest

from .lab import require_netns
from .topology import BY_ROLE, DELAY_WIRE, PREFIX, DelayWire, Topology, in_netns, run, sweep_leftovers

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def _namespaces() -> set[str]:
    return {line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()}


def _links(netns: str) -> str:
    return run(["ip", "-n", netns, "-o", "link", "show"])


def _gone(process: subprocess.Popen[bytes] | subprocess.Popen[str], within: float = 5.0) -> bool:
    try:
        process.wait(within)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_destroying_the_site_removes_every_namespace_link_and_process_inside() -> None:
    require_netns()
    topology = Topology()
    try:
        topology.build()
        assert {topology.netns(r) for r in ("router", "web_server", "sql_server", "external")} <= _namespaces()
        wire = topology.delay_link("sql_server", 0.005)
        assert "dly0" in _links(topology.netns("router"))
        # A process left running inside, as a crashed test would leave a peer.
        stray = subprocess.Popen(["ip", "netns", "exec", topology.netns("web_server"), "sleep", "60"],
                                 start_new_session=True)
        time.sleep(0.2)
    except BaseException:
        topology.destroy()
        raise
    topology.destroy()
    try:
        assert not any(name.startswith(topology.run_id) for name in _namespaces())
        assert _gone(stray), "a process inside a destroyed namespace kept running"
        assert wire.process is not None and _gone(wire.process), "the delay wire outlived its namespaces"
    finally:
        for process in (stray, wire.process):
            if process is not None and process.poll() is None:
                process.kill()


def test_the_site_has_no_way_out_every_address_beyond_it_is_unreachable_from_every_host() -> None:
    require_netns()
    topology = Topology()

    def connect_outside() -> str:
        with socket.socket() as sock:
            sock.settimeout(5)
            try:
                sock.connect(("192.0.2.1", 443))  # TEST-NET-1: stands for any address outside
            except OSError as exc:
                return errno.errorcode.get(exc.errno or 0, str(exc))
            return "connected"

    try:
        topology.build()
        answers = {role: in_netns(topology.netns(role), connect_outside) for role in ("router", *BY_ROLE)}
    finally:
        topology.destroy()
    assert answers == {role: "ENETUNREACH" for role in ("router", *BY_ROLE)}


def test_a_later_run_sweeps_the_namespaces_of_a_run_that_died() -> None:
    require_netns()
    dead_run = subprocess.Popen(["true"])  # a pid that no longer runs: the run that died
    dead_run.wait()
    # A prefix of this run's own, so that the sweeps of other runs on this machine leave it be.
    prefix = f"{PREFIX}sweep{os.getpid()}"
    name = f"{prefix}-{dead_run.pid}-web"
    run(["ip", "netns", "add", name])
    stray = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"], start_new_session=True)
    try:
        time.sleep(0.2)
        assert name in sweep_leftovers(prefix)
        assert name not in _namespaces()
        assert _gone(stray)
    finally:
        if stray.poll() is None:
            stray.kill()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_the_delay_wire_stops_by_itself_after_its_lifetime_and_takes_its_devices_along() -> None:
    require_netns()
    topology = Topology()
    try:
        topology.build()
        a, b = topology.netns("router"), topology.netns("sql_server")
        wire = DelayWire([sys.executable, str(DELAY_WIRE), "--end", f"{a}:dly0:198.18.200.1:198.18.200.2",
                          "--end", f"{b}:dly0:198.18.200.2:198.18.200.1", "--delay", "0.001", "--lifetime", "1"])
        wire.start()
        try:
            assert "dly0" in _links(a) and "dly0" in _links(b)
            assert wire.process is not None and _gone(wire.process, within=5.0)
            assert wire.process.returncode == 0
            assert "dly0" not in _links(a) and "dly0" not in _links(b)
        finally:
            wire.stop()
    finally:
        topology.destroy()


def test_the_delay_wire_refuses_a_malformed_end_with_a_clear_error() -> None:
    done = subprocess.run([sys.executable, str(DELAY_WIRE), "--end", "only:three:parts", "--end", "a:b:c:d",
                           "--delay", "0.01"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "expected NETNS:DEVICE:ADDRESS:PEER_ADDRESS, got 'only:three:parts'" in done.stderr
    assert "Traceback" not in done.stderr
