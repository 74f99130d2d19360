"""The status page at ``/``: every planned path of this vantage and its latest result, in
plain HTML an administrator can read on the web server during an outage, with Grafana or the
network down.

Each path is judged as a whole by its verdict (verdict.py), the same one ``check`` prints
and ``illiad_path_expectation_met`` exposes; its targets follow as detail. Required paths
are marked, and each path says in one line what breaks for the library when it is closed.

It shows what the latest scrape found and never probes by itself, so reloading the page
cannot hammer the targets. Self-contained on purpose: inline CSS, no script, no fonts, no
external resource; every value from config or probes is escaped.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .catalog import Expect, Require
from .explain import Explanation
from .probers import ProbeTarget
from .report import explanation_html
from .scrape import Outcome
from .verdict import PathVerdict, path_verdicts, target_met

# Seconds to reload the page after: the page reads cached results only, so this costs no probe.
REFRESH_SECONDS = 30
CERT_CRITICAL_DAYS = 7
CERT_WARNING_DAYS = 21

_CSS = """
body{font:15px/1.4 system-ui,-apple-system,"Segoe UI",Arial,sans-serif;margin:0;color:#1f2328;background:#fff}
header{padding:12px 20px;background:#24292f;color:#fff}
header h1{font-size:20px;margin:0}
header p{margin:4px 0 0;color:#d0d7de}
header a{color:#9cd3ff}
main{padding:8px 20px 24px}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.banner.ok{background:#dafbe1;color:#116329;border:1px solid #4ac26b}
.banner.bad{background:#ffebe9;color:#82071e;border:1px solid #ff8182}
.banner.none{background:#fff8c5;color:#4d2d00;border:1px solid #d4a72c}
h2{font-size:17px;margin:22px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px}
th,td{border:1px solid #d0d7de;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.state{font-weight:700;white-space:nowrap;text-align:center}
.good{background:#2da44e;color:#fff}
.bad{background:#cf222e;color:#fff}
.unprobed{background:#eaeef2;color:#57606a}
.warn{color:#9a6700;font-weight:600}
.crit{color:#cf222e;font-weight:700}
.detail{color:#57606a;font-size:13px;max-width:32em;overflow-wrap:anywhere}
.muted{color:#57606a}
code{font-size:13px}
.explained{border-left:4px solid #cf222e;padding:2px 12px;margin:10px 0}
.explained h3{font-size:15px;margin:6px 0}
.impact,.diagnosis{margin:4px 0}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;white-space:pre-wrap;
overflow-wrap:anywhere;font-size:13px;margin:4px 0}
summary{cursor:pointer;color:#0969da}
tr.path td{border-top:2px solid #8c959f}
tr.path .impact{color:#57606a;font-size:13px}
.need{font-size:12px;font-weight:600;border-radius:10px;padding:1px 7px;white-space:nowrap}
.need.required{background:#24292f;color:#fff}
.need.optional{background:#eaeef2;color:#57606a}
.matrix td.req{outline:3px solid #24292f;outline-offset:-3px}
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One planned probe and its latest outcome (None until a scrape probed it)."""

    target: ProbeTarget
    outcome: Outcome | None

    @property
    def state(self) -> str:
        """unprobed, up, down (expected open), closed or open (expected closed)."""
        if self.outcome is None:
            return "unprobed"
        result = self.outcome.result
        if self.target.expect is Expect.CLOSED:
            return result.observed.value
        return "up" if result.up else "down"

    @property
    def met(self) -> bool | None:
        """Whether this target meets its path's expectation (verdict.target_met)."""
        return target_met(self.target, self.outcome.result if self.outcome is not None else None)


@dataclass(frozen=True, slots=True)
class PathRows:
    """One path of a site: its verdict, its targets' rows, and what breaks when it is closed."""

    verdict: PathVerdict
    rows: tuple[Row, ...]
    impact: str

    @property
    def state(self) -> str:
        """met, failed, unknown (the exporter could not judge it) or unprobed."""
        if all(row.outcome is None for row in self.rows):
            return "unprobed"
        return self.verdict.state


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _rows(targets: Sequence[ProbeTarget], outcomes: Sequence[Outcome]) -> list[Row]:
    latest = {o.target.key: o for o in outcomes}
    return [Row(t, latest.get(t.key)) for t in targets]


def _state_cell(row: Row) -> str:
    label = {
        "unprobed": "not probed yet",
        "up": "UP",
        "down": "DOWN",
        "closed": "CLOSED",
        "open": "OPEN",
    }[row.state]
    css = "unprobed" if row.met is None else ("good" if row.met else "bad")
    return f'<td class="state {css}">{label}</td>'


def _detail(row: Row) -> str:
    if row.outcome is None:
        return '<span class="muted">waiting for the first scrape</span>'
    result = row.outcome.result
    parts = []
    if row.target.expect is Expect.CLOSED:
        parts.append("must be closed, but accepts connections" if row.state == "open" else "closed, as required")
    elif result.observed is Expect.OPEN and not result.up:
        parts.append("connected, but the check failed")
    if result.reason is not None and not result.up:
        parts.append(f"<b>{_e(result.reason.value)}</b>")
    if result.detail and not result.up:
        parts.append(_e(result.detail))
    return "; ".join(parts)


def _latency(row: Row) -> str:
    latency = row.outcome.result.connect_latency if row.outcome else None
    return "-" if latency is None else f"{latency * 1000:.1f} ms"


def _cert(row: Row, now: float) -> str:
    tls = row.outcome.result.tls if row.outcome else None
    if tls is None:
        return "-"
    days = (tls.cert_not_after - now) / 86400
    css = "crit" if days < CERT_CRITICAL_DAYS else "warn" if days < CERT_WARNING_DAYS else ""
    when = dt.datetime.fromtimestamp(tls.cert_not_after, dt.timezone.utc).strftime("%Y-%m-%d")
    text = f"{when} ({days:.0f} days)" if days >= 0 else f"{when} (EXPIRED)"
    version = f' <span class="muted">{_e(tls.version)}</span>'
    return f'<span class="{css}">{_e(text)}</span>{version}' if css else f"{_e(text)}{version}"


_VERDICT_CELL = {"met": ("good", "OK"), "failed": ("bad", "FAIL"), "unknown": ("unprobed", "UNKNOWN"),
                 "unprobed": ("unprobed", "not probed yet")}


def _need(required: bool) -> str:
    return '<span class="need required">required</span>' if required else '<span class="need optional">optional</span>'


def _path_row(path: PathRows) -> str:
    v = path.verdict
    css, text = _VERDICT_CELL[path.state]
    expect = v.expect.value + (" (any one)" if v.require is Require.ANY and len(v.checks) > 1 else "")
    summary = "waiting for the first scrape" if path.state == "unprobed" else v.summary
    impact = f'<div class="impact">If closed: {_e(path.impact)}</div>' if path.impact else ""
    return (
        f'<tr class="path" data-verdict-site="{_e(v.site)}" data-verdict-path="{_e(v.path)}"'
        f' data-verdict="{path.state}" data-required="{str(v.required).lower()}">'
        f"<td><b>{_e(v.path)}</b></td><td>{_need(v.required)}</td><td>{_e(expect)}</td>"
        f'<td class="state {css}">{text}</td><td colspan="6" class="detail">{_e(summary)}{impact}</td></tr>'
    )


def _site_table(paths: Sequence[PathRows], now: float) -> str:
    lines = [
        "<table><thead><tr><th>path</th><th>need</th><th>expect</th><th>verdict</th><th>target</th><th>state</th>"
        "<th>details</th><th>latency</th><th>TLS certificate expires</th><th>checked</th></tr></thead><tbody>"
    ]
    for path in paths:
        lines.append(_path_row(path))
        for row in path.rows:
            t = row.target
            port = row.outcome.result.port if row.outcome and row.outcome.result.port else t.port
            met = "" if row.met is None else str(row.met).lower()
            checked = "-" if row.outcome is None else _age(now - row.outcome.finished_at)
            lines.append(
                f'<tr data-site="{_e(t.site)}" data-path="{_e(t.path)}" data-host="{_e(t.host)}" data-port="{port}"'
                f' data-state="{row.state}" data-met="{met}"><td colspan="4"></td>'
                f"<td><code>{_e(t.host)}:{port}</code> <span class=\"muted\">{_e(t.prober)}</span></td>"
                f"{_state_cell(row)}<td class=\"detail\">{_detail(row)}</td>"
                f'<td class="num">{_latency(row)}</td><td class="num">{_cert(row, now)}</td>'
                f'<td class="num">{checked}</td></tr>'
            )
    lines.append("</tbody></table>")
    return "".join(lines)


def _paths(targets: Sequence[ProbeTarget], outcomes: Sequence[Outcome], required: frozenset[tuple[str, str]],
           impact: Mapping[tuple[str, str], str]) -> list[PathRows]:
    rows = _rows(targets, outcomes)
    verdicts = path_verdicts(((row.target, row.outcome.result if row.outcome else None) for row in rows), required)
    by_path: dict[str, list[Row]] = {}
    for row in rows:
        by_path.setdefault(row.target.path, []).append(row)
    return [PathRows(v, tuple(by_path[v.path]), impact.get((v.site, v.path), "")) for v in verdicts]


def _explained(site: str, paths: Sequence[PathRows], explanations: Mapping[tuple[str, str], Explanation]) -> str:
    """What each failing path of the site breaks and why; the rule to ask for folded away."""
    blocks = []
    for path in (p.verdict.path for p in paths):
        e = explanations.get((site, path))
        if e is None:
            continue
        need = "required" if e.required else "optional"
        blocks.append(
            f'<div class="explained" data-explained-path="{_e(path)}"><h3>{_e(path)} ({need}): {_e(e.title)}</h3>'
            f"{explanation_html({'explanation': e.as_json()})}</div>"
        )
    return "".join(blocks)


def _matrix(sites: Sequence[str], paths_by_site: Mapping[str, Sequence[PathRows]]) -> str:
    """Path by site, one cell each coloured by the path's verdict: the vendor's checklist at
    a glance. A required path's cell is framed."""
    order: list[str] = []
    for site in sites:
        for path in paths_by_site[site]:
            if path.verdict.path not in order:
                order.append(path.verdict.path)
    head = "".join(f"<th>{_e(site)}</th>" for site in sites)
    body = []
    for path_id in order:
        cells = []
        for site in sites:
            cell = next((p for p in paths_by_site[site] if p.verdict.path == path_id), None)
            if cell is None:
                cells.append('<td class="muted">-</td>')
                continue
            css, text = {"met": ("good", "OK"), "failed": ("bad", "FAIL")}.get(cell.state, ("unprobed", "?"))
            req = " req" if cell.verdict.required else ""
            cells.append(
                f'<td class="state {css}{req}" data-matrix-site="{_e(site)}" data-matrix-path="{_e(path_id)}"'
                f' data-matrix-required="{str(cell.verdict.required).lower()}">{text}</td>'
            )
        body.append(f"<tr><th>{_e(path_id)}</th>{''.join(cells)}</tr>")
    return (f'<table class="matrix"><thead><tr><th>path</th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            '</table><p class="muted">A framed cell is a path the ILLiad checklist (or the site) requires.</p>')


def render(
    *,
    targets_by_site: Mapping[str, Sequence[ProbeTarget]],
    outcomes_by_site: Mapping[str, Sequence[Outcome]],
    vantage: str,
    version: str,
    now: float,
    reload_error: str = "",
    explanations: Mapping[tuple[str, str], Explanation] | None = None,
    required: frozenset[tuple[str, str]] = frozenset(),
    impact: Mapping[tuple[str, str], str] | None = None,
) -> str:
    """The whole page. ``targets_by_site`` is the running plan, ``outcomes_by_site`` the
    latest scrape's results per site (``ExporterState.last_outcomes``), ``explanations``
    those of the failing paths by (site, path): impact and diagnosis, the rule on demand;
    ``required`` and ``impact`` are the plan's (site, path) -> required and one-line impact."""
    sites = list(targets_by_site)
    paths_by_site = {
        site: _paths(targets_by_site[site], outcomes_by_site.get(site, ()), required, impact or {}) for site in sites
    }
    every = [path for paths in paths_by_site.values() for path in paths]
    sections = "".join(_site_section(site, paths_by_site[site], explanations or {}, now) for site in sites)
    matrix = _matrix(sites, paths_by_site) if every else ""
    body = f"{_summary(every)}{_reload_failed(reload_error)}{matrix}{sections}"
    return _page(vantage, version, now, body)


def _summary(every: Sequence[PathRows]) -> str:
    """The banner on top: no path, no scrape yet, how many paths failed or could not be
    judged, or all as expected."""
    probed = [path for path in every if path.state != "unprobed"]
    failing = [path for path in probed if path.state == "failed"]
    unknown = [path for path in probed if path.state == "unknown"]
    if not every:
        return '<div class="banner none">This exporter has no path to probe from this vantage.</div>'
    if not probed:
        return (
            '<div class="banner none" id="summary" data-summary="unprobed">No scrape yet. This page shows the results '
            "of the latest scrape of /metrics or /probe and never probes by itself; they appear after Prometheus' "
            "first scrape.</div>"
        )
    if failing or unknown:
        parts = []
        if failing:
            needed = sum(1 for path in failing if path.verdict.required)
            parts.append(f"{len(failing)} of {len(probed)} probed paths are NOT as expected ({needed} required).")
        if unknown:
            parts.append(f"{len(unknown)} could not be judged: the exporter failed to probe them.")
        return (
            f'<div class="banner bad" id="summary" data-summary="{"failing" if failing else "unknown"}">'
            f"{' '.join(parts)}</div>"
        )
    return (
        f'<div class="banner ok" id="summary" data-summary="ok">All {len(probed)} probed paths are as '
        "expected.</div>"
    )


def _reload_failed(reload_error: str) -> str:
    """The banner of a failed config reload (none when the last reload worked)."""
    if not reload_error:
        return ""
    return (
        '<div class="banner bad" id="reload-error">The last config reload failed; the exporter runs the config '
        f'it had before.<pre class="detail">{_e(reload_error)}</pre></div>'
    )


def _site_section(site: str, paths: Sequence[PathRows], explanations: Mapping[tuple[str, str], Explanation],
                  now: float) -> str:
    """One site: when its results are from, its table of paths and what its failing paths break."""
    finished = [r.outcome.finished_at for p in paths for r in p.rows if r.outcome is not None]
    when = (
        f"results of {_e(_utc(max(finished)))}, {_age(now - max(finished))}" if finished else "not probed yet"
    )
    return (
        f'<section data-site="{_e(site)}"><h2>{_e(site)} <span class="muted">({when})</span></h2>'
        f"{_site_table(paths, now)}{_explained(site, paths, explanations)}</section>"
    )


def _page(vantage: str, version: str, now: float, body: str) -> str:
    """The document around ``body``: head, style, and the header with the vantage and version."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ILLiad paths from {_e(vantage)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>ILLiad network paths from <span id=\"vantage\">{_e(vantage)}</span></h1>"
        f"<p>illiad-port-exporter {_e(version)} &middot; page built {_e(_utc(now))} &middot; "
        '<a href="metrics">metrics</a> (probes now) &middot; <a href="-/healthy">health</a></p></header>'
        f"<main>{body}</main></body></html>"
    )
