"""The bundled alert rules, their promtool unit tests, the runbooks they link to, and the
example Alertmanager config, checked with the real promtool and amtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .peers import need_binary

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
RULE_TESTS = sorted((ALERTS / "tests").glob("*.test.yml"))
ALERTMANAGER_EXAMPLE = ALERTS / "alertmanager.example.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/illiad-port-exporter/illiad-port-exporter/blob/main/docs/runbooks.md#"
SEVERITIES = {"critical", "warning", "info"}
# Groups whose alerts are about one path: their description names site, vantage, path, host:port.
PATH_GROUPS = {"illiad-ports.paths", "illiad-ports.tls"}


def alert_rules() -> list[tuple[str, dict]]:
    """(group name, rule) for every alerting rule in the bundled rule files."""
    return [
        (group["name"], rule)
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_rule_files_exist_and_hold_alerts_and_recording_rules():
    names = {p.name for p in RULE_FILES}
    assert names == {"illiad-alerts.rules.yml", "illiad-recording.rules.yml"}
    assert len(alert_rules()) >= 15
    assert RULE_TESTS, "no promtool unit tests under alerts/tests/"


def test_promtool_check_rules_accepts_every_rule_file():
    promtool = need_binary("promtool", "prometheus")
    done = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_FILES)


def test_promtool_unit_tests_pass():
    """Every case in alerts/tests: each alert fires after its for:, and a shorter flap is quiet."""
    promtool = need_binary("promtool", "prometheus")
    done = run([promtool, "test", "rules", *map(str, RULE_TESTS)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "FAILED" not in done.stdout


def _test_cases() -> list[dict]:
    return [case for path in RULE_TESTS for test in yaml.safe_load(path.read_text())["tests"]
            for case in test.get("alert_rule_test", [])]


def test_every_alert_and_severity_has_a_firing_case_and_a_quiet_case():
    """No alert ships untested: each (alert, severity) is expected to fire in some case, and
    each alert is expected to stay silent in another (its flap or not-yet-for: case)."""
    cases = _test_cases()
    firing = {(c["alertname"], a["exp_labels"]["severity"]) for c in cases for a in c.get("exp_alerts") or []}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    wanted = {(rule["alert"], rule["labels"]["severity"]) for _, rule in alert_rules()}
    assert wanted - firing == set(), "alerts never expected to fire in alerts/tests"
    assert {name for name, _ in wanted} - quiet == set(), "alerts never expected to stay silent"
    assert {name for name, _ in firing} <= {name for name, _ in wanted}, "tests name alerts that do not exist"


@pytest.mark.parametrize("group,rule", alert_rules(), ids=lambda x: x if isinstance(x, str) else x["alert"])
def test_each_alert_is_named_labelled_and_annotated_for_an_operator(group, rule):
    name = rule["alert"]
    assert re.fullmatch(r"Illiad(?:[A-Z][a-z0-9]*)+", name), name
    assert rule["labels"]["severity"] in SEVERITIES
    notes = rule["annotations"]
    assert set(notes) == {"summary", "description", "runbook_url"}
    assert notes["summary"][0].isupper() and notes["summary"].endswith(".") and "{{" not in notes["summary"]
    description = notes["description"]
    if group in PATH_GROUPS:
        for label in ("site", "vantage", "host"):
            assert "$labels." + label in description, (name, label)
        if name != "IlliadHostUnreachable":  # about a host, all its ports at once
            assert "$labels.path" in description and "{{ $labels.host }}:{{ $labels.port }}" in description
    elif "absent(" not in rule["expr"]:
        assert "$labels.instance" in description and "$labels.job" in description
    assert notes["runbook_url"] == RUNBOOK_BASE + name.lower()
    assert "for" in rule, f"{name} has no for: a single failed probe would notify"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {
        re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in markdown.splitlines() if line.startswith("#")
    }


def test_every_runbook_link_lands_on_a_section_of_the_runbooks():
    anchors = _anchors(RUNBOOKS.read_text())
    for _, rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"docs/runbooks.md has no section for {rule['alert']}"
    sections = {a for a in anchors if a.startswith("illiad")}
    assert sections == {rule["alert"].lower() for _, rule in alert_rules()}, "a runbook section with no alert"


def test_the_rules_use_only_metrics_the_exporter_exposes():
    """A typo in a metric name makes an alert silently never fire."""
    source = "".join(p.read_text() for p in (ROOT / "exporter").glob("*.py"))
    recorded = {rule["record"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
                for rule in group["rules"] if "record" in rule}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                text = rule["expr"] + "".join(rule.get("annotations", {}).values())
                for metric in set(re.findall(r"(?<![:\w])illiad_\w+(?![\w:])", text)):
                    assert f'"{metric}"' in source, f"{metric} (in {rule.get('alert') or rule['record']}) is not exposed"
                for name in set(re.findall(r"\b\w+:illiad_\w+:\w+\b", text)):
                    assert name in recorded, f"{name} is not a recording rule"


def test_paths_that_must_stay_closed_alert_on_the_expectation_not_on_up():
    """A closed path is up 0 with expectation met 1: an `up` alert would fire on every one."""
    for _, rule in alert_rules():
        if "illiad_port_up" in rule["expr"]:
            for selector in re.findall(r"illiad_port_up\{([^}]*)\}", rule["expr"]):
                assert 'expect="open"' in selector, (rule["alert"], selector)
    closed = [rule for _, rule in alert_rules() if 'expect="closed"' in rule["expr"]]
    assert [r["alert"] for r in closed] == ["IlliadClosedPathOpen"]
    assert "illiad_port_expectation_met" in closed[0]["expr"]


def test_amtool_accepts_the_example_alertmanager_config():
    amtool = need_binary("amtool", "prometheus-alertmanager")
    done = run([amtool, "check-config", str(ALERTMANAGER_EXAMPLE)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "3 inhibit rules" in done.stdout


@pytest.mark.parametrize("severity,receiver", [("critical", "illiad-pager"), ("warning", "illiad-tickets"),
                                               ("info", "illiad-chat")])
def test_the_example_routes_critical_to_the_pager_and_warnings_to_a_ticket(severity, receiver):
    amtool = need_binary("amtool", "prometheus-alertmanager")
    for name in sorted({rule["alert"] for _, rule in alert_rules() if rule["labels"]["severity"] == severity}):
        done = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_EXAMPLE}",
                    f"alertname={name}", f"severity={severity}", "site=main-library"])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == receiver, (name, done.stdout)


def test_the_example_groups_by_site_and_inhibits_path_alerts_under_a_dead_exporter_or_host():
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    illiad_route = next(r for r in config["route"]["routes"] if 'alertname=~"Illiad.+"' in r["matchers"])
    assert illiad_route["group_by"] == ["site"]
    inhibit = {tuple(rule["source_matchers"]): rule for rule in config["inhibit_rules"]}
    exporter_down = inhibit[('alertname="IlliadExporterDown"',)]
    assert exporter_down["equal"] == ["job", "instance"]
    host_down = inhibit[('alertname="IlliadHostUnreachable"',)]
    held_back = re.search(r'alertname=~"([^"]+)"', host_down["target_matchers"][0]).group(1).split("|")  # type: ignore[union-attr]
    per_port = {rule["alert"] for group, rule in alert_rules()
                if group == "illiad-ports.paths" and "expect=\"open\"" in rule["expr"] and "by (" not in rule["expr"]}
    per_port |= {"IlliadPathLatencyHigh"}
    assert set(held_back) == per_port
    assert "host" in host_down["equal"] and "vantage" in host_down["equal"]
