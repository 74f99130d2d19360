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
import sys
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
    """Read every file; all problems at once, one line each, naming its file."""
    runs: list[Run] = []
    problems: list[str] = []
    for file in files:
        data, problem = _read_json(file)
        if problem is None:
            problem = _run_problem(data)
        if problem is not None:
            problems.append(f"{file}{problem}")
            continue
        runs.append(Run(data["vantage"], data["vantage"], file, data.get("checked_at") or "", tuple(data["paths"])))
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


def _read_json(file: str) -> tuple[Any, str | None]:
    """The file's JSON, or what is wrong (after the file name: ": ..." or ":line:col: ...")."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        return None, f": cannot read: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        return None, f": not JSON: not UTF-8 text (byte {exc.start})"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f":{exc.lineno}:{exc.colno}: not JSON: {exc.msg}"
    except RecursionError:  # Python's parser recurses once per level of nesting
        return None, ": not JSON this report reads: nested too deeply for Python's JSON parser (it stops near " \
                     f"{sys.getrecursionlimit():,} levels)"
    except ValueError as exc:  # a number longer than Python converts (4,300 digits)
        return None, f": not JSON this report reads: {str(exc).split(';')[0]}"


_NOT_CHECK_OUTPUT = ": not the output of 'illiad-exporter check --output json' (needs \"vantage\" and \"paths\")"
# What the report reads of a path entry and of its explanation, with the JSON types each may
# have (as check writes them) and whether it must be there: anything else is refused with
# where it is, never rendered, never a traceback.
_TEXT, _TEXT_OR_NULL, _FLAG = (str,), (str, type(None)), (bool, type(None))
Fields = dict[str, tuple[tuple[type, ...], bool]]
_ENTRY: Fields = {"site": (_TEXT, True), "path": (_TEXT, True), "title": (_TEXT_OR_NULL, False),
                  "impact": (_TEXT_OR_NULL, False), "summary": (_TEXT_OR_NULL, False), "required": (_FLAG, False),
                  "met": (_FLAG, False), "explanation": ((dict, type(None)), False)}
_EXPLANATION: Fields = {"impact": (_TEXT_OR_NULL, False), "rule_note": (_TEXT_OR_NULL, False),
                        "diagnosis": ((list,), False), "rules": ((list,), False)}
_LISTS: dict[str, Fields] = {
    "diagnosis": {"reason": (_TEXT, True), "target": (_TEXT, True), "text": (_TEXT, True)},
    "rules": {"network": (_TEXT, True), "powershell": (_TEXT_OR_NULL, False), "windows_host": (_TEXT_OR_NULL, False)},
}
_JSON_TYPE = {str: "a string", bool: "true or false", dict: "an object", list: "a list", type(None): "null"}


def _run_problem(data: Any) -> str | None:
    """What makes ``data`` unreadable as a check run (after the file name), or None."""
    if not isinstance(data, dict) or not isinstance(data.get("vantage"), str) \
            or not isinstance(data.get("paths"), list):
        return _NOT_CHECK_OUTPUT
    if not isinstance(data.get("checked_at"), _TEXT_OR_NULL):
        return ": checked_at: not a string"
    for i, entry in enumerate(data["paths"]):
        if not isinstance(entry, dict) or not {"site", "path"} <= set(entry):
            return f": paths[{i}] has no site and path"
        problem = _fields_problem(entry, _ENTRY, f"paths[{i}]")
        if problem is None and entry.get("explanation"):
            problem = _explanation_problem(entry["explanation"], f"paths[{i}].explanation")
        if problem is not None:
            return problem
    return None


def _explanation_problem(explanation: Mapping[str, Any], where: str) -> str | None:
    problem = _fields_problem(explanation, _EXPLANATION, where)
    for key, fields in _LISTS.items():
        for i, item in enumerate(explanation.get(key, ()) if problem is None else ()):
            at = f"{where}.{key}[{i}]"
            problem = _fields_problem(item, fields, at) if isinstance(item, dict) else f": {at}: not an object"
            if problem is not None:
                return problem
    return problem


def _fields_problem(found: Mapping[str, Any], fields: Fields, where: str) -> str | None:
    for key, (types, required) in fields.items():
        if key not in found:
            if required:
                return f": {where}: has no {key}"
        elif not isinstance(found[key], types):
            return f": {where}.{key}: not {' or '.join(_JSON_TYPE[t] for t in types)}"
    return None


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

# The page frame (font, dark header, main column) that availability's page shares
PAGE_FRAME_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Arial,sans-serif;margin:0;color:#1f2328;background:#fff}
header{padding:12px 20px;background:#24292f;color:#fff}
header h1{font-size:20px;margin:0}
header p{margin:4px 0 0;color:#d0d7de}
main{padding:8px 20px 24px;max-width:80em}"""

_CSS = PAGE_FRAME_CSS + """
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
