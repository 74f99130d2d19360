"""Availability over time, read back from Prometheus: per site and path, the share of verdict
samples met, and each outage with its start, end, length and the failure reasons seen.

Two passes keep a 30-day range cheap and the figures exact:

1. the hourly records of alerts/illiad-availability.rules.yml (their group runs once an hour,
   so the windows tile time) give each hour's known, met and unknown samples per path;
2. only the hours where some path failed, and the range's ragged edges and any hour with no
   record (before the rules were loaded, a Prometheus restart), are read from the raw
   ``illiad_path_expectation_met`` with ``query_range`` at a step of the scrape interval, in
   windows that tile those spans too; that is where the outages are found.

Each sample is thus counted once, from a record or from the raw series, never both. A path
whose verdict is absent (the exporter could not tell) counts neither for nor against it; a
path with no verdict sample in the range has no availability at all, never 100%.

Errors are :class:`AvailabilityError`, with a one-line message (the CLI prints it, exit 2).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import http.client
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .escape import markdown, visible
from .files import read_bounded
from .report import PAGE_FRAME_CSS

VERDICT = "illiad_path_expectation_met"
PATH_INFO = "illiad_path_info"
FAILURE_REASON = "illiad_probe_failure_reason"
RULES_FILE = "illiad-availability.rules.yml"
_RECORD = "illiad_path:illiad_path_expectation_met:"
COUNT_1H = _RECORD + "count_over_time_1h"
SUM_1H = _RECORD + "sum_over_time_1h"
UNKNOWN_1H = _RECORD + "unknown_count_over_time_1h"
HOUR = 3600
# Prometheus refuses a query_range of more than 11,000 points per series; stay under it.
MAX_POINTS = 10_000
# A record query covers at most this much (168 samples per series and record).
RECORD_PAGE = 7 * 86400
# An outage goes on through a gap in the verdict (unknown, or no scrape) this long or shorter;
# after a longer one it ends at its last failed sample. Prometheus' own lookback.
GAP = 300.0
DEFAULT_STEP = 60.0  # when no record tells the scrape interval
PATH_LABELS = ("site", "vantage", "path", "required")
MAX_ANSWER = 256 * 1024 * 1024
MAX_SECRET = 64 * 1024


class AvailabilityError(Exception):
    """Why the availability could not be read: one line, for the operator."""


# -- Prometheus' HTTP API ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrometheusAccess:
    """How to reach a Prometheus (or anything serving its query API), as a Prometheus client
    of the ecosystem is told: basic auth with a password file, a bearer token file, a CA file."""

    url: str
    username: str | None = None
    password_file: str | None = None
    bearer_token_file: str | None = None
    ca_file: str | None = None
    timeout: float = 30.0


class PrometheusClient:
    """The few calls of Prometheus' HTTP API this command needs; every failure an
    AvailabilityError that says which Prometheus and what went wrong."""

    def __init__(self, access: PrometheusAccess) -> None:
        self.access = access
        parsed = urllib.parse.urlsplit(access.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise AvailabilityError(f"--prometheus {access.url!r}: give an http:// or https:// URL")
        self.base = access.url.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": "illiad-exporter availability"}
        if access.bearer_token_file and access.username:
            raise AvailabilityError("give either basic auth or a bearer token, not both")
        if access.bearer_token_file:
            self.headers["Authorization"] = "Bearer " + _secret(access.bearer_token_file, "bearer token file")
        if access.username:
            password = _secret(access.password_file, "password file") if access.password_file else ""
            pair = base64.b64encode(f"{access.username}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = "Basic " + pair
        self.context: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            try:
                self.context = ssl.create_default_context(cafile=access.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise AvailabilityError(f"CA file {access.ca_file}: {_reason(exc)}") from None

    def _call(self, path: str, params: Mapping[str, str], *, post: bool = True) -> dict[str, Any]:
        """The ``data`` of an API answer (queries are POSTed, so a long one fits)."""
        encoded = urllib.parse.urlencode(params)
        if post:
            request = urllib.request.Request(self.base + path, data=encoded.encode(), headers=self.headers,
                                             method="POST")
        else:
            request = urllib.request.Request(f"{self.base}{path}?{encoded}", headers=self.headers)
        where = f"Prometheus at {self.access.url}"
        try:
            with urllib.request.urlopen(request, timeout=self.access.timeout, context=self.context) as answer:
                raw = answer.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            detail = _api_error(exc)
            if exc.code in (401, 403):
                raise AvailabilityError(f"{where} refused the request: HTTP {exc.code} {exc.reason}"
                                        f"{': ' + detail if detail else ''} (check the basic auth or bearer "
                                        "token given)") from None
            raise AvailabilityError(f"{where} answered HTTP {exc.code} {exc.reason}"
                                    f"{': ' + detail if detail else ''}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, no such host, TLS, timeout
            raise AvailabilityError(f"cannot reach {where}: {_reason(exc)}") from None
        except http.client.HTTPException as exc:  # what answered is not an HTTP server
            raise AvailabilityError(f"cannot reach {where}: the answer is not HTTP ({type(exc).__name__})") from None
        if len(raw) > MAX_ANSWER:
            raise AvailabilityError(f"{where} answered more than {MAX_ANSWER >> 20} MiB; ask for a shorter range")
        try:
            answer_json = json.loads(raw)
            status = answer_json["status"]
        except (ValueError, TypeError, KeyError):
            raise AvailabilityError(f"{where} did not answer as Prometheus' API does (is the URL its "
                                    "base, e.g. http://prometheus:9090?)") from None
        if status != "success":
            raise AvailabilityError(f"{where} refused the query: {answer_json.get('error', status)}")
        data = answer_json.get("data")
        if not isinstance(data, dict):
            raise AvailabilityError(f"{where} did not answer as Prometheus' API does (no data in its answer)")
        return data

    def recording_rules(self) -> set[str]:
        data = self._call("/api/v1/rules", {"type": "record"}, post=False)
        return {rule.get("name", "") for group in data.get("groups", []) for rule in group.get("rules", [])}

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        data = self._call("/api/v1/query", {"query": expr, "time": _fmt_ts(at)})
        result: list[dict[str, Any]] = data.get("result", [])
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Every point of ``expr`` at start, start+step, ... end, fetched in pages of at most
        MAX_POINTS points per series (Prometheus refuses more than 11,000)."""
        series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        page_start = start
        while page_start <= end:
            page_end = min(end, page_start + (MAX_POINTS - 1) * step)
            data = self._call("/api/v1/query_range", {"query": expr, "start": _fmt_ts(page_start),
                                                      "end": _fmt_ts(page_end), "step": _fmt_ts(step)})
            for item in data.get("result", []):
                key = tuple(sorted(item["metric"].items()))
                series.setdefault(key, {"metric": item["metric"], "values": []})["values"] += item["values"]
            page_start = page_end + step
        return list(series.values())


def _secret(path: str | None, what: str) -> str:
    try:
        return read_bounded(path or "", MAX_SECRET).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AvailabilityError(f"{what} {path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None)
    if isinstance(inner, BaseException):
        exc = inner
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."  # one line, whatever the peer sent


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read(64 * 1024)).get("error", ""))
    except (ValueError, AttributeError, OSError):
        return ""


def _fmt_ts(value: float) -> str:
    return f"{value:.3f}"


# -- the result ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class PathKey:
    site: str
    vantage: str
    path: str
    required: bool


@dataclass(slots=True)
class Outage:
    start: float
    end: float
    reasons: list[str] = field(default_factory=list)  # "refused (host:port)", in first-seen order
    ongoing: bool = False  # still failing at the end of the range

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class PathAvailability:
    key: PathKey
    met: int = 0  # verdict samples met
    known: int = 0  # verdict samples (met or not)
    unknown: int = 0  # scrapes of the path without a verdict
    outages: list[Outage] = field(default_factory=list)

    @property
    def share(self) -> float | None:
        """The share of known samples met; None when there were none (no data, not 100%)."""
        return self.met / self.known if self.known else None

    @property
    def down_seconds(self) -> float:
        return sum(o.seconds for o in self.outages)

    @property
    def longest(self) -> Outage | None:
        return max(self.outages, key=lambda o: o.seconds, default=None)


@dataclass(slots=True)
class Availability:
    prometheus: str
    start: float
    end: float
    step: float  # the resolution of outage starts and ends
    site: str | None
    paths: list[PathAvailability]
    hours_from_records: int  # hours summed from the recording rules, not read raw
    hours_read_raw: float


# -- reading it ------------------------------------------------------------------------------


def _selector(site: str | None) -> str:
    return "{site=" + json.dumps(site) + "}" if site else ""


def _key(metric: Mapping[str, str]) -> PathKey:
    return PathKey(metric.get("site", ""), metric.get("vantage", ""), metric.get("path", ""),
                   metric.get("required") == "true")


def _window(seconds: float) -> str:
    """A range selector one millisecond short of ``seconds``: Prometheus 2 counts a sample on
    a window's start in it, and windows laid end to end must count each sample once."""
    return f"[{int(round(seconds * 1000)) - 1}ms]"


def _step_for(samples_per_hour: int) -> float:
    """The scrape interval, rounded to a divisor of an hour (so raw windows tile the hours)."""
    interval = max(1, round(HOUR / samples_per_hour))
    return float(max(d for d in range(1, interval + 1) if HOUR % d == 0))


def measure(client: PrometheusClient, start: float, end: float, *, site: str | None = None,
            step: float | None = None) -> Availability:
    """Availability and outages of every path (of ``site``) with data between start and end."""
    if end <= start:
        raise AvailabilityError("the range is empty: --from must be before --to")
    if COUNT_1H not in client.recording_rules():
        raise AvailabilityError(
            f"Prometheus at {client.access.url} does not record availability (no rule {COUNT_1H}): add "
            f"{RULES_FILE} to its rule_files (`illiad-exporter assets DIR` writes it)")
    sel = _selector(site)
    records = _hourly_records(client, sel, start, end)
    if step is None:
        step = _scrape_interval(client, sel, start, end)
    # Hours the records cover inside the range, and those where some path failed.
    hours: dict[float, list[tuple[PathKey, tuple[float, float, float]]]] = defaultdict(list)
    for (key, hour_end), counts in records.items():
        if start <= hour_end - HOUR and hour_end <= end:
            hours[hour_end].append((key, counts))
    clean: list[float] = []
    for hour_end in sorted(hours):
        overlaps = clean and hour_end - HOUR < clean[-1]  # the group's offset moved (its file was renamed)
        if not overlaps and all(met >= known for _, (met, known, _) in hours[hour_end]):
            clean.append(hour_end)
    spans = _spans(start, end, clean)

    results: dict[PathKey, PathAvailability] = {}

    def path(key: PathKey) -> PathAvailability:
        return results.setdefault(key, PathAvailability(key))

    for hour_end in clean:
        for key, (met, known, unknown) in hours[hour_end]:
            entry = path(key)
            entry.met += int(met)
            entry.known += int(known)
            entry.unknown += int(unknown)
    for span_start, span_end in spans:
        _read_raw(client, sel, span_start, span_end, step, path, last=span_end == end)
    if not results:
        where = f" for site {site}" if site else ""
        raise AvailabilityError(f"no data: Prometheus at {client.access.url} holds no illiad series{where} between "
                                f"{_when(start)} and {_when(end)}")
    return Availability(client.access.url, start, end, step, site, [results[k] for k in sorted(results)],
                        hours_from_records=len(clean), hours_read_raw=sum(b - a for a, b in spans) / HOUR)


def _scrape_interval(client: PrometheusClient, sel: str, start: float, end: float) -> float:
    """The scrape interval, from the most verdict samples one series had in an hour (each
    exporter of an HA pair is a series of its own, not one at twice the rate)."""
    found = client.query(f"max(max_over_time({COUNT_1H}{sel}{_window(end - start)}))", end)
    most = int(float(found[0]["value"][1])) if found else 0
    return _step_for(most) if most > 0 else DEFAULT_STEP


def _hourly_records(client: PrometheusClient, sel: str,
                    start: float, end: float) -> dict[tuple[PathKey, float], tuple[float, float, float]]:
    """(path, hour's end) -> (met, known, unknown) from the hourly records, instances summed."""
    found: dict[tuple[PathKey, float], list[float]] = {}
    for slot, name in enumerate((SUM_1H, COUNT_1H, UNKNOWN_1H)):
        seen: set[tuple[tuple[tuple[str, str], ...], float]] = set()
        page_end = end
        while page_end > start:
            length = min(RECORD_PAGE, page_end - start)
            for item in client.query(f"{name}{sel}{_window(length)}", page_end):
                labels = tuple(sorted(item["metric"].items()))
                for ts, value in item.get("values", []):
                    if (labels, float(ts)) in seen:
                        continue
                    seen.add((labels, float(ts)))
                    counts = found.setdefault((_key(item["metric"]), float(ts)), [0.0, 0.0, 0.0])
                    counts[slot] += float(value)
            page_end -= length
    return {k: (v[0], v[1], v[2]) for k, v in found.items()}


def _spans(start: float, end: float, clean_hours: Sequence[float]) -> list[tuple[float, float]]:
    """The parts of (start, end] not covered by a clean hour, as (from, to] intervals."""
    spans = []
    cursor = start
    for hour_end in clean_hours:
        if hour_end - HOUR > cursor:
            spans.append((cursor, hour_end - HOUR))
        cursor = max(cursor, hour_end)
    if cursor < end:
        spans.append((cursor, end))
    return spans


def _raw_queries(sel: str, seconds: float) -> tuple[str, str, str, str]:
    """Per path and window of ``seconds``: samples met, samples known, scrapes of the path, and
    (per target) the failure reasons seen."""
    window = _window(seconds)
    by_path = "sum by (site, vantage, path, required)"
    return (
        f"{by_path} (sum_over_time({VERDICT}{sel}{window}))",
        f"{by_path} (count_over_time({VERDICT}{sel}{window}))",
        f"{by_path} (max by (job, instance, site, vantage, path, required) "
        f"(count_over_time({PATH_INFO}{sel}{window})))",
        f"max by (site, vantage, path, host, port, reason) (max_over_time({FAILURE_REASON}{sel}{window})) == 1",
    )


def _read_raw(client: PrometheusClient, sel: str, span_start: float, span_end: float, step: float,
              path: Callable[[PathKey], PathAvailability], *, last: bool) -> None:
    """Count one span's samples from the raw series, window by window, and find its outages."""
    whole = int((span_end - span_start) // step)  # whole steps; a shorter last window is read on its own
    results: list[list[dict[str, Any]]] = [[], [], [], []]
    if whole:
        for slot, expr in enumerate(_raw_queries(sel, step)):
            results[slot] = client.query_range(expr, span_start + step, span_start + whole * step, step)
    rest = span_end - span_start - whole * step
    if rest > 0.0005:
        for slot, expr in enumerate(_raw_queries(sel, rest)):
            results[slot] += [{"metric": item["metric"], "values": [item["value"]]}
                              for item in client.query(expr, span_end)]
    met, known, probed, reasons = results

    windows: dict[PathKey, dict[float, list[float]]] = defaultdict(dict)
    for slot, result in enumerate((met, known, probed)):
        for item in result:
            key = _key(item["metric"])
            for ts, value in item["values"]:
                windows[key].setdefault(float(ts), [0.0, 0.0, 0.0])[slot] = float(value)
    seen_reasons: dict[tuple[str, str, str], list[tuple[float, str]]] = defaultdict(list)
    for item in reasons:
        m = item["metric"]
        host, port = m.get("host", ""), m.get("port", "")
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        text = f"{m.get('reason', '?')} ({target})"
        for ts, _ in item["values"]:
            seen_reasons[(m.get("site", ""), m.get("vantage", ""), m.get("path", ""))].append((float(ts), text))

    for key, points in windows.items():
        entry = path(key)
        for met_n, known_n, probed_n in points.values():
            entry.met += int(met_n)
            entry.known += int(known_n)
            entry.unknown += max(0, int(probed_n) - int(known_n))
        last_whole = span_start + whole * step
        timeline = [(ts - step if ts <= last_whole + 0.0005 else last_whole, ts, counts)
                    for ts, counts in sorted(points.items())]
        outages = list(find_outages(timeline, span_end, last=last))
        reasons_here = sorted(seen_reasons.get((key.site, key.vantage, key.path), []))
        for outage in outages:
            for ts, text in reasons_here:
                if outage.start < ts <= outage.end + step and text not in outage.reasons:
                    outage.reasons.append(text)
        entry.outages.extend(outages)


def find_outages(timeline: Iterable[tuple[float, float, list[float]]], span_end: float, *,
             last: bool) -> Iterator[Outage]:
    """Outages in one span's windows (start, end, [met, known, probed]): from the start of the
    first window with a failed sample to the start of the next window where every sample was
    met, through gaps of at most GAP; after a longer gap, to the end of its last failed window."""
    start: float | None = None
    last_failed = 0.0
    for window_start, window_end, (met, known, _) in timeline:
        if start is not None and window_start - last_failed > GAP:
            yield Outage(start, last_failed)
            start = None
        if known > met:
            if start is None:
                start = window_start
            last_failed = window_end
        elif known > 0 and start is not None:
            yield Outage(start, window_start)
            start = None
    if start is not None:
        # The span ends at the range's end (still failing), or where a clean hour begins.
        if last:
            yield Outage(start, last_failed, ongoing=span_end - last_failed <= GAP)
        else:
            yield Outage(start, span_end if span_end - last_failed <= GAP else last_failed)


# -- time ----------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'30d', '12h', '1w2d': Prometheus' duration words (no 'y', no 'ms': not a report's scale)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h or 1w")
    return float(sum(int(n) * _UNIT[u] for n, u in parts))


def parse_time(text: str) -> float:
    """A Unix timestamp, or an ISO 8601 date or time (UTC unless it names its offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time such as 2026-11-01, 2026-11-01T02:00Z or a Unix "
                         "timestamp") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def length(seconds: float) -> str:
    """'2d 3h', '1h 5m', '30m', '45s': the two largest units."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def percent(entry: PathAvailability) -> str:
    """The share met as a percentage; never 100.00% unless every sample was met."""
    share = entry.share
    if share is None:
        return "no data"
    text = f"{share * 100:.2f}%"
    if share < 1 and text == "100.00%":
        return "99.99%"
    return text


# -- rendering -----------------------------------------------------------------------------------


def _span(report: Availability) -> str:
    where = f"site {report.site}" if report.site else "every site"
    return f"{where}, {_when(report.start)} to {_when(report.end)}"


def _title(report: Availability) -> str:
    return f"Availability of the ILLiad paths: {_span(report)}"


def _rows(report: Availability) -> list[list[str]]:
    rows = []
    for p in report.paths:
        longest = p.longest
        no_data = p.share is None
        rows.append([p.key.site, p.key.path, p.key.vantage, "required" if p.key.required else "optional",
                     percent(p), "-" if no_data else str(len(p.outages)),
                     "-" if longest is None else length(longest.seconds),
                     "-" if no_data else length(p.down_seconds), str(p.unknown) if p.unknown else "-"])
    return rows


HEADER = ["site", "path", "vantage", "need", "available", "outages", "longest", "down", "unknown"]


def _notes(report: Availability) -> list[str]:
    return [
        f"Prometheus {report.prometheus}; outages to {length(report.step)} (the step); "
        f"{report.hours_from_records} hour(s) from the recording rules, {report.hours_read_raw:.1f} read raw.",
        "available: the share of the path's verdict samples that were met; unknown: samples where the "
        "exporter could not tell, counted neither way; no data: no verdict at all in the range.",
    ]


def _outage_lines(report: Availability) -> Iterator[tuple[PathAvailability, Outage]]:
    for p in report.paths:
        for outage in p.outages:
            yield p, outage


def as_text(report: Availability) -> str:
    # a site or path name is the config's text: control characters shown, never sent to the terminal
    rows = [HEADER, *([visible(c) for c in row] for row in _rows(report))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    right = {4, 5, 6, 7, 8}
    out = [_title(report), ""]
    for row in rows:
        out.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    outages = list(_outage_lines(report))
    if outages:
        out += ["", "Outages:"]
        for p, o in outages:
            out.append(visible(f"  {p.key.site} {p.key.path} from {p.key.vantage}: {_clock(o.start)} to "
                               f"{_clock(o.end)} ({length(o.seconds)}{', still failing' if o.ongoing else ''})"
                               f"{': ' + ', '.join(o.reasons) if o.reasons else ''}"))
    out += ["", *_notes(report)]
    return "\n".join(out) + "\n"


def as_markdown(report: Availability) -> str:
    table = ["| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---:" if i >= 4 else "---" for i in range(len(HEADER))) + "|",
             # site, path and vantage are the config's text; the figures are ours
             *("| " + " | ".join(markdown(c) if i < 3 else c for i, c in enumerate(row)) + " |"
               for row in _rows(report))]
    blocks = [f"# {markdown(_title(report))}", "\n".join(table)]
    outages = list(_outage_lines(report))
    if outages:
        rows = ["| site | path | vantage | start (UTC) | end (UTC) | length | failure reasons |",
                "|---|---|---|---|---|---:|---|"]
        for p, o in outages:
            rows.append(f"| {markdown(p.key.site)} | {markdown(p.key.path)} | {markdown(p.key.vantage)} | "
                        f"{_clock(o.start)} | "
                        f"{_clock(o.end)}{' (still failing)' if o.ongoing else ''} | {length(o.seconds)} | "
                        f"{markdown(', '.join(o.reasons)) or '-'} |")
        blocks += ["## Outages", "\n".join(rows)]
    blocks += [markdown(n) for n in _notes(report)]
    return "\n\n".join(blocks) + "\n"


def as_json(report: Availability) -> str:
    def outage(o: Outage) -> dict[str, Any]:
        return {"start": _iso(o.start), "end": _iso(o.end), "seconds": o.seconds, "ongoing": o.ongoing,
                "reasons": o.reasons}

    return json.dumps({
        "prometheus": report.prometheus, "start": _iso(report.start), "end": _iso(report.end),
        "step_seconds": report.step, "site": report.site,
        "hours_from_records": report.hours_from_records, "hours_read_raw": report.hours_read_raw,
        "paths": [{
            "site": p.key.site, "vantage": p.key.vantage, "path": p.key.path, "required": p.key.required,
            "availability": p.share, "samples_met": p.met, "samples_known": p.known, "samples_unknown": p.unknown,
            "outages": len(p.outages), "longest_seconds": p.longest.seconds if p.longest else None,
            "down_seconds": p.down_seconds, "outage_list": [outage(o) for o in p.outages],
        } for p in report.paths],
    }, indent=2) + "\n"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_CSS = PAGE_FRAME_CSS + """
h2{font-size:17px;margin:22px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px}
th,td{border:1px solid #d0d7de;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;white-space:nowrap}
.full{background:#dafbe1}
.short{background:#ffebe9}
.none{color:#8c959f}
.muted{color:#57606a}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def as_html(report: Availability) -> str:
    """One self-contained page (no script, no external file), every value escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in HEADER)
    body = []
    for p, row in zip(report.paths, _rows(report)):
        share = p.share
        kind = "none" if share is None else "full" if share >= 1 else "short"
        cells = "".join(f'<td class="num{" " + kind if i == 4 else ""}">{_e(c)}</td>' if i >= 4 else f"<td>{_e(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f'<tr data-site="{_e(p.key.site)}" data-path="{_e(p.key.path)}" '
                    f'data-vantage="{_e(p.key.vantage)}">{cells}</tr>')
    outages = [f'<tr data-site="{_e(p.key.site)}" data-path="{_e(p.key.path)}"><td>{_e(p.key.site)}</td>'
               f"<td>{_e(p.key.path)}</td><td>{_e(p.key.vantage)}</td><td>{_e(_clock(o.start))}</td>"
               f"<td>{_e(_clock(o.end))}{' (still failing)' if o.ongoing else ''}</td>"
               f'<td class="num">{_e(length(o.seconds))}</td><td>{_e(", ".join(o.reasons)) or "-"}</td></tr>'
               for p, o in _outage_lines(report)]
    outage_html = ("<h2>Outages</h2><table id=\"outages\"><thead><tr><th>site</th><th>path</th><th>vantage</th>"
                   "<th>start (UTC)</th><th>end (UTC)</th><th>length</th><th>failure reasons</th></tr></thead>"
                   f"<tbody>{''.join(outages)}</tbody></table>") if outages else "<p>No outage in the range.</p>"
    notes = "".join(f'<p class="muted">{_e(n)}</p>' for n in _notes(report))
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(_title(report))}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>Availability of the ILLiad paths</h1><p>{_e(_span(report))}</p></header>"
            f'<main><table id="availability"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f"{outage_html}{notes}</main></body></html>\n")


RENDERERS = {"text": as_text, "markdown": as_markdown, "html": as_html, "json": as_json}
