"""The exporter as a user runs it: ``illiad-exporter serve`` in a subprocess on a loopback port."""

from __future__ import annotations

import ipaddress
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .peers import Peer, free_port


def exporter(config: Path, workdir: Path, *extra: str, vantage: str = "web_server",
             env: dict[str, str] | None = None, scheme: str = "http", prefix: Sequence[str] = (),
             resolver_on_loopback: bool = False) -> tuple[Peer, str]:
    """A started exporter (stop it with ``.stop()`` or use it as a context manager) and its URL.
    ``prefix`` runs it through another command (that ends by exec'ing it), e.g. unshare;
    ``resolver_on_loopback``: that command points the system resolver at a loopback server,
    so names may be looked up (see only_test_hosts)."""
    only_test_hosts(config, extra[extra.index("--vantage") + 1] if "--vantage" in extra else vantage,
                    resolver_on_loopback=resolver_on_loopback)
    port = free_port()
    argv = [*prefix, sys.executable, "-m", "illiad_exporter", "serve", "--config.file", str(config),
            "--vantage", vantage, "--web.listen-address", f"127.0.0.1:{port}", *extra]
    peer = Peer(argv, port=port, log=workdir / f"exporter-{port}.log", env={**os.environ, **(env or {})})
    return peer, f"{scheme}://127.0.0.1:{port}"


# The catalog paths to real public hosts (OCLC, the vendor): every test config switches them off.
PUBLIC_PATHS = ("oclc_webservices", "atlas_update", "article_exchange")
# Where tests may send probes: loopback, and the test hosts of the namespaces they make.
TEST_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "198.18.0.0/15"))


def only_test_hosts(config: Path, vantage: str, *, resolver_on_loopback: bool = False) -> None:
    """Refuses to start an exporter whose plan from ``vantage`` would probe past this
    machine and the test namespaces: a catalog default to a public host (OCLC, the vendor)
    left on, an address outside TEST_NETWORKS, or a name the system resolver would look up
    (the hosts table pins a name; without the system resolver an unpinned one fails as dns
    with no query). A config the exporter is expected to refuse is left for it to refuse."""
    from illiad_exporter.catalog import Role
    from illiad_exporter.config import load_config
    from illiad_exporter.plan import build_plan

    try:
        plan = build_plan(load_config(config), Role(vantage))
    except Exception:  # noqa: BLE001 - not loadable: the test is about that
        return
    public = catalog_public_hosts()
    for target in plan.targets:
        where = f"{config}: {target.site}/{target.path} from {vantage} would probe {target.host}"
        assert target.host.lower() not in public or target.static_addresses, \
            f"{where}, a real public host: switch the path off or pin the name in hosts:"
        addresses = target.static_addresses or ((target.host,) if _is_address(target.host) else ())
        assert addresses or not target.system_resolver or resolver_on_loopback or target.host.lower() == "localhost", \
            f"{where}, a name the system resolver would look up"
        for address in addresses:
            assert any(ipaddress.ip_address(address) in network for network in TEST_NETWORKS), \
                f"{where} at {address}, off this machine and the test namespaces"


def catalog_public_hosts() -> set[str]:
    """The public hosts the catalog's default routes name (OCLC's, the vendor's)."""
    from illiad_exporter.catalog import CATALOG, HostTarget

    return {target.host.lower() for path in CATALOG for route in path.routes.values() for target in route
            if isinstance(target, HostTarget)}


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
# What a loopback site switches off unless a test probes it.
SWITCHED_OFF = ("sql", *PUBLIC_PATHS, "odyssey")


def loopback_site(name: str = "lib", *, paths: str = "", custom: str = "",
                  switched_off: tuple[str, ...] = SWITCHED_OFF) -> str:
    """A site's YAML (an item of ``sites:``) with its web and SQL servers on 127.0.0.1, the
    ``switched_off`` catalog paths off, and the given ``paths`` overrides and ``custom``
    entries (YAML lines, indented as they stand under those keys)."""
    off = "".join(f"      {path_id}: {{enabled: false}}\n" for path_id in switched_off)
    return f"""  - name: {name}
    hosts: {{web_server: 127.0.0.1, sql_server: 127.0.0.1}}
    paths:
{off}{paths}    custom:
{custom}
"""


def loopback_site_config(path: Path, *, custom: str = "", paths: str = "", timeout: str = "2s", top: str = "",
                         site: str = "lib", switched_off: tuple[str, ...] = SWITCHED_OFF, hosts: str = "{}",
                         more_sites: str = "") -> Path:
    """A config of one :func:`loopback_site` (then ``more_sites``); ``top`` adds top-level
    sections, ``hosts`` the defaults' hosts table. Names never reach DNS (system_resolver: false)."""
    path.write_text(f"""
defaults: {{timeout: {timeout}, system_resolver: false, hosts: {hosts}}}
{top}sites:
{loopback_site(site, paths=paths, custom=custom, switched_off=switched_off)}{more_sites}""")
    return path


def log_text(peer: Peer) -> str:
    assert peer.log is not None
    return peer.log.read_text(errors="replace") if peer.log.exists() else ""


def fetch(url: str, *, method: str = "GET", timeout: float = 15.0, headers: dict[str, str] | None = None
          ) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback only)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until(check, *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> int:
    """The process's descriptor count once two readings 0.3 s apart agree (bounded)."""
    previous = -1
    for _ in range(30):
        count = open_fds(pid)
        if count == previous:
            return count
        previous = count
        time.sleep(0.3)
    raise AssertionError("the descriptor count never settled")
