"""The plan: the concrete probes one vantage makes, built once per config load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .catalog import Expect, Require, Role
from .config import Config, Defaults, Site
from .probers import ProberOptions, ProbeTarget
from .shard import Shard, select


@dataclass(frozen=True, slots=True)
class Skipped:
    """An enabled path this vantage cannot probe, and why (shown by check, not a metric)."""

    site: str
    path: str
    why: str


@dataclass(frozen=True, slots=True)
class Plan:
    vantage: Role
    by_site: Mapping[str, tuple[ProbeTarget, ...]]
    skipped: tuple[Skipped, ...] = ()
    required: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (site, path)
    # (site, path) -> what breaks for the library when the path is closed (status page)
    impact: Mapping[tuple[str, str], str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def targets(self) -> tuple[ProbeTarget, ...]:
        return tuple(t for targets in self.by_site.values() for t in targets)

    def __len__(self) -> int:
        return sum(len(t) for t in self.by_site.values())


def probe_target(
    defaults: Defaults, *, site: str, path: str, vantage: str, host: str, port: int, prober: str,
    expect: Expect, timeout: float, options: ProberOptions, require: Require = Require.ALL,
) -> ProbeTarget:
    """A probe of ``host:port`` that resolves and connects as the config's defaults say."""
    return ProbeTarget(
        site=site,
        path=path,
        vantage=vantage,
        host=host,
        port=port,
        prober=prober,
        expect=expect,
        timeout=timeout,
        options=options,
        ip_protocol=defaults.ip_protocol,
        ip_fallback=defaults.ip_fallback,
        source_address=str(defaults.source_address) if defaults.source_address else None,
        static_addresses=defaults.pinned(host),
        system_resolver=defaults.system_resolver,
        require=require,
    )


def site_targets(config: Config, site: Site, vantage: Role) -> tuple[list[ProbeTarget], list[Skipped], set[str]]:
    targets: list[ProbeTarget] = []
    skipped: list[Skipped] = []
    required: set[str] = set()
    for path in site.paths:
        if not path.enabled or vantage not in path.routes:
            continue
        hosts = path.routes[vantage]
        for source, target in path.unresolved:
            if source is vantage:
                skipped.append(Skipped(site.name, path.id, f"no host for {target} in this site's hosts "
                                                           f"(or give paths.{path.id}.hosts)"))
        if path.required:
            required.add(path.id)
        for host in hosts:
            for port in path.ports:
                targets.append(
                    probe_target(
                        config.defaults, site=site.name, path=path.id, vantage=vantage.value, host=host, port=port,
                        prober=path.prober, expect=path.expect, timeout=path.timeout, options=path.options,
                        require=path.require,
                    )
                )
    return targets, skipped, required


def build_plan(config: Config, vantage: Role, *, shard: Shard | None = None) -> Plan:
    """The probes of ``vantage``; only the sites ``shard`` (default: the config's) owns."""
    by_site: dict[str, tuple[ProbeTarget, ...]] = {}
    skipped: list[Skipped] = []
    required: set[tuple[str, str]] = set()
    impact: dict[tuple[str, str], str] = {}
    for site in select(config.sites, shard or config.exporter.shard, name=lambda s: s.name):
        targets, site_skipped, site_required = site_targets(config, site, vantage)
        by_site[site.name] = tuple(targets)
        skipped += site_skipped
        required |= {(site.name, p) for p in site_required}
        planned = {t.path for t in targets}
        impact.update(((site.name, p.id), p.impact) for p in site.paths if p.id in planned and p.impact)
    return Plan(vantage, MappingProxyType(by_site), tuple(skipped), frozenset(required), MappingProxyType(impact))
