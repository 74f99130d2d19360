"""``probe_allow:``, the config's list of what an ad-hoc ``/probe?target=`` may reach.

Without it the exporter probes only the sites and paths its config names, so it cannot be
turned into a port scanner of the networks it sits in (the blackbox exporter's open-proxy
problem). Each entry is one of:

- an address or network, ``198.18.0.0/15``, ``10.1.2.3``, ``2001:db8::/32``: any target
  whose addresses *all* fall inside, on any port (``10.1.2.0/24:1433``, ``[2001:db8::/32]:443``
  for one port);
- a host name and port, ``sql.example.edu:1433`` (``sql.example.edu:*`` for any port): that
  name, whatever it resolves to, since the operator named it.

A name is resolved once, every address is checked, and the probe is pinned to exactly the
addresses checked, so a DNS answer that changes between check and connect (rebinding)
cannot slip an address past the list.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainValidator, RootModel, model_validator

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")


@dataclass(frozen=True, slots=True)
class AllowEntry:
    network: IPNetwork | None  # set for address and network entries
    host: str | None  # set for name entries (lower case, no trailing dot)
    port: int | None  # None: any port
    text: str

    def allows_address(self, address: str, port: int) -> bool:
        if self.network is None or (self.port is not None and self.port != port):
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return ip.version == self.network.version and ip in self.network

    def allows_name(self, host: str, port: int) -> bool:
        return self.host is not None and self.host == normalize_host(host) and self.port in (None, port)

    def __str__(self) -> str:
        return self.text


def normalize_host(host: str) -> str:
    normal = host.strip().lower().rstrip(".")
    return host if normal == host else normal  # no copy of a name already so: keys keep it


def _port(text: str) -> int | None:
    if text == "*":
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be 1-65535 or *, got {text!r}")
    return int(text)


def parse_entry(value: Any) -> AllowEntry:
    """One ``probe_allow`` entry from its text (see the module doc for the forms)."""
    if not isinstance(value, str):
        raise ValueError("an entry is a string: a CIDR such as 198.18.0.0/15, or host:port")
    text = value.strip()
    address, port = text, None
    if text.startswith("["):  # [v6 or v6/len]:port
        inside, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected [IPv6]:port, got {text!r}")
        address, port = inside, _port(rest[1:])
    elif text.count(":") == 1:  # v4 or name, with a port
        address, port_text = text.split(":")
        port = _port(port_text)
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError:
        network = None
    if network is not None:
        return AllowEntry(network, None, port, text)
    if text.count(":") > 1 and not text.startswith("["):
        raise ValueError(f"not an address or network: {text!r}")
    if not _HOST_NAME.match(address) or address.replace(".", "").isdigit():
        raise ValueError(f"not an address, network or host name: {text!r}")
    if ":" not in text:
        raise ValueError(f"a host name needs a port: {text}:PORT (or {text}:* for any port)")
    return AllowEntry(None, normalize_host(address), port, text)


class ProbeAllow(RootModel[list[Annotated[AllowEntry, PlainValidator(parse_entry)]]]):
    """The ``probe_allow:`` section: a list of entries; absent or empty allows nothing."""

    @model_validator(mode="before")
    @classmethod
    def _absent_is_empty(cls, data: Any) -> Any:
        if data is None or data == {}:
            return []
        if not isinstance(data, list):
            raise ValueError("must be a list of CIDRs and host:port entries")
        return data

    @property
    def entries(self) -> tuple[AllowEntry, ...]:
        return tuple(self.root)

    def names_allow(self, host: str, port: int) -> AllowEntry | None:
        return next((e for e in self.root if e.allows_name(host, port)), None)

    def has_networks(self) -> bool:
        return any(e.network is not None for e in self.root)

    def refused_addresses(self, addresses: Iterable[str], port: int) -> list[str]:
        """The addresses no entry allows on ``port`` (empty: all are allowed)."""
        return [a for a in addresses if not any(e.allows_address(a, port) for e in self.root)]
