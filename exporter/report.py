"""The whole installation on one page: ``illiad-exporter report`` merges the JSON of
``check`` runs from several vantages (the web server, a staff PC, an outside host) into one
matrix of every path from every vantage, with the explanation of each failure, as markdown
or as a self-contained HTML page (inline CSS, no script, nothing fetched).

It needs no Prometheus and probes nothing: what it says is what the check runs saw.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .escape import markdown, markdown_code, markdown_fence


class ReportError(Exception):
    """A file that is not ``check --output json``; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Run:
    """One ``check`` run: its column label and its paths."""

    label: str
    vantage: str
    file: str
    checked_at: str
    paths: tuple[Mapping[str, Any], ...]


def load_runs(files: Sequence[str]) -> list[Run]:
    """Read every file; all problems at once, each naming its file."""
    runs: list[Run] = []
    problems: list[str] = []
    for file in files:
        try:
            data = json.loads(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append(f"{file}: cannot read: {exc.strerror or exc}")
            continue
        except json.JSONDecodeError as exc:
            problems.append(f"{file}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("vantage"), str) \
                or not isinstance(data.get("paths"), list):
            problems.append(f"{file}: not the output of 'illiad-exporter check --output json' "
                            "(needs \"vantage\" and \"paths\")")
            continue
        bad = [i for i, p in enumerate(data["paths"]) if not isinstance(p, dict) or not {"site", "path"} <= set(p)]
        if bad:
            problems.append(f"{file}: paths[{bad[0]}] has no site and path")
            continue
        runs.append(Run(data["vantage"], data["vantage"], file, str(data.get("checked_at", "")),
                        tuple(data["paths"])))
    if problems:
        raise ReportError("\n".join(problems))
    if not runs:
        raise ReportError("no check output given")
    # Two runs from the same role (two staff PCs): told apart by their file names.
    labels = [r.vantage for r in runs]
    return [
        Run(f"{r.vantage} ({Path(r.file).stem})" if labels.count(r.vantage) > 1 else r.vantage, r.vantage, r.file,
            r.checked_at, r.paths)
        for r in runs
    ]


@dataclass(frozen=True, slots=True)
class Matrix:
    runs: tuple[Run, ...]
    rows: tuple[tuple[str, str], ...]  # (site, path) in first-seen order
    cells: Mapping[tuple[str, str, str], Mapping[str, Any]]  # (site, path, run label) -> path entry

    def info(self, site: str, path: str) -> Mapping[str, Any]:
        """The first entry of this path from any run (title, impact, required)."""
        return next(self.cells[(site, path, r.label)] for r in self.runs if (site, path, r.label) in self.cells)

    def failures(self) -> list[tuple[Run, Mapping[str, Any]]]:
        return [(r, self.cells[(s, p, r.label)]) for s, p in self.rows for r in self.runs
                if (s, p, r.label) in self.cells and self.cells[(s, p, r.label)].get("met") is not True]


def build_matrix(runs: Sequence[Run]) -> Matrix:
    rows: list[tuple[str, str]] = []
    cells: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for run in runs:
        for entry in run.paths:
            key = (str(entry["site"]), str(entry["path"]))
            if key not in rows:
                rows.append(key)
            cells[(*key, run.label)] = entry
    return Matrix(tuple(runs), tuple(rows), cells)


def state(entry: Mapping[str, Any] | None) -> str:
    """The cell word: met, failed, unknown, or '' when the path does not start at that vantage."""
    if entry is None:
        return ""
    met = entry.get("met")
    return "met" if met is True else "failed" if met is False else "unknown"


_CELL_TEXT = {"met": "OK", "failed": "FAIL", "unknown": "?", "": "-"}


def _explanation(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    found = entry.get("explanation")
    return found if isinstance(found, dict) else {}


# -- markdown ----------------------------------------------------------------------------


def as_markdown(matrix: Matrix, *, now: float) -> str:
    runs = matrix.runs
    out = ["# ILLiad network paths: the whole installation", "",
           f"Report made {_utc(now)} from {len(runs)} check run(s):", ""]
    for r in runs:
        out.append(f"- **{markdown(r.label)}**: {markdown_code(r.file)}"
                   + (f", checked {markdown(r.checked_at)}" if r.checked_at else ""))
    failures = matrix.failures()
    out += ["", f"**{len(failures)} failing path(s).** OK: as expected; FAIL: not as expected; ?: unknown "
                "(the exporter could not tell); -: the path does not start there.", ""]
    out.append("| site | path | need | " + " | ".join(markdown(r.label) for r in runs) + " |")
    out.append("| --- | --- | --- |" + " --- |" * len(runs))
    for site, path in matrix.rows:
        info = matrix.info(site, path)
        need = "required" if info.get("required") else "optional"
        cells = [_CELL_TEXT[state(matrix.cells.get((site, path, r.label)))] for r in runs]
        out.append(f"| {markdown(site)} | {markdown(path)} | {need} | " + " | ".join(cells) + " |")
    if failures:
        out += ["", "## What failed, what it breaks, and the rule to ask for", ""]
    for run, entry in failures:
        e = _explanation(entry)
        need = "required" if entry.get("required") else "optional"
        title = f": {entry['title']}" if entry.get("title") else ""
        heading = f"{entry['path']} ({need}) from {run.label}, site {entry['site']}{title}"
        out += [f"### {markdown(heading)}", ""]
        out += [f"**Impact:** {markdown(e.get('impact') or entry.get('impact') or '(none recorded)')}", ""]
        for d in e.get("diagnosis", []):
            out.append(f"- **{markdown(d['reason'])}** {markdown_code(d['target'])}: {markdown(d['text'])}")
        if not e.get("diagnosis") and entry.get("summary"):
            out.append(f"- {markdown(entry['summary'])}")
        out.append("")
        for rule in e.get("rules", []):
            out += ["Rule for the network team:", "", markdown_fence(rule["network"]), ""]
            if rule.get("powershell"):
                out += [f"Windows Defender Firewall, on {markdown(rule['windows_host'])} (PowerShell as administrator):",
                        "", markdown_fence(rule["powershell"], "powershell"), ""]
        if e.get("rule_note"):
            out += [markdown(e["rule_note"]), ""]
    return "\n".join(out).rstrip() + "\n"


# -- HTML --------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Arial,sans-serif;margin:0;color:#1f2328;background:#fff}
header{padding:12px 20px;background:#24292f;color:#fff}
header h1{font-size:20px;margin:0}
header p{margin:4px 0 0;color:#d0d7de}
main{padding:8px 20px 24px;max-width:80em}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.banner.ok{background:#dafbe1;color:#116329;border:1px solid #4ac26b}
.banner.bad{background:#ffebe9;color:#82071e;border:1px solid #ff8182}
h2{font-size:17px;margin:22px 0 6px}
h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;margin:6px 0 10px}
th,td{border:1px solid #d0d7de;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
.state{font-weight:700;white-space:nowrap;text-align:center}
.met{background:#2da44e;color:#fff}
.failed{background:#cf222e;color:#fff}
.unknown{background:#d4a72c;color:#fff}
.none{color:#8c959f}
.muted{color:#57606a}
.impact{margin:4px 0}
.diagnosis{margin:4px 0 4px 1em}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;white-space:pre-wrap;
overflow-wrap:anywhere;font-size:13px;margin:4px 0}
details{margin:6px 0}
summary{cursor:pointer;color:#0969da}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def explanation_html(entry: Mapping[str, Any], *, open_rules: bool = False) -> str:
    """Impact, diagnosis and (in a <details>) the rules of one failing path entry; shared
    with the status page so both say it alike."""
    e = _explanation(entry)
    parts = [f'<p class="impact"><b>Impact:</b> {_e(e.get("impact") or entry.get("impact") or "(none recorded)")}</p>']
    for d in e.get("diagnosis", []):
        parts.append(f'<p class="diagnosis" data-reason="{_e(d["reason"])}" data-target="{_e(d["target"])}">'
                     f'<b>{_e(d["reason"])}</b> <code>{_e(d["target"])}</code>: {_e(d["text"])}</p>')
    rules = e.get("rules", [])
    if rules:
        body = []
        for rule in rules:
            body.append(f'<p>For the network team:</p><pre class="rule-network">{_e(rule["network"])}</pre>')
            if rule.get("powershell"):
                body.append(f"<p>Windows Defender Firewall on <b>{_e(rule['windows_host'])}</b> "
                            f'(PowerShell as administrator):</p><pre class="rule-powershell">{_e(rule["powershell"])}</pre>')
        word = "rule" if len(rules) == 1 else f"{len(rules)} rules"
        parts.append(f'<details class="rules"{" open" if open_rules else ""}><summary>The {word} to ask for'
                     f'</summary>{"".join(body)}</details>')
    if e.get("rule_note"):
        parts.append(f'<p class="muted">{_e(e["rule_note"])}</p>')
    return "".join(parts)


def as_html(matrix: Matrix, *, now: float) -> str:
    runs = matrix.runs
    failures = matrix.failures()
    banner = (f'<div class="banner bad" id="summary" data-failing="{len(failures)}">{len(failures)} path(s) '
              "from some vantage are NOT as expected.</div>" if failures else
              '<div class="banner ok" id="summary" data-failing="0">Every path from every vantage is as '
              "expected.</div>")
    sources = "".join(f"<li><b>{_e(r.label)}</b>: <code>{_e(r.file)}</code>"
                      + (f' <span class="muted">checked {_e(r.checked_at)}</span>' if r.checked_at else "") + "</li>"
                      for r in runs)
    head = "".join(f"<th>{_e(r.label)}</th>" for r in runs)
    body = []
    for site, path in matrix.rows:
        info = matrix.info(site, path)
        cells = []
        for r in runs:
            word = state(matrix.cells.get((site, path, r.label)))
            cells.append(f'<td class="state {word or "none"}" data-site="{_e(site)}" data-path="{_e(path)}" '
                         f'data-vantage="{_e(r.label)}" data-state="{word}">{_CELL_TEXT[word]}</td>')
        need = "required" if info.get("required") else '<span class="muted">optional</span>'
        title = f'<br><span class="muted">{_e(info["title"])}</span>' if info.get("title") else ""
        body.append(f"<tr><td>{_e(site)}</td><td><b>{_e(path)}</b>{title}</td><td>{need}</td>{''.join(cells)}</tr>")
    matrix_html = (f'<table id="matrix"><thead><tr><th>site</th><th>path</th><th>need</th>{head}</tr></thead>'
                   f"<tbody>{''.join(body)}</tbody></table>")
    sections = []
    for run, entry in failures:
        need = "required" if entry.get("required") else "optional"
        sections.append(
            f'<section class="failure" data-site="{_e(entry["site"])}" data-path="{_e(entry["path"])}" '
            f'data-vantage="{_e(run.label)}"><h3>{_e(entry["path"])} ({need}) from {_e(run.label)}, site '
            f'{_e(entry["site"])}{_e(": " + entry["title"] if entry.get("title") else "")}</h3>'
            f"{explanation_html(entry, open_rules=True)}</section>")
    explanations = f"<h2>What failed, what it breaks, and the rule to ask for</h2>{''.join(sections)}" if sections else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ILLiad network paths: the whole installation</title><style>{_CSS}</style></head><body>"
        "<header><h1>ILLiad network paths: the whole installation</h1>"
        f"<p>Report made {_e(_utc(now))} from {len(runs)} check run(s)</p></header>"
        f"<main>{banner}<ul>{sources}</ul>"
        '<p class="muted">OK: as expected. FAIL: not as expected. ?: unknown (the exporter could not tell). '
        "-: the path does not start at that vantage.</p>"
        f"{matrix_html}{explanations}</main></body></html>"
    )


def _utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
