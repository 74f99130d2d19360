"""The Grafana dashboard's structure: importable into any Grafana with any Prometheus data
source, filtered by site and vantage, and showing the vendor's checklist by the path verdict.
Its queries run against a real Prometheus in test_e2e_alerting (every query returns data, the
checklist cells, the failing lists and the targets table hold what the paths' state says)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .peers import missing, need_binary

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "illiad-ports.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def board() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def datasource_refs(node: Any) -> Iterator[Any]:
    """Every value of a "datasource" key anywhere in the JSON."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def test_the_dashboard_has_a_stable_uid_title_and_tags():
    dashboard = board()
    assert dashboard["uid"] == "illiad-ports"
    assert dashboard["title"] == "ILLiad network paths"
    assert {"illiad", "illiad-port-exporter"} <= set(dashboard["tags"])
    assert "id" not in dashboard or dashboard["id"] is None, "an id ties the JSON to one Grafana's database"


def test_the_variables_are_a_prometheus_datasource_then_site_then_vantage():
    variables = {v["name"]: v for v in board()["templating"]["list"]}
    assert list(variables) == ["datasource", "site", "vantage"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("site", "vantage"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"] == DATASOURCE
        assert v["multi"] and v["includeAll"] and v["allValue"] == ".*"
        assert v["query"]["query"].startswith("label_values(illiad_path_info")
    assert 'site=~"$site"' in variables["vantage"]["query"]["query"]


def test_every_panel_and_query_uses_the_datasource_variable_and_no_fixed_uid():
    dashboard = board()
    for panel in panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for ref in datasource_refs(dashboard):
        assert ref == DATASOURCE, f"a fixed data source: {ref}"


# The exporter-health panels keep a target unless it is known to serve only other vantages or
# sites (a dead exporter says nothing of either and must stay listed).
EXPORTER_FILTER = re.compile(
    r'unless on \(job, instance\) \(\s*illiad_exporter_vantage_info\{vantage!~"\$vantage"\}\s*or\s*'
    r'\(count by \(job, instance\) \(illiad_path_info\) unless on \(job, instance\) '
    r'illiad_path_info\{site=~"\$site", vantage=~"\$vantage"\}\)\s*\)')


def test_path_queries_follow_the_site_and_vantage_variables():
    """Every selector of a path series (and of ALERTS) filters by both variables; the only bare
    one is inside the exporter filter."""
    checked = 0
    for panel in panels(board()["panels"]):
        for target in panel.get("targets", []):
            expr = EXPORTER_FILTER.sub("", target["expr"])
            for name, labels in re.findall(r"(illiad_(?:port|probe|path|tls)[\w:]*|ALERTS)(\{[^}]*\})?", expr):
                assert 'site=~"$site"' in labels and 'vantage=~"$vantage"' in labels, (panel["title"], name)
                checked += 1
    assert checked >= 25


def test_every_panel_honours_site_and_vantage():
    """Each query names both variables, but the extra columns of the Exporters table, whose
    rows are kept only where its first (filtered) query has a value."""
    for panel in panels(board()["panels"]):
        kept_by_first = any(t["id"] == "filterByValue" for t in panel.get("transformations", []))
        for n, target in enumerate(panel.get("targets", [])):
            if kept_by_first and n > 0:
                continue
            assert "$site" in target["expr"] and "$vantage" in target["expr"], (panel["title"], target["refId"])


CHECKLIST = [("SQL Server", "sql"), ("Odyssey in", "odyssey"), ("Odyssey out", "odyssey_outbound"),
             ("OCLC web services", "oclc_webservices"), ("Vendor update", "atlas_update"),
             ("Article Exchange", "article_exchange")]


def test_the_top_row_is_the_checklist_one_cell_per_vantage_coloured_by_the_path_verdict():
    top = sorted((p for p in board()["panels"] if p["gridPos"]["y"] <= 1), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    assert top[0]["type"] == "row"
    cells = top[1:]
    assert [(p["title"], p["type"]) for p in cells] == [(title, "stat") for title, _ in CHECKLIST]
    assert sum(p["gridPos"]["w"] for p in cells) == 24
    for panel, (_, path) in zip(cells, CHECKLIST):
        (target,) = panel["targets"]
        assert target["legendFormat"] == "{{vantage}}" and target.get("instant")
        expr = target["expr"]
        assert f'path=~"{path}"' in expr and "illiad_path_expectation_met" in expr
        assert expr.count("min by (vantage)") == 2, "one cell per vantage: the worst of the selected sites"
        assert 'required="true"' in expr and '2 + min by (vantage)' in expr and 'required="false"' in expr
        mapping = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
        assert {value: (m["text"], m["color"]) for value, m in mapping.items()} == {
            "1": ("OK", "green"), "0": ("FAIL", "red"), "3": ("OK (optional)", "green"),
            "2": ("FAIL (optional)", "orange")}
        assert panel["options"]["colorMode"] == "background"


def test_paths_are_judged_by_the_verdict_so_a_path_closed_as_expected_never_shows_failing():
    """illiad_port_up is nowhere (a closed path is up 0); the lists of failures are the path
    verdict or targets whose expectation is not met; reasons are only read at 1."""
    text = DASHBOARD.read_text()
    assert "illiad_port_up" not in text
    exprs = {(p["title"], t["refId"]): t["expr"] for p in panels(board()["panels"]) for t in p.get("targets", [])}
    assert exprs["Paths failing now", "A"].startswith("illiad_path_expectation_met{") and exprs["Paths failing now", "A"].endswith("== 0")
    targets_failing = exprs["Targets not as expected, with the reason", "A"]
    assert "illiad_probe_failure_reason" in targets_failing and "illiad_port_expectation_met" in targets_failing
    assert re.search(r"illiad_port_expectation_met\{[^}]*\} == 0\)", targets_failing)
    for key, expr in exprs.items():
        for match in re.finditer(r"illiad_probe_failure_reason\{[^}]*\}", expr):
            assert expr[match.end():].lstrip().startswith("== 1"), key
    for title in ("Path matrix", "Path state over time", "Paths not as expected", "Paths probed"):
        assert all("illiad_path_expectation_met" in e for (t, _), e in exprs.items() if t == title), title


def test_required_and_optional_paths_are_told_apart():
    by_title = {p["title"]: p for p in panels(board()["panels"])}
    matrix = by_title["Path matrix"]
    assert 'required="true"' in matrix["targets"][0]["expr"] and 'required="false"' in matrix["targets"][0]["expr"]
    texts = {m["text"] for m in matrix["fieldConfig"]["defaults"]["mappings"][0]["options"].values()}
    assert texts == {"OK", "FAIL", "OK (optional)", "FAIL (optional)"}
    assert [t["legendFormat"] for t in by_title["Paths not as expected"]["targets"]] == ["required", "optional"]
    assert "required" in by_title["Paths failing now"]["transformations"][0]["options"]["indexByName"]


def test_the_targets_of_a_path_are_shown_one_row_per_host_and_port():
    """1433 and 1344, two RDP hosts, each Odyssey partner: never merged into one cell."""
    by_title = {p["title"]: p for p in panels(board()["panels"])}
    for title in ("Targets", "Targets not as expected, with the reason"):
        for target in by_title[title]["targets"]:
            assert " by (" not in target["expr"], "no aggregation that drops host or port"
        order = by_title[title]["transformations"][-1]["options"]["indexByName"]
        assert order["host"] < order["port"] < 6


def test_panels_have_unique_ids_and_sit_on_the_grid_without_overlapping():
    seen: set[int] = set()
    cells: set[tuple[int, int]] = set()
    for panel in panels(board()["panels"]):
        assert panel["id"] not in seen
        seen.add(panel["id"])
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_the_dashboard_shows_what_the_issue_asks_for():
    """Checklist, path matrix, targets, latency, certificate expiry, failure reasons, alerts,
    exporter health."""
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in panels(board()["panels"])}
    assert "illiad_path_expectation_met" in exprs["Path matrix"] and "vantage" in exprs["Path matrix"]
    assert "illiad_port_expectation_met" in exprs["Targets"]
    assert "illiad_port_latency_seconds" in exprs["Connect latency"]
    assert "illiad_tls_cert_expiry" in exprs["Certificate expiry"]
    assert "illiad_probe_failure_reason" in exprs["Failure reasons"]
    assert "ALERTS" in exprs["Illiad alerts firing"]
    assert "job_instance:illiad_exporter:up" in exprs["Exporters"]
    assert "illiad_exporter_planned_targets" in exprs["Exporters"]


def test_the_availability_row_shows_the_range_7_and_30_days_and_the_outages():
    """Per site and required path: availability over the dashboard's range (raw samples), over 7
    and 30 days (the hourly records, summed: one cheap query each), outages and time down in
    the range, and the outages as bars with their start, end and length."""
    found = {p["title"]: p for p in panels(board()["panels"])}
    table = found["Availability of the required paths"]
    exprs = {t["refId"]: t["expr"] for t in table["targets"]}
    assert all('required="true"' in e and 'site=~"$site"' in e for e in exprs.values())
    assert "[$__range]" in exprs["A"] and "illiad_path_expectation_met" in exprs["A"]
    for ref, days in (("B", 7), ("C", 30)):
        assert f"illiad_path:illiad_path_expectation_met:sum_over_time_1h{{" in exprs[ref] and f"[{days}d]" in exprs[ref]
        assert "illiad_path:illiad_path_expectation_met:count_over_time_1h{" in exprs[ref]
    assert "resets(" in exprs["D"] and "$__range_s" in exprs["E"]
    names = table["transformations"][1]["options"]["renameByName"]
    assert list(names.values()) == ["in the range", "last 7 days", "last 30 days", "outages in the range",
                                    "down in the range"]
    timeline = found["Outages of the required paths"]
    assert timeline["type"] == "state-timeline" and 'required="true"' in timeline["targets"][0]["expr"]


def _differences(given: Any, known: Any, where: str = "") -> Iterator[str]:
    """Where ``known`` (the dashboard as Grafana's schema reads it back) lacks a key of
    ``given`` or holds another value."""
    if isinstance(given, dict):
        if not isinstance(known, dict):
            yield f"{where or '.'}: not an object to Grafana"
            return
        for key, value in given.items():
            if key not in known:
                yield f"{where}.{key}: a field Grafana's schema does not know"
            else:
                yield from _differences(value, known[key], f"{where}.{key}")
    elif isinstance(given, list):
        if not isinstance(known, list) or len(given) != len(known):
            yield f"{where}: not read back as the same list"
            return
        for index, (a, b) in enumerate(zip(given, known)):
            yield from _differences(a, b, f"{where}[{index}]")
    elif given != known:
        yield f"{where}: {given!r} read back as {known!r}"


def _grafana_schema() -> Any:
    try:
        from grafana_foundation_sdk.cog import plugins
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
        from grafana_foundation_sdk.models.dashboard import Dashboard
    except ImportError:
        missing("grafana-foundation-sdk (the test extra) is not installed")
    plugins.register_default_plugins()  # each panel type's options and each data source's query

    def read_back(dashboard: dict[str, Any]) -> Any:
        return json.loads(json.dumps(Dashboard.from_json(dashboard), cls=JSONEncoder))

    return read_back


def test_grafana_schema_knows_every_field_of_the_dashboard():
    """Grafana's published dashboard schema (grafana-foundation-sdk: models generated from
    Grafana's own kinds, with each panel plugin's options and field config and Prometheus'
    query) reads the dashboard back whole: a field Grafana does not know, anywhere, is lost in
    the reading and fails here, and so would a panel option of another panel type."""
    read_back = _grafana_schema()
    dashboard = board()
    assert list(_differences(dashboard, read_back(dashboard))) == []


def test_the_schema_check_finds_a_field_grafana_does_not_know():
    """The check above can fail: an unknown field at the top, in a panel, in a panel's options,
    in a query, in a field override, each is named by where it is."""
    read_back = _grafana_schema()
    table = next(i for i, p in enumerate(board()["panels"]) if p["type"] == "table")
    for place in ([], ["panels", table], ["panels", table, "options"], ["panels", table, "targets", 0],
                  ["panels", table, "fieldConfig", "defaults"]):
        dashboard = board()
        node: Any = dashboard
        for step in place:
            node = node[step]
        node["colour"] = "red"
        where = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in place)
        assert list(_differences(dashboard, read_back(dashboard))) == [
            f"{where}.colour: a field Grafana's schema does not know"]


def test_recorded_series_the_dashboard_uses_are_recorded_by_the_bundled_rules():
    recorded = {rule["record"] for path in (ROOT / "alerts").glob("*.rules.yml")
                for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "record" in rule}
    used = set(re.findall(r"\b\w+:\w+:\w+\b", DASHBOARD.read_text()))
    assert used and used <= recorded


# -- the queries in Prometheus' own engine (promtool), on a site's series ---------------------

def _series(metric: str, value: float = 1, **labels: str) -> dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{text}}}", "values": f"{value:g}x10"}


MAIN = {"job": "illiad-ports", "instance": "web:9968", "site": "main-library"}
LAW = {"job": "illiad-ports", "instance": "law:9968", "site": "law-library"}


def _path(base: dict[str, str], vantage: str, path: str, met: float, required: bool,
          targets: list[tuple[str, str, str, float, str | None]]) -> list[dict[str, str]]:
    """A path's verdict and its targets (host, port, expect, expectation met, active reason)."""
    out = [_series("illiad_path_expectation_met", met, **base, vantage=vantage, path=path,
                   required=str(required).lower())]
    for host, port, expect, target_met, reason in targets:
        labels = {**base, "vantage": vantage, "path": path, "host": host, "port": port, "expect": expect}
        out.append(_series("illiad_port_expectation_met", target_met, **labels))
        if reason:
            out.append(_series("illiad_probe_failure_reason", 1, **labels, reason=reason))
    return out


# main-library: SQL met on 1344 while 1433 is refused (require any); SQL Server and RDP closed
# from outside as they must be (refused, timeout); the update server down; Z39.50 (optional)
# down from a staff PC; one Odyssey partner down of two. law-library: SQL down.
SERIES = [
    *_path(MAIN, "web_server", "sql", 1, True, [("sql.main", "1433", "open", 0, "refused"),
                                                ("sql.main", "1344", "open", 1, None)]),
    *_path(MAIN, "external", "sql_from_external", 1, True, [("sql.main", "1433", "closed", 1, "refused"),
                                                            ("sql.main", "1344", "closed", 1, "timeout")]),
    *_path(MAIN, "external", "rdp", 1, False, [("web.main", "3389", "closed", 1, "timeout"),
                                               ("sql.main", "3389", "closed", 1, "timeout")]),
    *_path(MAIN, "web_server", "atlas_update", 0, True, [("update.atlas-sys.com", "443", "open", 0, "timeout")]),
    *_path(MAIN, "staff_client", "z3950", 0, False, [("opac.main", "210", "open", 0, "protocol")]),
    *_path(MAIN, "web_server", "odyssey_outbound", 1, True, [("ill.partner-a", "7968", "open", 0, "refused"),
                                                             ("ill.partner-b", "7968", "open", 1, None)]),
    *_path(LAW, "web_server", "sql", 0, True, [("sql.law", "1433", "open", 0, "refused")]),
]


def _query(title: str, ref: str = "A", *, site: str, vantage: str) -> str:
    (expr,) = [t["expr"] for p in panels(board()["panels"]) if p["title"] == title
               for t in p.get("targets", []) if t["refId"] == ref]
    return expr.replace("$site", site).replace("$vantage", vantage)


def _sample(labels: dict[str, str], value: float, name: str | None = None) -> dict[str, Any]:
    text = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"labels": f"{name or ''}{{{text}}}", "value": value}


@pytest.mark.peer("promtool")
def test_the_panels_in_prometheus_show_the_verdict_per_vantage_and_each_target_apart(tmp_path):
    """Prometheus' own engine (promtool) runs the panels' queries, main-library selected and
    every vantage (Grafana's All is `.*`): the checklist cells, the failing lists (a path closed
    as it must be, and 1433 while 1344 answers, are not failing paths), one row per target, and
    nothing of law-library."""
    promtool = need_binary("promtool", "prometheus")
    main = {"site": "main-library", "vantage": ".*"}

    def tgt(vantage: str, path: str, host: str, port: str, reason: str) -> dict[str, str]:
        return {**MAIN, "vantage": vantage, "path": path, "host": host, "port": port, "expect": "open",
                "reason": reason}

    cases = [
        (_query("SQL Server", **main), [_sample({"vantage": "web_server"}, 1)]),
        (_query("Vendor update", **main), [_sample({"vantage": "web_server"}, 0)]),
        (_query("Odyssey out", **main), [_sample({"vantage": "web_server"}, 1)]),
        (_query("SQL Server", site="law-library", vantage=".*"), [_sample({"vantage": "web_server"}, 0)]),
        (_query("SQL Server", site="main-library", vantage="staff_client"), []),
        (_query("Paths not as expected", "A", **main), [_sample({}, 1)]),
        (_query("Paths not as expected", "B", **main), [_sample({}, 1)]),
        (_query("Paths failing now", **main), [
            _sample({**MAIN, "vantage": "web_server", "path": "atlas_update", "required": "true"}, 0,
                    "illiad_path_expectation_met"),
            _sample({**MAIN, "vantage": "staff_client", "path": "z3950", "required": "false"}, 0,
                    "illiad_path_expectation_met")]),
        (_query("Targets not as expected, with the reason", **main), [
            _sample(tgt("web_server", "sql", "sql.main", "1433", "refused"), 1, "illiad_probe_failure_reason"),
            _sample(tgt("web_server", "atlas_update", "update.atlas-sys.com", "443", "timeout"), 1,
                    "illiad_probe_failure_reason"),
            _sample(tgt("staff_client", "z3950", "opac.main", "210", "protocol"), 1, "illiad_probe_failure_reason"),
            _sample(tgt("web_server", "odyssey_outbound", "ill.partner-a", "7968", "refused"), 1,
                    "illiad_probe_failure_reason")]),
        (_query("Targets not as expected, with the reason", "B", **main), []),
        (f'count by (path) ({_query("Targets", **main)})', [
            _sample({"path": "sql"}, 2), _sample({"path": "sql_from_external"}, 2), _sample({"path": "rdp"}, 2),
            _sample({"path": "atlas_update"}, 1), _sample({"path": "z3950"}, 1),
            _sample({"path": "odyssey_outbound"}, 2)]),
        (_query("Path matrix", **main).replace('"site_path", " / ", "site", "path")', '"x", "", "path")'), [
            _sample({"site": "main-library", "vantage": v, "path": p, "x": p}, value)
            for v, p, value in (("web_server", "sql", 1), ("external", "sql_from_external", 1), ("external", "rdp", 3),
                                ("web_server", "atlas_update", 0), ("staff_client", "z3950", 2),
                                ("web_server", "odyssey_outbound", 1))]),
    ]
    test = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": SERIES,
        "promql_expr_test": [{"expr": expr, "eval_time": "5m", "exp_samples": samples} for expr, samples in cases]}]}
    file = tmp_path / "dashboard.test.yml"
    file.write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(file)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.peer("prometheus")
def test_the_availability_row_in_prometheus_shows_shares_outages_and_time_down(tmp_path):
    """Prometheus' own engine (promtool), with the availability rules evaluated hourly, runs
    the Availability row's queries over a 2-hour range (Grafana's $__range) at 2h30s, a sample
    a minute: main-library's sql failed twice (10 and 5 minutes), law-library's sql failed from
    the first hour on, and an optional path is not in the row. The 7- and 30-day figures come
    from the hourly records and count the sample at 0 too."""
    promtool = need_binary("promtool", "prometheus")
    main = {**MAIN, "vantage": "web_server", "path": "sql", "required": "true"}
    law = {**LAW, "vantage": "web_server", "path": "sql", "required": "true"}
    optional = {**MAIN, "vantage": "staff_client", "path": "z3950", "required": "false"}

    def verdict(labels: dict[str, str], values: str) -> dict[str, str]:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"illiad_path_expectation_met{{{text}}}", "values": values}

    series = [verdict(main, "1x29 0x9 1x49 0x4 1x25"), verdict(law, "1x60 0x59"), verdict(optional, "0x120")]

    def query(ref: str) -> str:
        return (_query("Availability of the required paths", ref, site=".*", vantage=".*")
                .replace("$__range_s", "7200").replace("$__range", "7200s"))

    def rows(main_value: float, law_value: float) -> list[dict[str, Any]]:
        return [_sample({"site": "main-library", "vantage": "web_server", "path": "sql"}, main_value),
                _sample({"site": "law-library", "vantage": "web_server", "path": "sql"}, law_value)]

    timeline = next(p for p in panels(board()["panels"]) if p["title"] == "Outages of the required paths")
    cases = [
        (query("A"), rows(105 / 120, 60 / 120)),  # samples 1..120: 15 and 60 not met
        (query("B"), rows(106 / 121, 61 / 121)),  # the records at 0, 1h and 2h: samples 0..120
        (query("C"), rows(106 / 121, 61 / 121)),
        (query("D"), rows(2, 1)),  # outages begun in the range
        (query("E"), rows(900, 3600)),  # seconds down: 1/8 and 1/2 of 2 hours
        (timeline["targets"][0]["expr"].replace("$site", ".*").replace("$vantage", ".*"), rows(1, 0)),
    ]
    test = {"rule_files": [str(ROOT / "alerts" / "illiad-availability.rules.yml")], "evaluation_interval": "1h",
            "tests": [{"interval": "1m", "input_series": series,
                       "promql_expr_test": [{"expr": expr, "eval_time": "2h30s", "exp_samples": samples}
                                            for expr, samples in cases]}]}
    file = tmp_path / "availability.test.yml"
    file.write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(file)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
