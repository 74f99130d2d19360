"""The exposition of a small, known set of outcomes, asserted line by line."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from illiad_exporter.catalog import Expect
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
