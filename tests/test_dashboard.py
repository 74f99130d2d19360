"""The Grafana dashboard's structure: importable into any Grafana with any Prometheus data
source, filtered by site and vantage. Its queries run against a real Prometheus in
test_e2e_alerting."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

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


def test_path_queries_follow_the_site_and_vantage_variables():
    checked = 0
    for panel in panels(board()["panels"]):
        for target in panel.get("targets", []):
            for name, labels in re.findall(r"(illiad_(?:port|probe|path|tls)[\w:]*)(\{[^}]*\})?", target["expr"]):
                assert 'site=~"$site"' in labels and 'vantage=~"$vantage"' in labels, (panel["title"], name)
                checked += 1
    assert checked >= 10


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
    """Path matrix, latency, certificate expiry, failure reasons, alerts, exporter health."""
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in panels(board()["panels"])}
    matrix = exprs["Path matrix"]
    assert "illiad_port_up" in matrix and "illiad_port_expectation_met" in matrix and "vantage" in matrix
    assert "illiad_port_latency_seconds" in exprs["Connect latency"]
    assert "illiad_tls_cert_expiry" in exprs["Certificate expiry"]
    assert "illiad_probe_failure_reason" in exprs["Failure reasons"]
    assert "ALERTS" in exprs["Illiad alerts firing"]
    assert "job_instance:illiad_exporter:up" in exprs["Exporters"]


def test_recorded_series_the_dashboard_uses_are_recorded_by_the_bundled_rules():
    recorded = {rule["record"] for group in yaml.safe_load((ROOT / "alerts" / "illiad-recording.rules.yml").read_text())["groups"]
                for rule in group["rules"]}
    used = set(re.findall(r"\b\w+:\w+:\w+\b", DASHBOARD.read_text()))
    assert used and used <= recorded
