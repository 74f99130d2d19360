"""The prober table: the config word -> the prober. A new protocol is one module and one line."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from . import connect_only, http, illiad_web, ldap, patron_api, rdp, symphony, tcp, tds, tls, z3950
from .base import Prober, ProbeFailure, ProberOptions, ProbeResult, ProbeTarget, Reason, release_frames

PROBERS: Mapping[str, Prober[Any]] = MappingProxyType(
    {
        prober.name: prober
        for prober in (
            tcp.PROBER,
            tls.PROBER,
            http.PROBER,
            connect_only.ODYSSEY,
            connect_only.ISO_ILL,
            illiad_web.PROBER, patron_api.PROBER, symphony.PROBER, ldap.PROBER,
            rdp.PROBER, tds.PROBER, z3950.PROBER,
        )
    }
)
tcp.register_connect_only(dict(PROBERS))

__all__ = ["PROBERS", "Prober", "ProbeFailure", "ProberOptions", "ProbeResult", "ProbeTarget", "Reason", "release_frames"]
