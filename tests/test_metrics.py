"""The exposition of a small, known set of outcomes, asserted line by line."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from illiad_exporter.catalog import Expect, Require
from illiad_exporter.metrics import ProbeCollector
from illiad_exporter.probers import ProbeResult, Reason
from illiad_exporter.probers.base import TlsFacts
from illiad_exporter.scrape import Outcome

from .probing import make_target


def with_label(labels: str, name: str, value: str) -> str:
    """Add a label to a rendered label set, in the sorted order the client library writes."""
    pairs = labels.split(",") + [f'{name}="{value}"']
    return ",".join(sorted(pairs, key=lambda pair: pair.split("=")[0]))


def exposition(outcomes, required=frozenset()) -> list[str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeCollector(outcomes, required=required))
    return [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("# HELP")]


def test_exposition_of_one_up_and_one_refused_path():
    sql = make_target("tcp", 1433, host="sql.lab", path_id="sql")
    up = ProbeResult(up=True, phases={"resolve": 0.002, "connect": 0.004, "tls": 0.01}, address="198.18.0.10",
                     port=1433, duration=0.02, tls=TlsFacts("TLSv1.3", 1800000000.0, True))
    up.add_info("sqlserver", version="16.0.1000", encryption="off")
    rdp = make_target("tcp", 3389, host="web.lab", path_id="rdp", expect=Expect.CLOSED, vantage="web_server")
    refused = ProbeResult(up=False, reason=Reason.REFUSED, phases={"resolve": 0.001, "connect": 0.0005},
                          duration=0.0016)
    lines = exposition([Outcome(sql, up, 0.0), Outcome(rdp, refused, 0.0)], required=frozenset({("lib", "sql")}))
    sql_l = 'expect="open",host="sql.lab",path="sql",port="1433",site="lib",vantage="web_server"'
    rdp_l = 'expect="closed",host="web.lab",path="rdp",port="3389",site="lib",vantage="web_server"'
    assert lines == [
        "# TYPE illiad_port_up gauge",
        f"illiad_port_up{{{sql_l}}} 1.0",
        f"illiad_port_up{{{rdp_l}}} 0.0",
        "# TYPE illiad_port_latency_seconds gauge",
        f"illiad_port_latency_seconds{{{sql_l}}} 0.004",
        "# TYPE illiad_probe_duration_seconds gauge",
        f"illiad_probe_duration_seconds{{{sql_l}}} 0.02",
        f"illiad_probe_duration_seconds{{{rdp_l}}} 0.0016",
        "# TYPE illiad_probe_phase_duration_seconds gauge",
        f'illiad_probe_phase_duration_seconds{{{with_label(sql_l, "phase", "resolve")}}} 0.002',
        f'illiad_probe_phase_duration_seconds{{{with_label(sql_l, "phase", "connect")}}} 0.004',
        f'illiad_probe_phase_duration_seconds{{{with_label(sql_l, "phase", "tls")}}} 0.01',
        f'illiad_probe_phase_duration_seconds{{{with_label(rdp_l, "phase", "resolve")}}} 0.001',
        f'illiad_probe_phase_duration_seconds{{{with_label(rdp_l, "phase", "connect")}}} 0.0005',
        "# TYPE illiad_probe_failure_reason gauge",
        f'illiad_probe_failure_reason{{{with_label(rdp_l, "reason", "refused")}}} 1.0',  # only the active reason
        "# TYPE illiad_port_expectation_met gauge",
        f"illiad_port_expectation_met{{{sql_l}}} 1.0",
        f"illiad_port_expectation_met{{{rdp_l}}} 1.0",
        "# TYPE illiad_path_info gauge",
        f'illiad_path_info{{{with_label(with_label(sql_l, "prober", "tcp"), "required", "true")}}} 1.0',
        f'illiad_path_info{{{with_label(with_label(rdp_l, "prober", "tcp"), "required", "false")}}} 1.0',
        "# TYPE illiad_tls_cert_expiry_timestamp_seconds gauge",
        f"illiad_tls_cert_expiry_timestamp_seconds{{{sql_l}}} 1.8e+09",
        "# TYPE illiad_tls_info gauge",
        f'illiad_tls_info{{{with_label(with_label(sql_l, "version", "TLSv1.3"), "verified", "true")}}} 1.0',
        "# TYPE illiad_sqlserver_info gauge",
        f'illiad_sqlserver_info{{{with_label(with_label(sql_l, "encryption", "off"), "version", "16.0.1000")}}} 1.0',
        "# TYPE illiad_path_expectation_met gauge",
        'illiad_path_expectation_met{path="sql",required="true",site="lib",vantage="web_server"} 1.0',
        'illiad_path_expectation_met{path="rdp",required="false",site="lib",vantage="web_server"} 1.0',
    ]


def test_an_open_port_that_must_be_closed_fails_its_expectation():
    target = make_target("tcp", 1433, path_id="sql_from_external", expect=Expect.CLOSED, vantage="external")
    result = ProbeResult(up=True, phases={"connect": 0.001}, address="127.0.0.1", port=1433)
    lines = exposition([Outcome(target, result, 0.0)])
    assert [l for l in lines if l.startswith("illiad_port_expectation_met")] == [
        'illiad_port_expectation_met{expect="closed",host="127.0.0.1",path="sql_from_external",port="1433",'
        'site="lib",vantage="external"} 0.0'
    ]


def test_a_listener_that_fails_its_protocol_check_still_counts_as_open():
    target = make_target("tcp", 3389, path_id="rdp", expect=Expect.CLOSED, vantage="external")
    result = ProbeResult(up=False, reason=Reason.PROTOCOL, phases={"connect": 0.001}, address="127.0.0.1", port=3389)
    assert result.observed is Expect.OPEN
    lines = exposition([Outcome(target, result, 0.0)])
    assert any(l.startswith("illiad_port_expectation_met") and l.endswith(" 0.0") for l in lines)


def path_lines(outcomes, required=frozenset()) -> list[str]:
    return [l for l in exposition(outcomes, required) if l.startswith("illiad_path_expectation_met")]


def refused() -> ProbeResult:
    return ProbeResult(up=False, reason=Reason.REFUSED, phases={"connect": 0.0001})


def answered(port: int) -> ProbeResult:
    return ProbeResult(up=True, phases={"connect": 0.0001}, address="127.0.0.1", port=port)


def test_sql_on_1344_meets_a_require_any_path_although_1433_is_closed():
    outcomes = [
        Outcome(make_target("tds", 1433, path_id="sql", require=Require.ANY), refused(), 0.0),
        Outcome(make_target("tds", 1344, path_id="sql", require=Require.ANY), answered(1344), 0.0),
    ]
    assert path_lines(outcomes, frozenset({("lib", "sql")})) == [
        'illiad_path_expectation_met{path="sql",required="true",site="lib",vantage="web_server"} 1.0'
    ]
    # the per-target detail stays: 1433 is down
    assert [l for l in exposition(outcomes) if l.startswith("illiad_port_up")] == [
        'illiad_port_up{expect="open",host="127.0.0.1",path="sql",port="1433",site="lib",vantage="web_server"} 0.0',
        'illiad_port_up{expect="open",host="127.0.0.1",path="sql",port="1344",site="lib",vantage="web_server"} 1.0',
    ]


def test_one_partner_down_meets_require_any_and_every_partner_down_does_not():
    def partners(*results):
        return [Outcome(make_target("odyssey", 7968, host=f"partner{i}.lab", path_id="odyssey_outbound",
                                    require=Require.ANY), r, 0.0) for i, r in enumerate(results)]

    assert path_lines(partners(refused(), answered(7968))) == [
        'illiad_path_expectation_met{path="odyssey_outbound",required="false",site="lib",vantage="web_server"} 1.0'
    ]
    assert path_lines(partners(refused(), refused())) == [
        'illiad_path_expectation_met{path="odyssey_outbound",required="false",site="lib",vantage="web_server"} 0.0'
    ]


def test_require_all_fails_when_one_target_fails():
    outcomes = [
        Outcome(make_target("tcp", 3389, host="web.lab", path_id="remote"), answered(3389), 0.0),
        Outcome(make_target("tcp", 3389, host="sql.lab", path_id="remote"), refused(), 0.0),
    ]
    assert path_lines(outcomes) == [
        'illiad_path_expectation_met{path="remote",required="false",site="lib",vantage="web_server"} 0.0'
    ]


def test_a_listener_that_fails_the_protocol_check_fails_the_path_but_counts_as_open_per_target():
    result = ProbeResult(up=False, reason=Reason.PROTOCOL, detail="not a TDS answer", phases={"connect": 0.001},
                         address="127.0.0.1", port=1433)
    lines = exposition([Outcome(make_target("tds", 1433, path_id="sql"), result, 0.0)])
    assert [l for l in lines if l.startswith(("illiad_path_expectation_met", "illiad_port_expectation_met"))] == [
        'illiad_port_expectation_met{expect="open",host="127.0.0.1",path="sql",port="1433",site="lib",'
        'vantage="web_server"} 1.0',
        'illiad_path_expectation_met{path="sql",required="false",site="lib",vantage="web_server"} 0.0',
    ]


def test_an_exporter_side_failure_leaves_the_path_verdict_absent_unless_another_target_decides():
    crashed = ProbeResult(up=False, reason=Reason.ERROR, detail="ValueError")
    alone = [Outcome(make_target("tcp", 1433, path_id="sql"), crashed, 0.0)]
    assert path_lines(alone) == []
    # require all: a real failure elsewhere decides the path whatever the crashed probe would have said
    decided = alone + [Outcome(make_target("tcp", 1344, path_id="sql"), refused(), 0.0)]
    assert path_lines(decided) == [
        'illiad_path_expectation_met{path="sql",required="false",site="lib",vantage="web_server"} 0.0'
    ]
    # ... but a working target beside it does not: the crashed one might be down
    undecided = alone + [Outcome(make_target("tcp", 1344, path_id="sql"), answered(1344), 0.0)]
    assert path_lines(undecided) == []


def test_a_must_be_closed_path_fails_when_any_target_accepts():
    outcomes = [
        Outcome(make_target("tcp", 1433, path_id="sql_from_external", expect=Expect.CLOSED), refused(), 0.0),
        Outcome(make_target("tcp", 1344, path_id="sql_from_external", expect=Expect.CLOSED), answered(1344), 0.0),
    ]
    assert path_lines(outcomes) == [
        'illiad_path_expectation_met{path="sql_from_external",required="false",site="lib",vantage="web_server"} 0.0'
    ]
