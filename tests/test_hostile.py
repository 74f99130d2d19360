"""Hostile and broken targets, against every prober in the table: a server that accepts and
never answers, one that trickles a byte a second, one that floods megabytes of garbage, resets
at accept and mid-handshake (TCP and TLS), certificates that are expired, self-signed or for
another host, and a name whose first addresses are dead.

Every probe must end within its timeout, read a bounded number of bytes (counted at the
probe's own sockets), and name the right reason. New probers are covered by being in PROBERS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import socket
import subprocess
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from illiad_exporter.probers import PROBERS, ProbeResult, ProbeTarget, Reason
from illiad_exporter.scrape import run_probe

from .certs import CertFiles, write_cert
from .probing import make_target
from .fakes import (DroppingListener, ThreadedServer, garbage, hold_silently, reset_after_first_bytes, reset_at_once,
                    tls_first_options, tls_then_silence, trickle)
from .peers import free_port, need_binary

TIMEOUT = 1.0
SLACK = 0.5  # scheduling on a busy CI machine, and closing the socket after the deadline
MAX_BYTES_READ = 1024 * 1024  # far below the 8 MiB the garbage server offers

CONNECT_ONLY = frozenset(name for name, p in PROBERS.items() if p.probe is PROBERS["tcp"].probe)
SPEAKING = sorted(set(PROBERS) - CONNECT_ONLY)


TLS_FIRST = {name: opts for name in PROBERS if (opts := tls_first_options(name)) is not None}


class ByteMeter:
    """Counts the bytes the probes' own sockets receive, per remote port: socket.recv and
    recv_into, in the event loop's thread only (the fake servers run in other threads)."""

    def __init__(self) -> None:
        self.by_port: Counter[int] = Counter()
        self.loop_thread = threading.get_ident()

    def count(self, sock: socket.socket, n: int) -> None:
        if n and threading.get_ident() == self.loop_thread:
            try:
                self.by_port[sock.getpeername()[1]] += n
            except OSError:
                pass


@pytest.fixture
def meter(monkeypatch: pytest.MonkeyPatch) -> Iterator[ByteMeter]:
    meter = ByteMeter()
    recv, recv_into = socket.socket.recv, socket.socket.recv_into

    def counting_recv(sock: socket.socket, *args: object) -> bytes:
        data = recv(sock, *args)  # type: ignore[arg-type]
        meter.count(sock, len(data))
        return data

    def counting_recv_into(sock: socket.socket, buffer: object, *args: object) -> int:
        n = recv_into(sock, buffer, *args)  # type: ignore[arg-type]
        meter.count(sock, n)
        return n

    monkeypatch.setattr(socket.socket, "recv", counting_recv)
    monkeypatch.setattr(socket.socket, "recv_into", counting_recv_into)
    yield meter


def run_all_timed(targets: list[ProbeTarget]) -> list[tuple[ProbeResult, float]]:
    async def one(target: ProbeTarget) -> tuple[ProbeResult, float]:
        started = time.monotonic()
        result = await run_probe(target, deadline=asyncio.get_running_loop().time() + TIMEOUT + 5)
        return result, time.monotonic() - started

    async def everything() -> list[tuple[ProbeResult, float]]:
        return list(await asyncio.gather(*(one(t) for t in targets)))

    return asyncio.run(everything())


Expect = Callable[[str], set[Reason | None]]


def speaking(reasons: set[Reason | None]) -> Expect:
    """``reasons`` for probers that talk; up (None) for those that only connect."""
    return lambda name: {None} if name in CONNECT_ONLY else reasons


CASES: dict[str, tuple[Callable[..., None], Expect]] = {
    "accepts_and_never_answers": (hold_silently, speaking({Reason.TIMEOUT})),
    "trickles_a_byte_a_second": (trickle, speaking({Reason.TIMEOUT, Reason.PROTOCOL})),
    "floods_megabytes_of_garbage": (garbage, speaking({Reason.PROTOCOL, Reason.TLS})),
    # the RST lands during connect (network) or, under load, just after it, in the
    # prober's first exchange (network, or tls for a handshake, protocol for a closed read)
    "resets_at_accept": (reset_at_once, lambda name: {Reason.NETWORK} | (
        {None} if name in CONNECT_ONLY else {Reason.TLS, Reason.PROTOCOL})),
    "resets_after_the_first_bytes": (reset_after_first_bytes,
                                     speaking({Reason.NETWORK, Reason.PROTOCOL, Reason.TLS})),
}


def check(name: str, result: ProbeResult, elapsed: float, read: int, allowed: set[Reason | None]) -> list[str]:
    problems = []
    if result.reason not in allowed:
        problems.append(f"{name}: reason {result.reason} ({result.detail!r}), expected one of "
                        f"{sorted(str(r) for r in allowed)}")
    if elapsed > TIMEOUT + SLACK:
        problems.append(f"{name}: took {elapsed:.2f}s, timeout {TIMEOUT}s")
    if read > MAX_BYTES_READ:
        problems.append(f"{name}: read {read} bytes")
    if result.reason is Reason.ERROR:
        problems.append(f"{name}: a prober crashed: {result.detail}")
    return problems


@pytest.mark.parametrize("case", list(CASES))
def test_every_prober_against_a_hostile_server(case, meter):
    handler, expected = CASES[case]
    servers = {name: ThreadedServer(handler).__enter__() for name in PROBERS}
    try:
        targets = [make_target(name, servers[name].port, timeout=TIMEOUT) for name in PROBERS]
        outcomes = run_all_timed(targets)
    finally:
        for server in servers.values():
            server.stop()
    problems: list[str] = []
    for name, (result, elapsed) in zip(PROBERS, outcomes):
        problems += check(name, result, elapsed, meter.by_port[servers[name].port], expected(name))
    assert problems == []
    if case == "floods_megabytes_of_garbage":
        # every reading prober stopped while the flood still came: its server got more into the
        # kernel than the probe took out (how much more depends on socket buffers and load, so
        # no fixed figure); connect-only probers close at once and are cut off by a reset
        short = {n: (s.bytes_sent, meter.by_port[s.port]) for n, s in servers.items()
                 if n not in CONNECT_ONLY and not s.bytes_sent > meter.by_port[s.port]}
        assert short == {}, "(sent, read) where the probe read all that was sent"
    read = {name: meter.by_port[servers[name].port] for name in PROBERS}
    print(f"\n{case}: bytes read per probe: {read}")


@pytest.mark.parametrize("name", sorted(TLS_FIRST))
def test_reset_mid_tls_handshake_is_a_tls_failure(name, meter):
    with ThreadedServer(reset_after_first_bytes) as server:
        [(result, elapsed)] = run_all_timed(
            [make_target(name, server.port, timeout=TIMEOUT, **TLS_FIRST[name])])  # type: ignore[arg-type]
    assert check(name, result, elapsed, meter.by_port[server.port], {Reason.TLS, Reason.NETWORK}) == []
    assert "reset" in result.detail.lower()


def cycle_garbage_left_by(targets: list[ProbeTarget]) -> Counter[str]:
    """What the probes leave for the cycle collector: run them one by one with automatic
    collection off, then collect and name what only the collector could free."""
    async def probe_all() -> Counter[str]:
        loop = asyncio.get_running_loop()
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to name it
        try:
            for target in targets:
                await run_probe(target, deadline=loop.time() + TIMEOUT + 5)
            await asyncio.sleep(0.1)  # the transports' close callbacks
            gc.collect()
            return Counter(type(o).__name__ for o in gc.garbage if isinstance(o, HEAVY_GARBAGE))
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    enabled = gc.isenabled()
    gc.disable()
    try:
        return asyncio.run(probe_all())
    finally:
        if enabled:
            gc.enable()


# What a dead connection must not leave in a reference cycle: its frames, futures, errors,
# protocols and buffers (an asyncio SSL protocol alone holds a 256 KiB read buffer). Python
# 3.11's socket transport refers to itself through a bound method; that small cycle of a
# closed transport and socket is the standard library's and is allowed.
HEAVY_GARBAGE = (types.FrameType, types.TracebackType, asyncio.Future, BaseException, asyncio.BaseProtocol,
                 asyncio.StreamReader, asyncio.StreamWriter, bytearray, memoryview)


@pytest.mark.parametrize("case", ["floods_megabytes_of_garbage", "resets_at_accept", "resets_after_the_first_bytes",
                                  "accepts_and_never_answers"])
def test_a_failed_probe_leaves_no_connection_for_the_cycle_collector(case):
    """Against targets that reset or flood, hundreds of dead connections with their buffers
    piled up between collections: the soak's resident memory grew with the probe count."""
    handler, _ = CASES[case]
    timeout = 0.2  # the silent server's probes run to it, one after another
    with ThreadedServer(handler) as server:
        targets = [make_target(name, server.port, timeout=timeout) for name in SPEAKING]
        targets += [make_target(name, server.port, timeout=timeout, **TLS_FIRST[name])  # type: ignore[arg-type]
                    for name in sorted(TLS_FIRST)]
        left = cycle_garbage_left_by(targets)
    assert left == Counter()


# --- certificates ----------------------------------------------------------------------------


def self_signed(directory: Path) -> CertFiles:
    openssl = need_binary("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "self.pem", directory / "self.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return CertFiles(cert, cert, key)


@pytest.fixture(scope="module")
def bad_certificates(tls_ca: trustme.CA, expired_cert: CertFiles, tmp_path_factory: pytest.TempPathFactory
                     ) -> dict[str, CertFiles]:
    """An expired certificate, a self-signed one, and one issued by the trusted test CA for
    another host; the probes trust only the test CA."""
    base = tmp_path_factory.mktemp("badtls")
    return {"expired": expired_cert, "self_signed": self_signed(base / "self"),
            "wrong_host": write_cert(tls_ca, base / "wrong", "wrong", "other.example.test")}


CERT_DETAILS = {"expired": "certificate has expired", "self_signed": "self-signed certificate",
                "wrong_host": "mismatch"}


@pytest.mark.peer("openssl")  # the self-signed certificate
@pytest.mark.parametrize("case", list(CERT_DETAILS))
def test_every_tls_prober_refuses_a_bad_certificate_with_reason_tls(case, bad_certificates, expired_cert, meter):
    files = bad_certificates[case]
    names = sorted(TLS_FIRST)
    with ThreadedServer(tls_then_silence(str(files.cert), str(files.key))) as server:
        targets = [make_target(name, server.port, timeout=TIMEOUT, ca_file=str(expired_cert.ca),  # the test CA
                               **TLS_FIRST[name]) for name in names]  # type: ignore[arg-type]
        outcomes = run_all_timed(targets)
    problems: list[str] = []
    for name, (result, elapsed) in zip(names, outcomes):
        problems += check(name, result, elapsed, 0, {Reason.TLS})
        if CERT_DETAILS[case] not in result.detail.replace("self signed", "self-signed"):
            problems.append(f"{name}: detail {result.detail!r} does not say {CERT_DETAILS[case]!r}")
    assert problems == []
    assert server.accepted == len(names)
    assert meter.by_port[server.port] < 64 * 1024 * len(names)  # a handshake's worth each


# --- several addresses, the first ones dead ---------------------------------------------------


def test_a_dead_first_address_does_not_eat_the_timeout(meter):
    """multi.test -> [127.0.0.2 (drops SYNs), 127.0.0.3 (refuses), 127.0.0.1 (live)]: every
    prober reaches the live address well within its 2 s timeout (one attempt delay for the
    drop, none for the refusal), and says where it connected."""
    with ThreadedServer(hold_silently) as live:
        with DroppingListener("127.0.0.2", live.port):
            targets = [
                dataclasses.replace(make_target(name, live.port, timeout=2.0), host="multi.test",
                                    static_addresses=("127.0.0.2", "127.0.0.3", "127.0.0.1"), system_resolver=False)
                for name in PROBERS
            ]
            outcomes = run_all_timed(targets)
        accepted = live.wait_accepted(len(PROBERS))
    problems = []
    for name, (result, elapsed) in zip(PROBERS, outcomes):
        if result.address != "127.0.0.1":
            problems.append(f"{name}: connected to {result.address} ({result.reason}: {result.detail})")
        elif result.phases["connect"] >= 1.0:
            problems.append(f"{name}: connect phase took {result.phases['connect']:.2f}s")
        if elapsed > 2.0 + SLACK:
            problems.append(f"{name}: took {elapsed:.2f}s")
    assert problems == []
    assert accepted == len(PROBERS)


def test_when_every_address_is_dead_the_reason_covers_them_all(refusing_port):
    target = dataclasses.replace(make_target("tcp", refusing_port, timeout=2.0), host="dead.test",
                                 static_addresses=("127.0.0.3", "127.0.0.4"), system_resolver=False)
    [(result, elapsed)] = run_all_timed([target])
    assert result.reason is Reason.REFUSED
    assert result.detail == (f"connect failed on every address (127.0.0.3:{refusing_port}: connection refused; "
                             f"127.0.0.4:{refusing_port}: connection refused)")
    assert elapsed < 1.0  # refusals hand over at once


def test_a_dropping_only_address_times_out_at_the_probe_timeout():
    port = free_port()
    with DroppingListener("127.0.0.2", port):
        target = dataclasses.replace(make_target("tcp", port, timeout=0.8), host="drop.test",
                                     static_addresses=("127.0.0.2",), system_resolver=False)
        [(result, elapsed)] = run_all_timed([target])
    assert result.reason is Reason.TIMEOUT
    assert 0.75 <= elapsed < 0.8 + SLACK
