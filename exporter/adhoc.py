"""``/probe?target=HOST:PORT&prober=NAME``: a probe the config does not name, allowed only
where the config's ``probe_allow:`` list says so (see allowlist.py).

The check resolves the name once, checks every address, and returns a target pinned to
exactly those addresses (``static_addresses``), so the probe connects to what was checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Mapping

from pydantic import ValidationError

from .allowlist import ProbeAllow
from .catalog import Expect
from .config import Config
from .plan import probe_target
from .probers import PROBERS, ProbeFailure, ProbeResult, ProbeTarget
from .probers.net import resolve

ADHOC_SITE = "adhoc"  # the site label of an ad-hoc probe; its path label is the prober
MAX_TARGET_LENGTH = 300


class ProbeRequestRefused(Exception):
    """A /probe request that is not answered with a probe (a malformed or unknown parameter,
    a target probe_allow does not permit); ``status`` is the HTTP status, the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _shown(text: str) -> str:
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def parse_target(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ProbeRequestRefused(400) when malformed."""
    if len(text) > MAX_TARGET_LENGTH or not text.isprintable() or any(c.isspace() for c in text):
        raise ProbeRequestRefused(400, f"target must be HOST:PORT, got {_shown(text)}")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ProbeRequestRefused(400, f"target must be [IPv6]:PORT, got {_shown(text)}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ProbeRequestRefused(400, f"not an IPv6 address in target {_shown(text)}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ProbeRequestRefused(400, f"target must be HOST:PORT (IPv6 as [ADDRESS]:PORT), got {_shown(text)}")
        if any(c in host for c in "/@?#\\") or len(host) > 253:
            raise ProbeRequestRefused(400, f"not a host name in target {_shown(text)}")
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ProbeRequestRefused(400, f"port must be 1-65535 in target {_shown(text)}")
    return host, int(port_text)


async def adhoc_target(config: Config, vantage: str, target_text: str, prober_name: str) -> ProbeTarget:
    """The pinned probe target for an allowed ad-hoc request; ProbeRequestRefused otherwise."""
    allow: ProbeAllow = config.extras.get("probe_allow") or ProbeAllow([])
    host, port = parse_target(target_text)
    prober = PROBERS.get(prober_name)
    if prober is None:
        raise ProbeRequestRefused(400, f"unknown prober {_shown(prober_name)} (known: {', '.join(sorted(PROBERS))})")
    try:
        options = prober.options()
    except ValidationError:
        raise ProbeRequestRefused(
            400, f"prober {prober_name} needs options: add the path to a site's custom: paths instead"
        ) from None
    if not allow.entries:
        raise ProbeRequestRefused(
            403, "ad-hoc targets are off: the config has no probe_allow list; probe a configured site with ?site=NAME"
        )
    defaults = config.defaults
    target = probe_target(
        defaults, site=ADHOC_SITE, path=prober.name, vantage=vantage, host=host, port=port, prober=prober.name,
        expect=Expect.OPEN, timeout=defaults.timeout, options=options,
    )
    if allow.names_allow(host, port) is not None:
        return target  # the operator named this host and port: no address check
    if not allow.has_networks():
        raise ProbeRequestRefused(403, f"target {host}:{port} is not in the config's probe_allow list")
    try:
        async with asyncio.timeout(defaults.timeout):
            addresses = await resolve(target, ProbeResult())
    except ProbeFailure as failure:
        raise ProbeRequestRefused(403, f"cannot check target against probe_allow: {failure.detail}") from None
    except TimeoutError:
        raise ProbeRequestRefused(403, f"cannot check target against probe_allow: resolving {host} timed out") from None
    refused = allow.refused_addresses(addresses, port)
    if refused:
        where = f"{host} resolves to {refused[0]}" if host != refused[0] else host
        raise ProbeRequestRefused(403, f"target {where}:{port}, which the config's probe_allow list does not include")
    # pinned: the probe connects to exactly the addresses checked, never resolving again
    return dataclasses.replace(target, static_addresses=tuple(addresses), system_resolver=False)


PROBE_PARAMETERS = ("site", "path", "target", "prober")


def check_parameters(keys: list[str]) -> None:
    """/probe's query: known parameters, each at most once; ProbeRequestRefused(400) otherwise."""
    for key in keys:
        if key not in PROBE_PARAMETERS:
            raise ProbeRequestRefused(400, f"unknown parameter {_shown(key)} (known: {', '.join(PROBE_PARAMETERS)})")
        if keys.count(key) > 1:
            raise ProbeRequestRefused(400, f"parameter {key} given {keys.count(key)} times; give it once")
