"""Shared fixtures: test certificates, loopback listeners that refuse, drop or stay silent,
and an nginx serving the ILLiad web paths; the quick set's marks and guard (tests/quickset.py)."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from .certs import CertFiles, write_cert
from .peers import (
    LIBRARY_LOCATIONS,
    Peer,
    free_port,
    nginx_peer,
    slapd_peer,
    tdspool_peer,
    tls_front_peer,
    xrdp_peer,
    yaz_ztest_peer,
)
from .quickset import ProgramGuard, mark_sets

PROGRAM_GUARD = ProgramGuard()


def pytest_configure(config: pytest.Config) -> None:
    PROGRAM_GUARD.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_sets(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    with PROGRAM_GUARD.watching(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    with PROGRAM_GUARD.watching(item):
        return (yield)


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA(organization_name="illiad-port-exporter test CA")


@pytest.fixture(scope="session")
def server_cert(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """Valid for localhost and 127.0.0.1 until about 60 days from now."""
    not_after = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=60)
    return write_cert(tls_ca, tmp_path_factory.mktemp("certs"), "server", "localhost", "127.0.0.1",
                      not_after=not_after)


@pytest.fixture(scope="session")
def expired_cert(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    now = dt.datetime.now(dt.timezone.utc)
    return write_cert(tls_ca, tmp_path_factory.mktemp("expired"), "expired", "localhost", "127.0.0.1",
                      not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))


@dataclass(frozen=True)
class WebPeer:
    https_port: int
    http_port: int
    certs: CertFiles
    peer: Peer
    access_log: Path  # written only by servers that log requests (library_nginx)

    def requested_paths(self) -> list[str]:
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        return [line.split('"')[1].split()[1] for line in lines if line.count('"') >= 2]


def _nginx(workdir: Path, certs: CertFiles, *, locations: str | None = None) -> Iterator[WebPeer]:
    https_port, http_port = free_port(), free_port()
    with nginx_peer(workdir, cert=certs.cert, key=certs.key, https_port=https_port, http_port=http_port,
                    locations=locations) as peer:
        yield WebPeer(https_port, http_port, certs, peer, workdir / "access.log")


@pytest.fixture(scope="session")
def nginx(server_cert: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebPeer]:
    """A real nginx on loopback with a test certificate, serving the ILLiad web paths."""
    yield from _nginx(tmp_path_factory.mktemp("nginx"), server_cert)


@pytest.fixture(scope="session")
def library_nginx(server_cert: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebPeer]:
    """nginx answering as PatronAPI and Symphony do, logging every request path."""
    workdir = tmp_path_factory.mktemp("library-nginx")
    yield from _nginx(workdir, server_cert, locations=LIBRARY_LOCATIONS.format(dir=workdir))


@dataclass(frozen=True)
class LdapPeer:
    ldap_port: int
    ldaps_port: int
    certs: CertFiles
    suffix: str
    user_dn: str
    user_password: str
    peer: Peer


@pytest.fixture(scope="session")
def slapd(server_cert: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapPeer]:
    """A real slapd on ldap:// and ldaps:// (test certificate, StartTLS too) with one user."""
    ldap_port, ldaps_port = free_port(), free_port()
    suffix, user_dn, user_password = "dc=illiad,dc=test", "cn=illiad-probe,dc=illiad,dc=test", "patron-lookup-7"
    peer = slapd_peer(tmp_path_factory.mktemp("slapd"), cert=server_cert.cert, key=server_cert.key,
                      ldap_port=ldap_port, ldaps_port=ldaps_port, suffix=suffix, rootdn=f"cn=admin,{suffix}",
                      rootpw="admin-secret", user_dn=user_dn, user_password=user_password)
    with peer:
        yield LdapPeer(ldap_port, ldaps_port, server_cert, suffix, user_dn, user_password, peer)


@pytest.fixture
def refusing_port() -> int:
    """A loopback port with nothing listening: connects are refused (TCP RST)."""
    return free_port()


@pytest.fixture
def dropping_port() -> Iterator[int]:
    """A loopback port that silently drops new connections, like a firewall's drop rule:
    a listener with a full accept queue, so the kernel ignores further SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    try:
        yield port
    finally:
        filler.close()
        listener.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


# -- the peers of the ILLiad-specific protocols: FreeTDS, yaz-ztest, xrdp ---------------------


@dataclass(frozen=True)
class TdsPeer:
    port: int  # FreeTDS tdspool: PRELOGIN in clear
    strict_port: int  # the same behind TLS first (TDS 8.0 strict), through nginx's stream module
    certs: CertFiles


@pytest.fixture(scope="session")
def tdspool(server_cert: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TdsPeer]:
    """A real FreeTDS tdspool on a free port, and a TLS-first front for strict mode."""
    port, strict_port = free_port(), free_port()
    workdir = tmp_path_factory.mktemp("tdspool")
    with tdspool_peer(workdir, port), tls_front_peer(workdir / "tls-front", port=strict_port, upstream=port,
                                                     cert=server_cert.cert, key=server_cert.key):
        yield TdsPeer(port, strict_port, server_cert)


@pytest.fixture(scope="session")
def yaz_ztest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real yaz-ztest Z39.50 server; yields its port."""
    port = free_port()
    with yaz_ztest_peer(tmp_path_factory.mktemp("yaz-ztest"), port):
        yield port


@pytest.fixture(scope="session")
def xrdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real xrdp negotiating TLS or standard RDP security; yields its port."""
    port = free_port()
    with xrdp_peer(tmp_path_factory.mktemp("xrdp"), port):
        yield port
