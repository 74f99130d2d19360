"""The bundled alert rules, their promtool unit tests, the runbooks they link to, and the
example Alertmanager config, checked with the real promtool and amtool."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from .peers import free_port, need_binary

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
RULE_TESTS = sorted((ALERTS / "tests").glob("*.test.yml"))
ALERTMANAGER_EXAMPLE = ALERTS / "alertmanager.example.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/illiad-port-exporter/illiad-port-exporter/blob/main/docs/runbooks.md#"
SEVERITIES = {"critical", "warning", "info"}
# Groups whose alerts are about paths: their description names site and vantage.
PATH_GROUPS = {"illiad-ports.paths", "illiad-ports.tls"}
# The path alerts judged by the path verdict, and the exporter-health group.
VERDICT = "illiad_path_expectation_met"
EXPORTER_GROUPS = ("illiad-ports.exporter", "illiad-ports.exporter-capacity")


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
    assert names == {"illiad-alerts.rules.yml", "illiad-recording.rules.yml", "illiad-availability.rules.yml"}
    assert len(alert_rules()) >= 15
    assert RULE_TESTS, "no promtool unit tests under alerts/tests/"


@pytest.mark.peer("promtool")
def test_promtool_check_rules_accepts_every_rule_file():
    promtool = need_binary("promtool", "prometheus")
    done = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_FILES)


@pytest.mark.peer("promtool")
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
        assert "$labels.site" in description and "$labels.vantage" in description, name
        if VERDICT in rule["expr"]:  # about a whole path: name it, and the targets that fail it
            assert "$labels.path" in description
            assert "{{ $r.Labels.host }}:{{ $r.Labels.port }}" in description or "Flapping" in name
        elif name == "IlliadHostUnreachable":  # about a host, all its ports at once
            assert "$labels.host" in description
        else:  # about one target
            assert "$labels.path" in description and "{{ $labels.host }}:{{ $labels.port }}" in description
    elif "absent(" not in rule["expr"]:
        assert "$labels.instance" in description and "$labels.job" in description
    assert notes["runbook_url"] == RUNBOOK_BASE + name.lower()
    assert "for" in rule, f"{name} has no for: a single failed probe would notify"
    # The exporter's own health is its owner's business, not the library's.
    assert (rule["labels"].get("owner") == "exporter") == (group in EXPORTER_GROUPS), name


def _rule_texts() -> list[tuple[str, str]]:
    """(alert name, the rule's source with the comment lines just above it) for every alert."""
    out = []
    for path in RULE_FILES:
        lines = path.read_text().splitlines()
        starts = [i for i, line in enumerate(lines) if line.strip().startswith("- alert:")]
        for n, start in enumerate(starts):
            above = start
            while above > 0 and lines[above - 1].strip().startswith("#"):
                above -= 1
            end = starts[n + 1] if n + 1 < len(starts) else len(lines)
            out.append((lines[start].split(":", 1)[1].strip(), "\n".join(lines[above:end])))
    return out


@pytest.mark.parametrize("name,text", _rule_texts(), ids=lambda x: x if "\n" not in x else "")
def test_each_for_says_what_it_protects_against(name, text):
    """A `for:` is a trade between a late page and a false one: its comment says which blips it rides out."""
    comments = " ".join(line.strip().lstrip("#").strip() for line in text.splitlines() if line.strip().startswith("#"))
    assert "protects against" in comments, f"{name}: no comment says what its for: protects against"


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


def test_paths_are_judged_by_the_path_verdict_never_by_a_target_being_down():
    """One verdict everywhere: a path alert reads illiad_path_expectation_met, split into the
    paths expected open and those that must stay closed by their targets' `expect`, never
    `illiad_port_up == 0` (a closed path is up 0; 1433 refused while 1344 answers is fine)."""
    for group, rule in alert_rules():
        assert not re.search(r"illiad_port_up(\{[^}]*\})?\s*==\s*0", rule["expr"]), rule["alert"]
        if VERDICT in rule["expr"]:
            selectors = re.findall(r"illiad_port_up\{([^}]*)\}", rule["expr"])
            assert len(selectors) == 1, rule["alert"]
            wanted = 'expect="closed"' if rule["alert"] == "IlliadClosedPathOpen" else 'expect="open"'
            assert selectors[0] == wanted, rule["alert"]
    judged = {rule["alert"] for group, rule in alert_rules() if VERDICT in rule["expr"]}
    assert judged == {rule["alert"] for group, rule in alert_rules()
                      if group == "illiad-ports.paths" and rule["alert"] not in
                      {"IlliadHostUnreachable", "IlliadPathLatencyHigh"}}


def test_reasons_are_read_only_where_they_are_1():
    """An exporter may expose only the active reason's series (0-valued ones absent): every
    rule selects reasons with `== 1`, so it means the same either way."""
    for path in RULE_FILES:
        text = path.read_text()
        for match in re.finditer(r"illiad_probe_failure_reason(\{[^}]*\})?", text):
            after = text[match.end():match.end() + 40]
            assert re.match(r"\s*(\)\s*)?==\s*1", after), f"{path.name}: {match.group(0)}{after!r}"


def _policy(path: str, vantage: str, required: bool, expect: str) -> tuple[str, str]:
    """The alert (and severity) a closed or opened path must raise: docs/runbooks.md's table."""
    if expect == "closed":
        return "IlliadClosedPathOpen", "critical"
    if not required:
        return "IlliadPathDown", "warning"
    if vantage == "staff_client":
        return "IlliadStaffClientPathDown", "warning"
    return {
        "sql": ("IlliadSqlPathDown", "critical"),
        "odyssey": ("IlliadOdysseyPathDown", "critical"),
        "odyssey_outbound": ("IlliadOdysseyPathDown", "critical"),
        "web_https": ("IlliadPublicWebDown", "critical"),
        "oclc_webservices": ("IlliadOclcPathDown", "critical"),
        "atlas_update": ("IlliadUpdatePathDown", "critical"),
        "article_exchange": ("IlliadArticleExchangePathDown", "warning"),
    }.get(path, ("IlliadPathDown", "warning"))


@pytest.mark.peer("promtool")
def test_every_catalog_path_from_every_vantage_raises_exactly_its_one_alert(tmp_path):
    """Every catalog path, from each role it starts at, required or not, failing its
    expectation for 20 minutes: promtool says exactly one path alert fires for it, the one
    the policy names, with its severity (no path falls between two alerts or into none)."""
    from exporter.catalog import CATALOG

    promtool = need_binary("promtool", "prometheus")
    series: list[dict[str, str]] = []
    expected: list[str] = []
    for entry in CATALOG:
        for role in entry.sources:
            for required in (True, False):
                labels = (f'job="illiad",instance="x:9968",site="s-{entry.id}-{required}",'
                          f'vantage="{role.value}",path="{entry.id}"')
                expect = entry.expect.value
                series.append({"series": f'{VERDICT}{{{labels},required="{str(required).lower()}"}}',
                               "values": "0x20"})
                series.append({"series": f'illiad_port_up{{{labels},host="h",port="1",expect="{expect}"}}',
                               "values": ("1x20" if expect == "closed" else "0x20")})
                name, severity = _policy(entry.id, role.value, required, expect)
                expected.append(f'ALERTS{{alertname="{name}",alertstate="firing",{labels},'
                                f'required="{str(required).lower()}",severity="{severity}"}}')
    assert len(expected) >= 2 * len(CATALOG)
    names = sorted({rule["alert"] for group, rule in alert_rules() if VERDICT in rule["expr"]} - {"IlliadPathFlapping"})
    test: dict[str, Any] = {
        "rule_files": [str(p) for p in RULE_FILES],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [{
                "expr": f'ALERTS{{alertstate="firing", alertname=~"{"|".join(names)}"}}',
                "eval_time": "20m",
                "exp_samples": [{"labels": labels, "value": 1} for labels in expected],
            }],
        }],
    }
    file = tmp_path / "policy.test.yml"
    file.write_text(yaml.safe_dump(test, sort_keys=False))
    done = run([promtool, "test", "rules", str(file)])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.peer("amtool")
def test_amtool_accepts_the_example_alertmanager_config():
    amtool = need_binary("amtool", "prometheus-alertmanager")
    done = run([amtool, "check-config", str(ALERTMANAGER_EXAMPLE)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "4 inhibit rules" in done.stdout


def _routed(*labels: str) -> str:
    amtool = need_binary("amtool", "prometheus-alertmanager")
    done = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_EXAMPLE}", *labels])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.peer("amtool")
@pytest.mark.parametrize("severity,receiver", [("critical", "illiad-pager"), ("warning", "illiad-tickets"),
                                               ("info", "illiad-chat")])
def test_the_example_routes_critical_to_the_pager_and_warnings_to_a_ticket(severity, receiver):
    names = sorted({rule["alert"] for group, rule in alert_rules()
                    if rule["labels"]["severity"] == severity and group not in EXPORTER_GROUPS})
    assert names
    for name in names:
        assert _routed(f"alertname={name}", f"severity={severity}", "site=main-library") == receiver, name


@pytest.mark.peer("amtool")
@pytest.mark.parametrize("severity,receiver", [("critical", "illiad-exporter-pager"),
                                               ("warning", "illiad-exporter-owner")])
def test_the_example_sends_the_exporters_own_health_to_its_owner_not_the_library(severity, receiver):
    names = sorted({rule["alert"] for group, rule in alert_rules()
                    if rule["labels"]["severity"] == severity and group in EXPORTER_GROUPS})
    assert names
    for name in names:
        assert _routed(f"alertname={name}", f"severity={severity}", "owner=exporter", "job=illiad-ports",
                       "instance=illiad-web:9968") == receiver, name


def _route(config: dict[str, Any], *matchers: str) -> dict[str, Any]:
    illiad = next(r for r in config["route"]["routes"] if 'alertname=~"Illiad.+"' in r["matchers"])
    route = illiad
    for matcher in matchers:
        route = {**route, **next(r for r in route["routes"] if matcher in r["matchers"])}
    return route


def test_a_page_never_waits_for_a_group_that_is_already_notifying():
    """A new critical alert while others of its site fire: in a group of its own ('...'),
    sent at once (group_wait 0s), so it reaches the pager within for: + two evaluations; tickets
    stay bundled by site."""
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    page = _route(config, 'severity="critical"')
    assert page["group_by"] == ["..."] and page["group_wait"] == "0s"
    assert _route(config)["group_by"] == ["site"]
    assert _route(config, 'severity="warning"')["group_by"] == ["site"]
    # The exporter's owner gets one page per kind of trouble, however many sites it serves.
    assert _route(config, 'owner="exporter"', 'severity="critical"')["group_by"] == ["alertname"]


def test_the_example_inhibits_alerts_under_a_dead_exporter_and_flapping_under_its_outage():
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    inhibit = {tuple(rule["source_matchers"]): rule for rule in config["inhibit_rules"]}
    exporter_down = inhibit[('alertname="IlliadExporterDown"',)]
    assert exporter_down["equal"] == ["job", "instance"]
    outage = next(rule for rule in config["inhibit_rules"] if rule["target_matchers"] == ['alertname="IlliadPathFlapping"'])
    sources = re.search(r'alertname=~"([^"]+)"', outage["source_matchers"][0]).group(1).split("|")  # type: ignore[union-attr]
    down = {rule["alert"] for group, rule in alert_rules()
            if VERDICT in rule["expr"] and rule["alert"] not in {"IlliadPathFlapping", "IlliadClosedPathOpen"}}
    assert set(sources) == down
    assert outage["equal"] == ["job", "instance", "site", "vantage", "path"]
    # Nothing holds a path alert back because of its host: IlliadHostUnreachable is a diagnosis.
    assert not any("IlliadHostUnreachable" in " ".join(rule["source_matchers"]) for rule in config["inhibit_rules"])


@pytest.mark.peer("promtool")
def test_the_quick_start_config_pages_for_sql_and_calls_no_host_unreachable(tmp_path):
    """The real exporter with examples/local.yml (every path on 127.0.0.1; its ports moved to
    free ones so nothing on this machine answers): every path is refused. Its /metrics, held
    for 15 minutes, through the rules in promtool: SQL pages, and the host is not called
    unreachable (it refuses, so it is there), so nothing could hold the page back."""
    promtool = need_binary("promtool", "prometheus")
    from prometheus_client.parser import text_string_to_metric_families

    from .exporter_process import exporter

    config = yaml.safe_load((ROOT / "examples" / "local.yml").read_text())
    (site,) = config["sites"]
    for override in site["paths"].values():
        override["port"] = free_port()
    quick_start = tmp_path / "local.yml"
    quick_start.write_text(yaml.safe_dump(config))
    peer, url = exporter(quick_start, tmp_path)
    with peer:
        with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
            text = response.read().decode()
    job = {"job": "illiad-ports", "instance": "127.0.0.1:9968"}
    series = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("illiad_port_", "illiad_path_", "illiad_probe_failure_reason")):
                labels = ",".join(f'{k}="{v}"' for k, v in {**job, **sample.labels}.items())
                series.append({"series": f"{sample.name}{{{labels}}}", "values": f"{sample.value:g}x15"})
    reasons = {s["series"] for s in series if s["series"].startswith("illiad_probe_failure_reason")
               and s["values"].startswith("1x")}
    assert reasons and all('reason="refused"' in r for r in reasons), reasons
    sql = {**job, "site": site["name"], "vantage": "web_server", "path": "sql", "required": "true"}
    test = {"rule_files": [str(p) for p in RULE_FILES], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{
            "expr": 'ALERTS{alertstate="firing", alertname=~"IlliadSqlPathDown|IlliadHostUnreachable"}',
            "eval_time": "15m",
            "exp_samples": [{"labels": "ALERTS{" + ",".join(f'{k}="{v}"' for k, v in {
                **sql, "alertname": "IlliadSqlPathDown", "alertstate": "firing", "severity": "critical"}.items()) + "}",
                "value": 1}]}]}]}
    file = tmp_path / "quick-start.test.yml"
    file.write_text(yaml.safe_dump(test, sort_keys=False))
    done = run([promtool, "test", "rules", str(file)])
    assert done.returncode == 0, done.stdout + done.stderr
