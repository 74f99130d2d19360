"""Probe outcomes -> Prometheus metric families. Every metric name lives in this module.

Collectors build fresh families on each scrape, so a path removed by a reload leaves no
stale series behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .probers.base import ALL_REASONS, ProbeResult
from .scrape import Outcome

PATH_LABELS = ("site", "vantage", "path", "host", "port", "expect")
PHASES = ProbeResult.PHASES


def _gauge(name: str, doc: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=[*PATH_LABELS, *extra])


class ProbeCollector(Collector):
    """The path metrics of one scrape's outcomes."""

    def __init__(self, outcomes: Sequence[Outcome], *, required: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.outcomes = outcomes
        self.required = required

    def collect(self) -> Iterator[Metric]:
        up = _gauge("illiad_port_up", "1 when the path works: connected, and TLS and protocol checks passed.")
        latency = _gauge(
            "illiad_port_latency_seconds", "TCP connect time of this probe; absent when no connection was made."
        )
        duration = _gauge("illiad_probe_duration_seconds", "Wall time of the whole probe.")
        phases = _gauge("illiad_probe_phase_duration_seconds", "Time spent in each phase of the probe.", ["phase"])
        reasons = _gauge(
            "illiad_probe_failure_reason", "1 for the reason this probe failed, 0 for the others.", ["reason"]
        )
        met = _gauge("illiad_port_expectation_met", "1 when the observed state (open or closed) matches expect.")
        info = _gauge(
            "illiad_path_info", "The path's prober and whether the ILLiad checklist requires it.", ["prober", "required"]
        )
        cert = _gauge(
            "illiad_tls_cert_expiry_timestamp_seconds", "Earliest notAfter in the presented certificate chain."
        )
        tls_info = _gauge("illiad_tls_info", "Negotiated TLS version and whether the chain was verified.",
                          ["version", "verified"])
        facts: dict[str, tuple[GaugeMetricFamily, tuple[str, ...]]] = {}

        for outcome in self.outcomes:
            target, result = outcome.target, outcome.result
            labels = list(target.labels)
            if result.port is not None and result.port != target.port:
                labels[4] = str(result.port)  # the port actually probed (SQL Browser lookup)
            up.add_metric(labels, 1.0 if result.up else 0.0)
            duration.add_metric(labels, result.duration)
            if result.connect_latency is not None:
                latency.add_metric(labels, result.connect_latency)
            for phase in PHASES:
                if phase in result.phases:
                    phases.add_metric([*labels, phase], result.phases[phase])
            for reason in ALL_REASONS:
                reasons.add_metric([*labels, reason], 1.0 if result.reason is not None and result.reason.value == reason else 0.0)
            met.add_metric(labels, 1.0 if result.observed is target.expect else 0.0)
            required = "true" if (target.site, target.path) in self.required else "false"
            info.add_metric([*labels, target.prober, required], 1.0)
            if result.tls is not None:
                cert.add_metric(labels, result.tls.cert_not_after)
                tls_info.add_metric([*labels, result.tls.version, str(result.tls.verified).lower()], 1.0)
            for fact in result.infos:
                family, keys = facts.get(fact.name, (None, ()))  # type: ignore[assignment]
                if family is None:
                    keys = tuple(k for k, _ in fact.labels)
                    family = _gauge(f"illiad_{fact.name}_info", f"What the {fact.name} server says of itself.", keys)
                    facts[fact.name] = (family, keys)
                values = dict(fact.labels)
                family.add_metric([*labels, *(values.get(k, "") for k in keys)], 1.0)

        yield from (up, latency, duration, phases, reasons, met, info, cert, tls_info)
        yield from (family for family, _ in facts.values())


class StaticCollector(Collector):
    """Yields families built elsewhere (used to put a few self metrics in a registry)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families
