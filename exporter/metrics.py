"""Probe outcomes -> Prometheus metrics. Every metric name lives in this module.

One set of rules says which samples a probe's outcome makes: each path family carries a
``rule`` from (target, result) to its samples. Two writers read those rules:

- :class:`ProbeCollector` builds prometheus_client families (any format it negotiates);
- :func:`write_exposition` writes the text and OpenMetrics formats directly, in chunks, so a
  10,000-path scrape is sent (and compressed) as it is written instead of being built whole
  first. Its bytes are exactly what prometheus_client makes of ProbeCollector
  (tests/test_metrics_fast.py holds it to that, in both formats).

Families are built fresh on each scrape, so a path removed by a reload leaves no stale series.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .deflate import Deflated, Deflater, deflated
from .probers.base import ALL_REASONS, NotRun, ProbeResult, ProbeTarget
from .scrape import Outcome
from .verdict import verdicts_of

PATH_LABELS = ("site", "vantage", "path", "host", "port", "expect")
_PORT = PATH_LABELS.index("port")
PHASES = ProbeResult.PHASES

# Which illiad_probe_failure_reason series a path has: "active", only the reason it failed
# for (value 1; none when it is up), or "all", every reason with 1 for the one that failed
# and 0 for the others. Alerts and the dashboard only ever ask for "== 1", which both answer.
FailureReasons = Literal["active", "all"]

Sample = tuple[tuple[str, ...], float]  # the family's extra label values, the value


@dataclass(frozen=True, slots=True)
class Rendering:
    """What the scrape asks of the rules beyond the outcomes themselves."""

    required: Container[tuple[str, str]] = frozenset()  # (site, path) the ILLiad checklist requires
    failure_reasons: FailureReasons = "active"


Rule = Callable[[ProbeTarget, ProbeResult, Rendering], Sequence[Sample]]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    doc: str
    extra: tuple[str, ...]  # labels after the path labels
    rule: Rule = field(compare=False)


# -- the rules ----------------------------------------------------------------------------------

_ONE: tuple[Sample, ...] = (((), 1.0),)
_ZERO: tuple[Sample, ...] = (((), 0.0),)
_NONE: tuple[Sample, ...] = ()
_ALL_REASONS = {
    failed: tuple(((reason,), 1.0 if reason == failed else 0.0) for reason in ALL_REASONS)
    for failed in (*ALL_REASONS, None)
}
_ACTIVE_REASON: dict[str | None, tuple[Sample, ...]] = {
    **{reason: (((reason,), 1.0),) for reason in ALL_REASONS}, None: _NONE,
}


def _up(target: ProbeTarget, result: ProbeResult, _: Rendering) -> Sequence[Sample]:
    return _ONE if result.up else _ZERO


def _latency(target: ProbeTarget, result: ProbeResult, _: Rendering) -> Sequence[Sample]:
    seconds = result.connect_latency
    return _NONE if seconds is None else (((), seconds),)


def _duration(target: ProbeTarget, result: ProbeResult, _: Rendering) -> Sequence[Sample]:
    return (((), result.duration),)


def _phases(target: ProbeTarget, result: ProbeResult, _: Rendering) -> Sequence[Sample]:
    phases = result.phases
    return [((phase,), phases[phase]) for phase in PHASES if phase in phases] if phases else _NONE


def _failure_reason(target: ProbeTarget, result: ProbeResult, rendering: Rendering) -> Sequence[Sample]:
    failed = result.reason.value if result.reason is not None else None
    return (_ALL_REASONS if rendering.failure_reasons == "all" else _ACTIVE_REASON)[failed]


def _expectation_met(target: ProbeTarget, result: ProbeResult, _: Rendering) -> Sequence[Sample]:
    return _ONE if result.observed is target.expect else _ZERO


def _path_info(target: ProbeTarget, result: ProbeResult, rendering: Rendering) -> Sequence[Sample]:
    required = "true" if (target.site, target.path) in rendering.required else "false"
    return (((target.prober, required), 1.0),)


def _cert_expiry(target: ProbeTarget, result: ProbeResult, _: Rendering) -> Sequence[Sample]:
    return _NONE if result.tls is None else (((), result.tls.cert_not_after),)


def _tls_info(target: ProbeTarget, result: ProbeResult, _: Rendering) -> Sequence[Sample]:
    tls = result.tls
    return _NONE if tls is None else (((tls.version, str(tls.verified).lower()), 1.0),)


# The path metrics, in the order they are exposed.
FAMILIES = (
    Family("illiad_port_up", "1 when the path works: connected, and TLS and protocol checks passed.", (), _up),
    Family("illiad_port_latency_seconds", "TCP connect time of this probe; absent when no connection was made.",
           (), _latency),
    Family("illiad_probe_duration_seconds", "Wall time of the whole probe.", (), _duration),
    Family("illiad_probe_phase_duration_seconds", "Time spent in each phase of the probe.", ("phase",), _phases),
    Family("illiad_probe_failure_reason",
           "1 for the reason this probe failed (with exporter.failure_reasons: all, also 0 for the others).",
           ("reason",), _failure_reason),
    Family("illiad_port_expectation_met", "1 when the observed state (open or closed) matches expect.", (),
           _expectation_met),
    Family("illiad_path_info", "The path's prober and whether the ILLiad checklist requires it.",
           ("prober", "required"), _path_info),
    Family("illiad_tls_cert_expiry_timestamp_seconds", "Earliest notAfter in the presented certificate chain.", (),
           _cert_expiry),
    Family("illiad_tls_info", "Negotiated TLS version and whether the chain was verified.", ("version", "verified"),
           _tls_info),
)


@dataclass(frozen=True, slots=True)
class PathFamily:
    """A family with one series per path, not per target, labelled ``PATH_VERDICT_LABELS``."""

    name: str
    doc: str


# The path as a whole (verdict.py), written after the per-target families; absent while unknown.
PATH_VERDICT = PathFamily(
    "illiad_path_expectation_met",
    "1 when the path as a whole meets its expectation (every target, or any one under require: any); "
    "absent while unknown (an exporter-side failure or no probe yet).",
)
PATH_VERDICT_LABELS = ("site", "vantage", "path", "required")


def path_verdict_samples(outcomes: Sequence[Outcome], required: Container[tuple[str, str]]) -> list[Sample]:
    """(site, vantage, path, required) and 1 or 0 for each path whose verdict is known."""
    return [
        ((v.site, v.vantage, v.path, "true" if v.required else "false"), 1.0 if v.met else 0.0)
        for v in verdicts_of(outcomes, required) if v.met is not None
    ]


def _info_families(outcomes: Sequence[Outcome]) -> list[Family]:
    """An ``illiad_<name>_info`` family for each kind of fact a prober reported (the server's
    version, say), labelled by the keys of its first fact, in order of first appearance."""
    keys_by_name: dict[str, tuple[str, ...]] = {}
    for outcome in outcomes:
        for fact in outcome.result.infos:
            keys_by_name.setdefault(fact.name, tuple(key for key, _ in fact.labels))
    return [_info_family(name, keys) for name, keys in keys_by_name.items()]


def _info_family(name: str, keys: tuple[str, ...]) -> Family:
    def rule(target: ProbeTarget, result: ProbeResult, _: Rendering) -> Sequence[Sample]:
        samples = []
        for fact in result.infos:
            if fact.name == name:
                given = dict(fact.labels)
                samples.append((tuple(given.get(key, "") for key in keys), 1.0))
        return samples

    return Family(f"illiad_{name}_info", f"What the {name} server says of itself.", keys, rule)


def path_families(outcomes: Sequence[Outcome]) -> list[Family]:
    """Every family the path metrics of ``outcomes`` are written in, in exposition order."""
    return [*FAMILIES, *_info_families(outcomes)]


def label_values(outcome: Outcome) -> tuple[str, ...]:
    """The path labels of an outcome: the target's, with the port actually probed (the SQL
    Server Browser can name another)."""
    values: tuple[str, ...] = outcome.target.labels
    port = outcome.result.port
    if port is not None and port != outcome.target.port:
        values = (*values[:_PORT], str(port), *values[_PORT + 1:])
    return values


# -- writer 1: prometheus_client ------------------------------------------------------------------


class ProbeCollector(Collector):
    """The path metrics of one scrape's outcomes, for prometheus_client (any format)."""

    def __init__(self, outcomes: Sequence[Outcome], *, required: Container[tuple[str, str]] = frozenset(),
                 failure_reasons: FailureReasons = "active") -> None:
        self.outcomes = outcomes
        self.rendering = Rendering(required, failure_reasons)

    def collect(self) -> Iterator[Metric]:
        rows = [(list(label_values(o)), o.target, o.result) for o in self.outcomes]
        for family in path_families(self.outcomes):
            gauge = GaugeMetricFamily(family.name, family.doc, labels=[*PATH_LABELS, *family.extra])
            for labels, target, result in rows:
                for extra, value in family.rule(target, result, self.rendering):
                    gauge.add_metric([*labels, *extra], value)
            yield gauge
        verdicts = GaugeMetricFamily(PATH_VERDICT.name, PATH_VERDICT.doc, labels=PATH_VERDICT_LABELS)
        for values, value in path_verdict_samples(self.outcomes, self.rendering.required):
            verdicts.add_metric(values, value)
        yield verdicts


EXPLANATION_LABELS = ("site", "vantage", "path", "impact", "diagnosis")


class ExplanationCollector(Collector):
    """``illiad_path_explanation_info``: for each path that fails its expectation in the latest
    results, what it breaks for the library and what the probes saw, in words, so an alert's
    description can quote them (a ``query`` on site, vantage and path). Absent for paths that
    meet their expectation. ``explanations`` yields label values in EXPLANATION_LABELS order."""

    def __init__(self, explanations: Callable[[], Iterable[tuple[str, str, str, str, str]]]) -> None:
        self.explanations = explanations

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "illiad_path_explanation_info",
            "Impact and diagnosis of a path failing its expectation, from the latest probe results (cached).",
            labels=list(EXPLANATION_LABELS))
        for values in self.explanations():
            family.add_metric(list(values), 1.0)
        yield family


class StaticCollector(Collector):
    """Yields families built elsewhere (used to put a few self metrics in a registry)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


# -- writer 2: the text formats, directly and in chunks ----------------------------------------
#
# At consortium scale (10,000 paths) building GaugeMetricFamily samples and formatting them
# in prometheus_client took about half of a scrape's CPU, and the whole text (25 MB) was
# built before its first byte was sent. write_exposition() writes the same bytes directly:
# each path's label text is escaped and joined once per scrape, each sample is one f-string,
# and the text comes out in chunks the server sends (and compresses) as they come.

_SORTED_PATH_LABELS = tuple(sorted(PATH_LABELS))
_SORTED_INDEX = tuple(PATH_LABELS.index(name) for name in _SORTED_PATH_LABELS)
_VALUE_TEXT = {1.0: "1.0", 0.0: "0.0"}
CHUNK_LINES = 2000  # about 300 kB of text: a chunk per yield to the event loop


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _value_text(value: float) -> str:
    return _VALUE_TEXT.get(value) or floatToGoString(value)


class _PathLabels:
    """One path's label pairs, escaped once and joined, and where each pair starts, so a
    family's extra labels go in place (the exposition sorts labels by name) by slicing. Kept
    for every path from scrape to scrape (see _path_labels), so no more than that: holding
    each pair and each split too took 1.7 KiB a path, 170 MiB at 100,000 paths."""

    __slots__ = ("values", "full", "_starts")

    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = values
        parts = [f'{name}="{_escape_value(values[i])}"' for name, i in zip(_SORTED_PATH_LABELS, _SORTED_INDEX)]
        self.full = ",".join(parts)
        starts, at = [], 0
        for part in parts:
            starts.append(at)
            at += len(part) + 1
        self._starts = tuple(starts)

    def around(self, position: int) -> tuple[str, str]:
        """(labels before, labels after) ``position``, each with its comma toward the middle."""
        if position == 0:
            return "", "," + self.full
        if position >= len(self._starts):
            return self.full + ",", ""
        cut = self._starts[position]
        return self.full[:cut], self.full[cut - 1:]


class _Layout:
    """How one family's samples are written: where its extra labels sit among the sorted
    path labels, and their text for each set of values (cached: they are few)."""

    def __init__(self, family: Family) -> None:
        self.family = family
        extra = family.extra
        self.order = sorted(range(len(extra)), key=lambda i: extra[i])
        positions = {sum(1 for name in _SORTED_PATH_LABELS if name < label) for label in extra}
        # None: the extra labels interleave with the path labels; each line is sorted whole
        self.position: int | None = (positions.pop() if positions else len(PATH_LABELS)) if len(positions) <= 1 \
            else None
        self._text: dict[tuple[str, ...], str] = {}

    def extra_text(self, values: tuple[str, ...]) -> str:
        text = self._text.get(values)
        if text is None:
            names = self.family.extra
            text = ",".join(f'{names[i]}="{_escape_value(values[i])}"' for i in self.order)
            if len(self._text) < 10_000:  # bounded: server versions are the only open-ended values
                self._text[values] = text
        return text

    def generic_line(self, labels: _PathLabels, extra: tuple[str, ...], value: float) -> str:
        """A line whose extra labels interleave with the path labels: all sorted together."""
        pairs = sorted([*zip(PATH_LABELS, labels.values), *zip(self.family.extra, extra)])
        text = ",".join(f'{k}="{_escape_value(v)}"' for k, v in pairs)
        return f"{self.family.name}{{{text}}} {_value_text(value)}\n"


@lru_cache(maxsize=1 << 17)
def _path_labels(values: tuple[str, ...]) -> _PathLabels:
    """Kept from scrape to scrape: a path's label text is the same every time."""
    return _PathLabels(values)


def forget_path_labels() -> None:
    """Drop the kept label text (on a config reload): the old config's paths would otherwise
    stay until 131,072 had piled up (about 2 MiB per reload of 1,000 renamed paths)."""
    _path_labels.cache_clear()


_label_text: Callable[[tuple[str, ...]], _PathLabels] = _path_labels


def keep_label_text(keep: bool) -> None:
    """Whether this process keeps each path's label text from scrape to scrape (the default).
    A serving process with probe workers does not: the workers keep their shares' already,
    and it writes only the sites it probes itself, as a site's /probe comes (kept, that was
    a second copy of every path's text: 570 bytes a path; made each time, 1.7 us a path)."""
    global _label_text
    _label_text = _path_labels if keep else _PathLabels


def keep_path_labels(targets: Iterable[ProbeTarget]) -> None:
    """Make the label text of ``targets`` now (a probe worker, given a new share), before
    any scrape, instead of in the first one: it is kept from scrape to scrape either way."""
    for target in targets:
        _path_labels(target.labels)


def _header(family: Family | PathFamily | Section, openmetrics: bool) -> str:
    doc = family.doc.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        doc = doc.replace('"', r'\"')
    return f"# HELP {family.name} {doc}\n# TYPE {family.name} gauge\n"


def _write_rows(layout: _Layout, rows: Sequence[tuple[_PathLabels, ProbeTarget, ProbeResult]],
                rendering: Rendering, out: list[str]) -> None:
    """Append the lines of ``layout``'s family for ``rows`` to ``out``."""
    family = layout.family
    rule, name, append = family.rule, family.name, out.append
    value_text, go_float = _VALUE_TEXT.get, floatToGoString
    # three loops for the three shapes of line, each written out: this is the hot path
    for labels, target, result in rows:
        samples = rule(target, result, rendering)
        if not samples:
            continue
        if not family.extra:
            for _, value in samples:
                append(f"{name}{{{labels.full}}} {value_text(value) or go_float(value)}\n")
        elif layout.position is not None:
            head, tail = labels.around(layout.position)
            for extra, value in samples:
                append(f"{name}{{{head}{layout.extra_text(extra)}{tail}}} {value_text(value) or go_float(value)}\n")
        else:
            for extra, value in samples:
                append(layout.generic_line(labels, extra, value))


def _verdict_lines(outcomes: Sequence[Outcome], required: Container[tuple[str, str]]) -> list[str]:
    name = PATH_VERDICT.name
    return [  # labels sorted by name
        f'{name}{{path="{_escape_value(path)}",required="{needed}",site="{_escape_value(site)}",'
        f'vantage="{_escape_value(vantage)}"}} {_value_text(value)}\n'
        for (site, vantage, path, needed), value in path_verdict_samples(outcomes, required)
    ]


def _rows(outcomes: Sequence[Outcome]) -> list[tuple[_PathLabels, ProbeTarget, ProbeResult]]:
    return [(_label_text(label_values(o)), o.target, o.result) for o in outcomes]


def write_exposition(
    outcomes: Sequence[Outcome], *, required: Container[tuple[str, str]] = frozenset(),
    failure_reasons: FailureReasons = "active", openmetrics: bool = False, chunk_lines: int = CHUNK_LINES,
) -> Iterator[str]:
    """The path metrics of ``outcomes`` in the text format (or OpenMetrics, without its
    closing ``# EOF``), in chunks of about ``chunk_lines`` lines: together the same text as
    ProbeCollector through prometheus_client."""
    rendering = Rendering(required, failure_reasons)
    rows = _rows(outcomes)
    step = max(chunk_lines // 2, 1)  # rows per step: a family writes one or two lines per path
    out: list[str] = []
    for family in path_families(outcomes):
        layout = _Layout(family)
        out.append(_header(family, openmetrics))
        for start in range(0, len(rows), step):
            _write_rows(layout, rows[start:start + step], rendering, out)
            if len(out) >= chunk_lines:
                yield "".join(out)
                out.clear()
    out.append(_header(PATH_VERDICT, openmetrics))
    out += _verdict_lines(outcomes, required)
    if out:
        yield "".join(out)


# -- a part of the paths written apart (a probe worker's), joined by the serving process -----------


@dataclass(frozen=True, slots=True)
class Section:
    """The lines of one family for some of the paths, without its header, compressed as they
    were written unless short (a 10,000-path part is 6 MB of text, 0.3 MB so): the lines do not depend on
    the format (text or OpenMetrics), only a header's escaping does."""

    name: str
    doc: str
    lines: bytes | Deflated  # text while short (deflate.COMPRESS_FROM)

    def __reduce__(self) -> tuple[type[Section], tuple[str, str, bytes | Deflated]]:
        return (Section, (self.name, self.doc, self.lines))  # a probe worker's answer: pickled fast


@dataclass(frozen=True, slots=True)
class Sections:
    """One part's path metrics: its families in exposition order, then its path verdicts."""

    families: tuple[Section, ...]
    verdicts: bytes | Deflated

    def __reduce__(self) -> tuple[type[Sections], tuple[tuple[Section, ...], bytes | Deflated]]:
        return (Sections, (self.families, self.verdicts))


def write_sections(outcomes: Sequence[Outcome], *, required: Container[tuple[str, str]] = frozenset(),
                   failure_reasons: FailureReasons = "active", chunk_lines: int = CHUNK_LINES) -> Sections:
    """The path metrics of ``outcomes`` as sections, for :func:`join_sections` to merge with
    other parts' (paths are never split across parts: a path verdict needs all its targets).
    Each chunk of lines is compressed as soon as it is written: the text is never held whole
    (a few lines, as a site's /probe has, stay text)."""
    rendering = Rendering(required, failure_reasons)
    rows = _rows(outcomes)
    step = max(chunk_lines // 2, 1)
    families = []
    for family in path_families(outcomes):
        layout, deflater = _Layout(family), Deflater()
        for start in range(0, len(rows), step):
            out: list[str] = []
            _write_rows(layout, rows[start:start + step], rendering, out)
            if out:
                deflater.write("".join(out).encode())
        families.append(Section(family.name, family.doc, deflater.done()))
    return Sections(tuple(families), deflated("".join(_verdict_lines(outcomes, required)).encode()))


def join_sections(parts: Sequence[Sections], *, openmetrics: bool = False) -> Iterator[bytes | Deflated]:
    """The exposition of several parts (without OpenMetrics' ``# EOF``): each family once,
    with every part's lines, in the order one part alone would have it (the fixed families,
    then info families by first appearance, then the path verdicts). The headers come as
    text, the parts' lines as they were compressed (deflate.gzip_body sends them so,
    deflate.plain_body decompresses them)."""
    order: dict[str, list[Section]] = {}
    for part in parts:
        for section in part.families:
            order.setdefault(section.name, []).append(section)
    for sections in order.values():
        yield _header(sections[0], openmetrics).encode()
        for section in sections:
            yield section.lines
    yield _header(PATH_VERDICT, openmetrics).encode()
    for part in parts:
        yield part.verdicts


def render_outcomes(
    outcomes: Sequence[Outcome], *, required: Container[tuple[str, str]] = frozenset(),
    failure_reasons: FailureReasons = "active", openmetrics: bool = False, chunk_lines: int = CHUNK_LINES,
) -> str:
    """:func:`write_exposition` as one string (tests and small answers)."""
    return "".join(write_exposition(outcomes, required=required, failure_reasons=failure_reasons,
                                    openmetrics=openmetrics, chunk_lines=chunk_lines))


_FAST_FORMATS: dict[str, Literal["text", "openmetrics"]] = {
    "text/plain": "text", "application/openmetrics-text": "openmetrics",
}


def fast_format(content_type: str) -> Literal["text", "openmetrics"] | None:
    """"text" or "openmetrics" when a response of ``content_type`` (as negotiated by
    prometheus_client's choose_encoder) is what write_exposition() writes; None for anything
    else (other name escapings), which then takes prometheus_client's way."""
    media, *params = (part.strip() for part in content_type.split(";"))
    escaping = dict(p.partition("=")[::2] for p in params).get("escaping", "underscores")
    if escaping not in ("underscores", "allow-utf-8"):  # the same bytes for names like ours
        return None
    return _FAST_FORMATS.get(media)


# -- the exporter's own metrics ---------------------------------------------------------------------


class SelfMetrics:
    """The exporter's own gauges, registered in ``registry`` next to process_* and python_*."""

    def __init__(self, registry: CollectorRegistry, *, version: str, vantage: str) -> None:
        Gauge(
            "illiad_exporter_build_info", "The exporter's version; value 1.", ["version", "python_version"],
            registry=registry,
        ).labels(version, platform.python_version()).set(1)
        Gauge(
            "illiad_exporter_vantage_info", "The role this exporter probes from; value 1.", ["vantage"],
            registry=registry,
        ).labels(vantage).set(1)
        self.reload_ok = Gauge(
            "illiad_exporter_config_last_reload_successful", "1 when the last config load succeeded.",
            registry=registry,
        )
        self.reload_time = Gauge(
            "illiad_exporter_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully.", registry=registry,
        )
        self.scrape_duration = Gauge(
            "illiad_exporter_scrape_duration_seconds",
            "How long the probes of this /metrics scrape took.", registry=registry,
        )
        self.not_run = Counter(
            "illiad_exporter_probes_not_run_total",
            "Probes the exporter itself could not run (reason exporter), by cause: no_slot (every probe "
            "slot busy until the scrape deadline), no_socket (no descriptor or buffer for a socket).",
            ["cause"], registry=registry,
        )
        for cause in NotRun:  # every series exists before the first shortage
            self.not_run.labels(cause.value)
        # On /metrics in both scrape patterns (with probe_on_metrics: false too), so "this
        # exporter has nothing to probe" is told apart from "this scrape probes nothing".
        self.planned_targets = Gauge(
            "illiad_exporter_planned_targets",
            "Targets the loaded config gives this exporter to probe (its vantage and shard).",
            registry=registry,
        )
        site_probes = Counter(
            "illiad_exporter_site_probes_total",
            "With probe workers: sites' /probe requests, by where they were probed: serving_process "
            "(it had CPU to spare: no pipe crossed) or worker.",
            ["probed_in"], registry=registry,
        )
        self.site_probes = {True: site_probes.labels("serving_process"), False: site_probes.labels("worker")}
