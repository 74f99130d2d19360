"""The path verdict: every target (or any one) meets the expectation; exporter faults are unknown."""

from __future__ import annotations

import pytest

from illiad_exporter.catalog import Expect, Require
from illiad_exporter.probers import ProbeResult, Reason
from illiad_exporter.probers.base import EXPORTER_SIDE_REASONS
from illiad_exporter.verdict import combine, path_verdicts, target_met

from .probing import make_target


def up(port: int = 1433) -> ProbeResult:
    return ProbeResult(up=True, address="127.0.0.1", port=port, phases={"connect": 0.001})


def failed(reason: Reason, detail: str = "", *, connected: bool = False) -> ProbeResult:
    result = ProbeResult(address="127.0.0.1" if connected else None)
    result.fail(reason, detail)
    return result


def test_an_exporter_bug_is_an_exporter_side_reason():
    assert Reason.ERROR in EXPORTER_SIDE_REASONS
    assert Reason.REFUSED not in EXPORTER_SIDE_REASONS and Reason.TIMEOUT not in EXPORTER_SIDE_REASONS


@pytest.mark.parametrize(
    ("expect", "result", "met"),
    [
        (Expect.OPEN, up(), True),
        (Expect.OPEN, failed(Reason.PROTOCOL, "not TDS", connected=True), False),  # a listener, not the service
        (Expect.OPEN, failed(Reason.REFUSED), False),
        (Expect.OPEN, failed(Reason.ERROR, "ValueError"), None),
        (Expect.OPEN, None, None),  # not probed yet
        (Expect.CLOSED, failed(Reason.REFUSED), True),
        (Expect.CLOSED, failed(Reason.TIMEOUT), True),
        (Expect.CLOSED, failed(Reason.PROTOCOL, connected=True), False),  # it accepted: open
        (Expect.CLOSED, failed(Reason.ERROR, "ValueError", connected=True), False),  # accepted before the bug
        (Expect.CLOSED, failed(Reason.ERROR, "ValueError"), None),
    ],
)
def test_one_target_meets_its_expectation(expect, result, met):
    assert target_met(make_target("tcp", 1433, expect=expect), result) is met


@pytest.mark.parametrize(
    ("values", "require", "met"),
    [
        ([True, True], Require.ALL, True),
        ([True, False], Require.ALL, False),
        ([None, False], Require.ALL, False),
        ([None, True], Require.ALL, None),
        ([False, True], Require.ANY, True),
        ([None, True], Require.ANY, True),
        ([None, False], Require.ANY, None),
        ([False, False], Require.ANY, False),
        ([], Require.ALL, None),
    ],
)
def test_targets_combine_three_valued(values, require, met):
    assert combine(values, require) is met


def verdict(*pairs, require=Require.ALL, expect=Expect.OPEN, required=frozenset()):
    checked = [(make_target("tds", port, host=host, path_id="sql", expect=expect, require=require), result)
               for host, port, result in pairs]
    (one,) = path_verdicts(checked, required)
    return one


def test_verdicts_are_one_per_path_in_first_seen_order_and_carry_required():
    checked = [
        (make_target("tcp", 1, path_id="b"), up()),
        (make_target("tcp", 2, path_id="a"), failed(Reason.REFUSED)),
        (make_target("tcp", 3, path_id="b"), up()),
        (make_target("tcp", 4, path_id="b", site="other"), up()),
    ]
    verdicts = path_verdicts(checked, frozenset({("lib", "b")}))
    assert [(v.site, v.path, v.required, v.met, len(v.checks)) for v in verdicts] == [
        ("lib", "b", True, True, 2), ("lib", "a", False, False, 1), ("other", "b", False, True, 1),
    ]


@pytest.mark.parametrize(
    ("pairs", "require", "expect", "summary"),
    [
        ([("db", 1433, up())], Require.ALL, Expect.OPEN, "answers"),
        ([("db", 1433, up()), ("db", 1344, up(1344))], Require.ALL, Expect.OPEN, "all 2 answer"),
        ([("db", 1433, failed(Reason.REFUSED, "connection refused")), ("db", 1344, up(1344))], Require.ANY,
         Expect.OPEN, "1 of 2 answer; down: db:1433 (refused: connection refused)"),
        ([("db", 1433, failed(Reason.PROTOCOL, "no PRELOGIN answer", connected=True))], Require.ALL, Expect.OPEN,
         "down: protocol: no PRELOGIN answer"),
        ([("a", 7968, failed(Reason.TIMEOUT)), ("b", 7968, failed(Reason.REFUSED))], Require.ANY, Expect.OPEN,
         "none of 2 answers: a:7968 (timeout); b:7968 (refused)"),
        ([("a", 1, up()), ("b", 1, failed(Reason.DNS, "no such host"))], Require.ALL, Expect.OPEN,
         "1 of 2 down: b:1 (dns: no such host)"),
        ([("db", 1433, failed(Reason.ERROR, "ValueError"))], Require.ALL, Expect.OPEN,
         "unknown (exporter: db:1433 error: ValueError)"),
        ([("db", 1433, None)], Require.ALL, Expect.OPEN, "not probed yet"),
        ([("db", 1433, failed(Reason.REFUSED))], Require.ALL, Expect.CLOSED, "closed"),
        ([("db", 1433, failed(Reason.REFUSED)), ("db", 1344, up(1344))], Require.ALL, Expect.CLOSED,
         "1 of 2 accept connections: db:1344"),
        ([("fe80::1", 3389, up(3389))], Require.ALL, Expect.CLOSED, "accepts connections: [fe80::1]:3389"),
    ],
)
def test_the_summary_says_what_the_path_does_in_one_line(pairs, require, expect, summary):
    assert verdict(*pairs, require=require, expect=expect).summary == summary


def test_a_verdict_names_its_state():
    assert verdict(("db", 1433, up())).state == "met"
    assert verdict(("db", 1433, failed(Reason.REFUSED))).state == "failed"
    assert verdict(("db", 1433, failed(Reason.ERROR))).state == "unknown"


@pytest.mark.parametrize(
    ("pairs", "require", "headline"),
    [
        ([("db", 1433, failed(Reason.REFUSED)), ("db", 1344, up(1344))], Require.ANY, "1 of 2 answer; down"),
        ([("a", 7968, failed(Reason.TIMEOUT)), ("b", 7968, failed(Reason.REFUSED))], Require.ANY,
         "none of 2 answers"),
        ([("db", 1433, failed(Reason.PROTOCOL, "no PRELOGIN answer", connected=True))], Require.ALL, "down"),
        ([("db", 1433, failed(Reason.EXPORTER, "no free probe slot")), ("db", 1344, failed(Reason.ERROR, "KeyError")),
          ("db", 1345, failed(Reason.EXPORTER, "no free probe slot"))],
         Require.ANY, "unknown (exporter: no free probe slot; error: KeyError)"),
    ],
)
def test_the_headline_leaves_the_targets_to_their_own_rows(pairs, require, headline):
    assert verdict(*pairs, require=require).headline == headline
