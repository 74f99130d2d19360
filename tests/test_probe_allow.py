"""/probe is no open proxy: it probes configured sites and paths, and an ad-hoc target only
where the config's probe_allow list permits, checked against the addresses it connects to."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest

from illiad_exporter.adhoc import ProbeRequestRefused, adhoc_target
from illiad_exporter.config import ConfigError, parse_config
from illiad_exporter.probers import resolver

from .exporter_process import PUBLIC_PATHS, loopback_site_config
from .fakes import ThreadedServer
from .test_server import running, samples, value


def hold(conn: socket.socket, server: ThreadedServer) -> None:
    """Accept and keep the connection a moment (a listener that counts)."""
    server.sleep(0.2)


def allow_config(path: Path, *, allow: str, hosts: str = "{}", sql_port: int = 1) -> Path:
    return loopback_site_config(
        path, top=f"probe_allow: {allow}\n", hosts=hosts, switched_off=PUBLIC_PATHS,
        paths=f"      sql: {{port: {sql_port}, prober: tcp}}\n",
        custom=f"      - {{name: extra, from: [web_server], host: 127.0.0.1, port: {sql_port}, prober: tcp}}")


async def get(url: str, params: dict[str, str] | list[tuple[str, str]]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url + "/probe", params=params) as response:
        return response.status, await response.text()


def test_without_probe_allow_an_adhoc_target_is_refused_and_nothing_is_contacted(tmp_path):
    with ThreadedServer(hold) as listener:
        config = tmp_path / "c.yml"
        config.write_text(allow_config(tmp_path / "c.yml", allow="[]").read_text().replace("probe_allow: []\n", ""))

        async def scenario() -> None:
            async with running(config) as (url, _):
                status, text = await get(url, {"target": f"127.0.0.1:{listener.port}"})
                assert status == 403
                assert text == ("ad-hoc targets are off: the config has no probe_allow list; "
                                "probe a configured site with ?site=NAME\n")

        asyncio.run(scenario())
        assert listener.wait_accepted(1, timeout=0.3) == 0


def test_allow_list_by_network_port_and_name_with_a_hosts_table(tmp_path):
    """127.0.0.1 on one port is allowed by CIDR; inside.test maps into it, outside.test and
    mixed.test (partly) out of it; named.test is allowed by name whatever it maps to."""
    with ThreadedServer(hold) as inside, ThreadedServer(hold, host="127.0.0.2") as outside:
        hosts = ("{inside.test: [127.0.0.1], outside.test: [127.0.0.2], "
                 "mixed.test: [127.0.0.1, 127.0.0.2], named.test: [127.0.0.2]}")
        config = allow_config(
            tmp_path / "c.yml", hosts=hosts,
            allow=f'["127.0.0.1/32:{inside.port}", "named.test:{outside.port}", "198.18.0.0/15"]',
        )

        async def scenario() -> None:
            async with running(config) as (url, state):
                status, text = await get(url, {"target": f"127.0.0.1:{inside.port}"})
                assert status == 200, text
                assert samples(text, "illiad_port_up") == {
                    (("expect", "open"), ("host", "127.0.0.1"), ("path", "tcp"), ("port", str(inside.port)),
                     ("site", "adhoc"), ("vantage", "web_server")): 1.0}
                assert "adhoc" not in state.last_outcomes  # the status page shows configured paths only

                status, text = await get(url, {"target": f"inside.test:{inside.port}", "prober": "tcp"})
                assert status == 200 and value(text, "illiad_port_up", host="inside.test") == 1.0

                assert await get(url, {"target": f"127.0.0.1:{outside.port}"}) == (
                    403, f"target 127.0.0.1:{outside.port}, which the config's probe_allow list does not include\n")
                assert await get(url, {"target": f"outside.test:{outside.port}"}) == (
                    403, f"target outside.test resolves to 127.0.0.2:{outside.port}, which the config's "
                         "probe_allow list does not include\n")
                status, text = await get(url, {"target": f"mixed.test:{inside.port}"})
                assert (status, "resolves to 127.0.0.2" in text) == (403, True)
                assert await get(url, {"target": f"nowhere.test:{inside.port}"}) == (
                    403, "cannot check target against probe_allow: nowhere.test is not in the config's hosts table\n")

                status, text = await get(url, {"target": f"named.test:{outside.port}"})
                assert status == 200 and value(text, "illiad_port_up", host="named.test") == 1.0

        asyncio.run(scenario())
        assert inside.wait_accepted(2) == 2 and outside.wait_accepted(1) == 1  # only the allowed probes connected


def test_a_rebinding_name_is_probed_at_the_address_that_was_checked(tmp_path, monkeypatch):
    """A resolver that answers an allowed address first and a forbidden one afterwards (DNS
    rebinding) is asked once: the probe connects to the checked address, never the other."""
    with ThreadedServer(hold) as allowed, ThreadedServer(hold, host="127.0.0.2", port=allowed.port) as forbidden:
        config = allow_config(tmp_path / "c.yml", allow='["127.0.0.1/32"]')
        config.write_text(config.read_text().replace("system_resolver: false", "system_resolver: true"))
        answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
        asked: list[str] = []

        def rebinding_getaddrinfo(host, port):  # type: ignore[no-untyped-def]  # the resolver's system call
            asked.append(host)
            return [(socket.AF_INET, next(answers))]

        monkeypatch.setattr(resolver, "_getaddrinfo", rebinding_getaddrinfo)

        async def scenario() -> None:
            async with running(config) as (url, _):
                status, text = await get(url, {"target": f"rebind.test:{allowed.port}"})
                assert status == 200, text
                assert value(text, "illiad_port_up", host="rebind.test") == 1.0

        asyncio.run(scenario())
        assert asked == ["rebind.test"]
        assert allowed.wait_accepted(1) == 1 and forbidden.accepted == 0


def test_adhoc_target_is_pinned_to_the_checked_addresses():
    config = parse_config("""
defaults: {system_resolver: false, hosts: {lab.test: [198.18.0.7, 198.18.1.9]}}
probe_allow: [198.18.0.0/15]
sites: [{name: lib}]
""")

    async def scenario() -> None:
        target = await adhoc_target(config, "external", "lab.test:1433", "tcp")
        assert (target.host, target.port, target.static_addresses, target.system_resolver) == (
            "lab.test", 1433, ("198.18.0.7", "198.18.1.9"), False)
        assert (target.site, target.path, target.vantage) == ("adhoc", "tcp", "external")
        with pytest.raises(ProbeRequestRefused) as refused:
            await adhoc_target(config, "external", "lab.test:1433", "nonsense")
        assert refused.value.status == 400 and refused.value.reason.startswith("unknown prober 'nonsense'")

    asyncio.run(scenario())


@pytest.mark.parametrize(("params", "status", "reason"), [
    ({"target": "127.0.0.1"}, 400, "target must be HOST:PORT (IPv6 as [ADDRESS]:PORT), got '127.0.0.1'"),
    ({"target": "127.0.0.1:0"}, 400, "port must be 1-65535 in target '127.0.0.1:0'"),
    ({"target": "127.0.0.1:99999"}, 400, "port must be 1-65535 in target '127.0.0.1:99999'"),
    ({"target": "::1:80"}, 400, "target must be HOST:PORT (IPv6 as [ADDRESS]:PORT), got '::1:80'"),
    ({"target": "[nope]:80"}, 400, "not an IPv6 address in target '[nope]:80'"),
    ({"target": "user@host:80"}, 400, "not a host name in target 'user@host:80'"),
    ({"target": "a b:80"}, 400, "target must be HOST:PORT, got 'a b:80'"),
    ({"target": "127.0.0.1:80", "site": "lib"}, 400, "give site (and path) or target, not both"),
    ({"site": "lib", "prober": "tls"}, 400, "prober goes with target=; a configured path uses its configured prober"),
    ({"site": "lib", "module": "x"}, 400, "unknown parameter 'module' (known: site, path, target, prober)"),
    ([("site", "lib"), ("site", "lib")], 400, "parameter site given 2 times; give it once"),
    ({"site": "lib", "path": "ldap"}, 400, "site lib has no path 'ldap' probed from web_server"),
    ({"site": "lib", "path": ""}, 400, "site lib has no path '' probed from web_server"),
])
def test_probe_refuses_bad_parameters_with_a_short_reason(tmp_path, params, status, reason):
    config = allow_config(tmp_path / "c.yml", allow='["127.0.0.0/8"]')

    async def scenario() -> None:
        async with running(config) as (url, _):
            assert await get(url, params) == (status, reason + "\n")

    asyncio.run(scenario())


def test_probe_path_parameter_probes_one_configured_path(tmp_path, refusing_port):
    config = allow_config(tmp_path / "c.yml", allow="[]", sql_port=refusing_port)

    async def scenario() -> None:
        async with running(config) as (url, _):
            status, text = await get(url, {"site": "lib", "path": "extra"})
            assert status == 200
            assert {dict(k)["path"] for k in samples(text, "illiad_port_up")} == {"extra"}
            assert value(text, "illiad_probe_failure_reason", path="extra", reason="refused") == 1.0

    asyncio.run(scenario())


def test_probe_allow_entries_are_checked_with_file_and_line():
    with pytest.raises(ConfigError) as error:
        parse_config("""sites: [{name: lib}]
probe_allow:
  - 10.0.0.0/8
  - 10.0.0.0/40
  - sql.example.edu
  - "sql.example.edu:0"
  - {cidr: 10.0.0.0/8}
""", "allow.yml")
    assert str(error.value).splitlines() == [
        "allow.yml:4:5: probe_allow[1]: not an address, network or host name: '10.0.0.0/40'",
        "allow.yml:5:5: probe_allow[2]: a host name needs a port: sql.example.edu:PORT (or sql.example.edu:* for any port)",
        "allow.yml:6:5: probe_allow[3]: port must be 1-65535 or *, got '0'",
        "allow.yml:7:5: probe_allow[4]: an entry is a string: a CIDR such as 198.18.0.0/15, or host:port",
    ]
