"""Probe outcomes -> Prometheus metric families. Every metric name lives in this module.

Collectors build fresh families on each scrape, so a path removed by a reload leaves no
stale series behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client import exposition
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.utils import floatToGoString

from .probers.base import ALL_REASONS, ProbeResult
from .scrape import Outcome

PATH_LABELS = ("site", "vantage", "path", "host", "port", "expect")
PHASES = ProbeResult.PHASES


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    doc: str
    extra: tuple[str, ...] = ()  # labels after the path labels


# The path metrics, in the order they are exposed.
FAMILIES = (
    Family("illiad_port_up", "1 when the path works: connected, and TLS and protocol checks passed."),
    Family("illiad_port_latency_seconds", "TCP connect time of this probe; absent when no connection was made."),
    Family("illiad_probe_duration_seconds", "Wall time of the whole probe."),
    Family("illiad_probe_phase_duration_seconds", "Time spent in each phase of the probe.", ("phase",)),
    Family("illiad_probe_failure_reason", "1 for the reason this probe failed, 0 for the others.", ("reason",)),
    Family("illiad_port_expectation_met", "1 when the observed state (open or closed) matches expect."),
    Family("illiad_path_info", "The path's prober and whether the ILLiad checklist requires it.",
           ("prober", "required")),
    Family("illiad_tls_cert_expiry_timestamp_seconds", "Earliest notAfter in the presented certificate chain."),
    Family("illiad_tls_info", "Negotiated TLS version and whether the chain was verified.", ("version", "verified")),
)


def _info_family(name: str) -> Family:
    return Family(f"illiad_{name}_info", f"What the {name} server says of itself.")


def _gauge(name: str, doc: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=[*PATH_LABELS, *extra])


class ProbeCollector(Collector):
    """The path metrics of one scrape's outcomes."""

    def __init__(self, outcomes: Sequence[Outcome], *, required: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.outcomes = outcomes
        self.required = required

    def collect(self) -> Iterator[Metric]:
        up, latency, duration, phases, reasons, met, info, cert, tls_info = (
            _gauge(f.name, f.doc, f.extra) for f in FAMILIES
        )
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
                    spec = _info_family(fact.name)
                    family = _gauge(spec.name, spec.doc, keys)
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


# -- the fast path ----------------------------------------------------------------------------
#
# At consortium scale (10,000 paths, about 18 samples each) building GaugeMetricFamily samples
# and formatting them in prometheus_client took about half of a scrape's CPU. render_outcomes()
# writes the same text directly: each path's label text is escaped and joined once and
# cached, and each sample is one f-string. Its output is byte for byte what prometheus_client
# makes of ProbeCollector (tests/test_metrics_fast.py holds it to that, in both formats).

_SORTED_PATH_LABELS = tuple(sorted(PATH_LABELS))
_SORTED_INDEX = tuple(PATH_LABELS.index(name) for name in _SORTED_PATH_LABELS)
_ONE, _ZERO = "1.0", "0.0"


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _split_at(extra: Sequence[str]) -> int:
    """Where a family's extra labels go among the sorted path labels (exposition sorts)."""
    positions = {sum(1 for name in _SORTED_PATH_LABELS if name < label) for label in extra}
    assert len(positions) <= 1 and list(extra) == sorted(extra), f"extra labels must sort together: {extra}"
    return positions.pop() if positions else len(PATH_LABELS)


class _PathLabels:
    """One path's label pairs, escaped and joined once: all of them, and split where a
    family's extra labels go."""

    __slots__ = ("full", "_parts", "_splits")

    def __init__(self, values: tuple[str, ...]) -> None:
        self._parts = tuple(f'{name}="{_escape_value(values[i])}"' for name, i in zip(_SORTED_PATH_LABELS, _SORTED_INDEX))
        self.full = ",".join(self._parts)
        self._splits: dict[int, tuple[str, str]] = {}

    def around(self, position: int) -> tuple[str, str]:
        """(labels before, labels after) ``position``, each with its comma toward the middle."""
        split = self._splits.get(position)
        if split is None:
            head, tail = ",".join(self._parts[:position]), ",".join(self._parts[position:])
            split = (head + "," if head else "", "," + tail if tail else "")
            self._splits[position] = split
        return split


@lru_cache(maxsize=1 << 17)
def _path_labels(values: tuple[str, ...]) -> _PathLabels:
    return _PathLabels(values)


_PHASE_AT = _split_at(("phase",))
_REASON_AT = _split_at(("reason",))
_INFO_AT = _split_at(("prober", "required"))
_TLS_AT = _split_at(("version", "verified")[::-1])  # sorted: verified, version
_REASON_TEXT = tuple((reason, f'reason="{reason}"') for reason in ALL_REASONS)


def _header(family: Family, openmetrics: bool) -> str:
    doc = family.doc.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        doc = doc.replace('"', r'\"')
    return f"# HELP {family.name} {doc}\n# TYPE {family.name} gauge\n"


def render_outcomes(
    outcomes: Sequence[Outcome], *, required: frozenset[tuple[str, str]] = frozenset(), openmetrics: bool = False
) -> str:
    """The path metrics of ``outcomes`` in the text format (or OpenMetrics, without its
    closing ``# EOF``): the same text as ProbeCollector through prometheus_client."""
    lines: list[list[str]] = [[] for _ in FAMILIES]
    up, latency, duration, phases, reasons, met, info, cert, tls_info = lines
    facts: dict[str, tuple[tuple[str, ...], list[str]]] = {}
    n_up, n_latency, n_duration, n_phase, n_reason, n_met, n_info, n_cert, n_tls = (f.name for f in FAMILIES)
    for outcome in outcomes:
        target, result = outcome.target, outcome.result
        values = target.labels
        if result.port is not None and result.port != target.port:
            values = (*values[:4], str(result.port), *values[5:])  # the port actually probed
        labels = _path_labels(values)
        full = labels.full
        up.append(f"{n_up}{{{full}}} {_ONE if result.up else _ZERO}\n")
        duration.append(f"{n_duration}{{{full}}} {floatToGoString(result.duration)}\n")
        connect = result.connect_latency
        if connect is not None:
            latency.append(f"{n_latency}{{{full}}} {floatToGoString(connect)}\n")
        if result.phases:
            head, tail = labels.around(_PHASE_AT)
            for phase in PHASES:
                seconds = result.phases.get(phase)
                if seconds is not None:
                    phases.append(f'{n_phase}{{{head}phase="{phase}"{tail}}} {floatToGoString(seconds)}\n')
        head, tail = labels.around(_REASON_AT)
        failed = result.reason.value if result.reason is not None else None
        for reason, text in _REASON_TEXT:
            reasons.append(f"{n_reason}{{{head}{text}{tail}}} {_ONE if reason == failed else _ZERO}\n")
        met.append(f"{n_met}{{{full}}} {_ONE if result.observed is target.expect else _ZERO}\n")
        head, tail = labels.around(_INFO_AT)
        needed = "true" if (target.site, target.path) in required else "false"
        info.append(f'{n_info}{{{head}prober="{_escape_value(target.prober)}",required="{needed}"{tail}}} 1.0\n')
        if result.tls is not None:
            cert.append(f"{n_cert}{{{full}}} {floatToGoString(result.tls.cert_not_after)}\n")
            head, tail = labels.around(_TLS_AT)
            tls_info.append(
                f'{n_tls}{{{head}verified="{str(result.tls.verified).lower()}",'
                f'version="{_escape_value(result.tls.version)}"{tail}}} 1.0\n'
            )
        for fact in result.infos:  # rare (a few service paths): the generic, sorting way
            keys, fact_lines = facts.setdefault(fact.name, (tuple(k for k, _ in fact.labels), []))
            given = dict(fact.labels)
            pairs = sorted([*zip(PATH_LABELS, values), *((k, given.get(k, "")) for k in keys)])
            text = ",".join(f'{k}="{_escape_value(v)}"' for k, v in pairs)
            fact_lines.append(f"{_info_family(fact.name).name}{{{text}}} 1.0\n")
    out: list[str] = []
    for family, family_lines in zip(FAMILIES, lines):
        out.append(_header(family, openmetrics))
        out += family_lines
    for name, (_, fact_lines) in facts.items():
        out.append(_header(_info_family(name), openmetrics))
        out += fact_lines
    return "".join(out)


def fast_format(encoder: Callable[..., bytes]) -> str | None:
    """"text" or "openmetrics" when ``encoder`` (from choose_encoder) writes what
    render_outcomes() writes; None for anything else (other name escapings), which then
    takes the generic path."""
    func = getattr(encoder, "func", encoder)
    keywords = getattr(encoder, "keywords", {})
    if keywords.get("escaping", openmetrics_exposition.UNDERSCORES) not in (
        openmetrics_exposition.UNDERSCORES, openmetrics_exposition.ALLOWUTF8,
    ):
        return None
    if func is exposition.generate_latest:
        return "text"
    if func is openmetrics_exposition.generate_latest:
        return "openmetrics"
    return None
