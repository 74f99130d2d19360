"""The fast exposition writes exactly what prometheus_client writes for the same outcomes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from illiad_exporter.catalog import Expect, Require
from illiad_exporter.metrics import (FailureReasons, ProbeCollector, _path_labels, fast_format, forget_path_labels,
                                    keep_label_text, render_outcomes, write_exposition)
from illiad_exporter.probers.base import ALL_REASONS, ProbeResult, Reason, TlsFacts
from illiad_exporter.scrape import Outcome

from .probing import make_target

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def _outcomes() -> list[Outcome]:
    """Every shape a result takes: up, each failure reason, partial phases, TLS facts, service
    info facts, a port other than the configured one, and label values that need escaping."""
    outcomes = []
    ok = ProbeResult(up=True, phases={"resolve": 0.0, "connect": 0.000123456789}, address="127.0.0.1", duration=0.0042)
    outcomes.append(Outcome(make_target("tcp", 1433, path_id="sql", site="main"), ok, 0.0))
    for i, reason in enumerate(Reason):
        failed = ProbeResult(phases={"resolve": 1e-7} if i % 2 else {}, duration=5.0 + i)
        failed.fail(reason, "detail")
        outcomes.append(Outcome(make_target("tcp", 2000 + i, path_id=f"p{i}", site="law"), failed, 0.0))
    tls = ProbeResult(up=True, address="::1", port=8443, duration=0.25,
                      phases={"resolve": 0.001, "connect": 0.002, "tls": 0.003, "handshake": 1234567.5},
                      tls=TlsFacts("TLSv1.3", 1_900_000_000.0, True))
    tls.add_info("sqlserver", version="16.0.1000", encryption="required")
    tls.add_info("ldap", vendor='Open"LDAP\\')  # sorts after every path label
    tls.add_info("rdp", build="7601")  # sorts before every path label
    outcomes.append(Outcome(make_target("tls", 443, host='we"ird\\host\nname', path_id="web_https",
                                        site="med", expect=Expect.OPEN), tls, 0.0))
    other = ProbeResult(up=True, address="10.0.0.1", duration=0.1, tls=TlsFacts("TLSv1.2", 0.0, False))
    other.add_info("sqlserver", version="15.0")  # the other label of the family left empty
    outcomes.append(Outcome(make_target("tcp", 1, path_id="rdp", site="med", expect=Expect.CLOSED), other, 0.0))
    for port, result in ((1433, failed), (1344, ok)):  # one path of two targets: 1433 or 1344
        outcomes.append(Outcome(make_target("tds", port, path_id='s"q\\l', site="law", require=Require.ANY), result, 0.0))
    return outcomes


def _registry(outcomes: list[Outcome], required: frozenset[tuple[str, str]],
              failure_reasons: FailureReasons) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeCollector(outcomes, required=required, failure_reasons=failure_reasons))
    return registry


@pytest.mark.parametrize("failure_reasons", ["active", "all"])
@pytest.mark.parametrize("outcomes", [_outcomes(), []], ids=["every-shape", "no-paths"])
def test_fast_text_and_openmetrics_match_prometheus_client_byte_for_byte(
    outcomes: list[Outcome], failure_reasons: FailureReasons,
) -> None:
    required = frozenset({("main", "sql"), ("med", "web_https")})
    registry = _registry(outcomes, required, failure_reasons)
    options = {"required": required, "failure_reasons": failure_reasons}
    assert render_outcomes(outcomes, **options).encode() == generate_latest(registry)
    fast = render_outcomes(outcomes, **options, openmetrics=True) + "# EOF\n"
    assert fast.encode() == openmetrics.generate_latest(registry)


def test_the_chunks_together_are_the_whole_text() -> None:
    outcomes = _outcomes() * 50
    chunks = list(write_exposition(outcomes, chunk_lines=7))
    assert len(chunks) > 50
    assert "".join(chunks) == render_outcomes(outcomes, chunk_lines=1_000_000)


def test_by_default_a_failed_path_has_one_failure_reason_series_and_a_working_path_none() -> None:
    ok, refused = _outcomes()[0], _outcomes()[2]
    assert refused.result.reason is Reason.REFUSED
    lines = [line for line in render_outcomes([ok, refused]).splitlines()
             if line.startswith("illiad_probe_failure_reason{")]
    assert lines == ['illiad_probe_failure_reason{expect="open",host="127.0.0.1",path="p1",port="2001",'
                     'reason="refused",site="law",vantage="web_server"} 1.0']


def test_with_all_failure_reasons_every_reason_is_a_series_and_exactly_one_is_set() -> None:
    text = render_outcomes(_outcomes()[:2], failure_reasons="all")
    lines = [line for line in text.splitlines() if line.startswith("illiad_probe_failure_reason{")]
    assert len(lines) == 2 * len(ALL_REASONS)
    assert sum(line.endswith(" 1.0") for line in lines) == 1
    assert 'illiad_probe_failure_reason{expect="open",host="127.0.0.1",path="p0",port="2000",reason="dns",' \
           'site="law",vantage="web_server"} 1.0' in lines


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("", "text"),
        ("text/plain;version=0.0.4", "text"),
        (PROMETHEUS_ACCEPT, "openmetrics"),
        ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8", "openmetrics"),
        ("application/openmetrics-text;version=1.0.0;escaping=dots", None),  # generic path
    ],
)
def test_the_fast_path_is_taken_only_for_formats_it_writes_exactly(accept: str, kind: str | None) -> None:
    _, content_type = choose_encoder(accept)
    assert fast_format(content_type) == kind


def test_label_text_made_each_time_is_the_kept_text_and_keeps_nothing() -> None:
    """A serving process with probe workers writes its own sites' lines without keeping each
    path's label text (the workers keep theirs): the same bytes, and the cache stays empty."""
    outcomes = _outcomes()
    forget_path_labels()
    kept = "".join(write_exposition(outcomes))
    assert _path_labels.cache_info().currsize == len(outcomes)
    forget_path_labels()
    keep_label_text(False)
    try:
        made = "".join(write_exposition(outcomes))
        assert _path_labels.cache_info().currsize == 0
    finally:
        keep_label_text(True)
    assert made == kept
    "".join(write_exposition(outcomes))
    assert _path_labels.cache_info().currsize == len(outcomes)  # kept again once switched back
