"""Every role, every path, through real firewalls: each ILLiad host is a network namespace,
and what each role's exporter (and its ``check``) reports must be exactly what the firewall
lets through."""

from __future__ import annotations

import pytest

from .lab import Lab
from .topology import run

pytestmark = [pytest.mark.netns, pytest.mark.slow]

WEB_PATHS = {"sql", "oclc_webservices", "atlas_update", "article_exchange", "odyssey_outbound", "patron_api"}
STAFF_PATHS = {"sql", "web_https", "oclc_webservices", "atlas_update", "odyssey", "patron_api_from_staff"}
EXTERNAL_PATHS = {"sql_from_external", "web_https", "odyssey", "rdp"}


def test_with_the_standing_firewall_every_role_reaches_what_it_needs_and_sql_stays_closed_from_outside(lab: Lab) -> None:
    seen = lab.observe()
    web, staff, external = seen["web_server"], seen["staff_client"], seen["external"]

    assert {p for p, _, _ in web.probes()} == WEB_PATHS
    for path in ("sql", "oclc_webservices", "atlas_update", "article_exchange", "odyssey_outbound", "patron_api"):
        web.assert_open(path)
    assert web.seen("odyssey_outbound").host == "partner.example.org"  # the partner library's Odyssey
    # SQL is checked by its protocol, across the router: tdspool in the SQL host answered PRELOGIN.
    assert [info["prober"] for info in web.labels_of("illiad_path_info", "sql")] == ["tds"]
    assert [info["version"] for info in web.labels_of("illiad_sqlserver_info", "sql")] == ["10.0.1600"]
    # The real OCLC name, verified against the stand-in's certificate through the hosts table.
    assert web.seen("oclc_webservices").tls_verified == "true"
    assert web.check_rc == 0, web

    assert {p for p, _, _ in staff.probes()} == STAFF_PATHS
    for path in ("sql", "web_https", "oclc_webservices", "atlas_update", "odyssey"):
        staff.assert_open(path)
    assert staff.seen("odyssey").host == "illiad.example.edu"
    staff.assert_closed("patron_api_from_staff", "refused")  # allowed closed: the allow-list holds
    assert staff.check_rc == 0, staff

    assert {p for p, _, _ in external.probes()} == EXTERNAL_PATHS
    external.assert_open("web_https")
    external.assert_open("odyssey")
    external.assert_closed("sql_from_external", "timeout", port=1433)  # the perimeter drops it
    external.assert_closed("sql_from_external", "timeout", port=1344)
    external.assert_closed("rdp", "refused", host="illiad.example.edu")  # nothing listens
    external.assert_closed("rdp", "timeout", host="sql.example.edu")
    assert external.check_rc == 0, external
    assert "all expectations met" in external.check_output


@pytest.mark.parametrize(("action", "reason"), [("drop", "timeout"), ("reject", "refused")])
def test_sql_closed_between_web_server_and_sql_server_is_down_from_web_server_only(
        lab: Lab, action: str, reason: str) -> None:
    lab.firewall("router", "forward", f"ip saddr 198.18.1.10 ip daddr 198.18.2.10 tcp dport 1433 {action}")
    seen = lab.observe(["web_server", "staff_client"])
    web, staff = seen["web_server"], seen["staff_client"]

    web.assert_closed("sql", reason)
    for path in ("oclc_webservices", "atlas_update", "article_exchange", "odyssey_outbound", "patron_api"):
        web.assert_open(path)
    assert web.check_rc == 1, web
    assert "SOME EXPECTATIONS NOT MET" in web.check_output

    staff.assert_open("sql")  # same database, another source: the rule is the web server's alone
    assert staff.check_rc == 0, staff


def test_odyssey_blocked_inbound_from_outside_is_down_from_external_and_up_from_staff(lab: Lab) -> None:
    lab.firewall("web_server", "input", "ip saddr 198.19.0.0/16 tcp dport 7968 drop")
    seen = lab.observe()
    web, staff, external = seen["web_server"], seen["staff_client"], seen["external"]

    external.assert_closed("odyssey", "timeout")
    external.assert_open("web_https")  # only 7968 is closed to the outside
    assert external.check_rc == 1, external

    staff.assert_open("odyssey")
    assert staff.check_rc == 0, staff
    web.assert_open("odyssey_outbound")  # outbound to the partner library is another direction
    assert web.check_rc == 0, web


def test_oclc_and_update_hosts_blocked_at_the_web_servers_egress_are_down_there_and_lan_paths_stay_up(
        lab: Lab) -> None:
    lab.firewall("web_server", "output", "ip daddr 198.19.2.10 tcp dport 443 drop")
    seen = lab.observe(["web_server", "staff_client"])
    web, staff = seen["web_server"], seen["staff_client"]

    for path in ("oclc_webservices", "atlas_update", "article_exchange"):
        web.assert_closed(path, "timeout")
    web.assert_open("sql")
    web.assert_open("odyssey_outbound")
    web.assert_open("patron_api")  # the same host on another port is still allowed out
    assert web.check_rc == 1, web
    assert {row.path for row in web.rows.values() if row.verdict == "FAIL"} == {
        "oclc_webservices", "atlas_update", "article_exchange"}

    for path in ("oclc_webservices", "atlas_update", "sql", "web_https", "odyssey"):
        staff.assert_open(path)  # the staff PCs have their own way out
    assert staff.check_rc == 0, staff


def test_sql_exposed_to_outside_by_a_firewall_mistake_is_flagged_by_the_expectation_metric(lab: Lab) -> None:
    # An allow rule slipped in above the perimeter's drop.
    lab.topology.nft("router", "insert rule inet site forward ip saddr 198.19.1.10 tcp dport 1433 accept\n")
    external = lab.observe(["external"])["external"]

    exposed = external.assert_open("sql_from_external", port=1433)
    assert (exposed.expect, exposed.met) == ("closed", 0.0)
    assert exposed.row is not None and exposed.row.verdict == "FAIL"
    still_closed = external.assert_closed("sql_from_external", "timeout", port=1344)
    assert still_closed.met == 1.0
    assert external.check_rc == 1, external
    assert "SOME EXPECTATIONS NOT MET" in external.check_output


def test_a_route_lost_at_the_web_server_makes_the_oclc_and_vendor_paths_unreachable_there_only(lab: Lab) -> None:
    # A routing mistake, not a firewall: the web server's route to the vendors' network is gone.
    web_ns = lab.netns("web_server")
    run(["ip", "-n", web_ns, "route", "add", "unreachable", "198.19.2.0/24"])
    try:
        seen = lab.observe(["web_server", "staff_client"])
    finally:
        run(["ip", "-n", web_ns, "route", "del", "unreachable", "198.19.2.0/24"])
    web, staff = seen["web_server"], seen["staff_client"]

    for path in ("oclc_webservices", "atlas_update", "article_exchange", "patron_api"):
        web.assert_closed(path, "unreachable")
    web.assert_open("sql")
    web.assert_open("odyssey_outbound")  # the partner library is on another network, still routed
    assert web.check_rc == 1, web

    for path in ("oclc_webservices", "atlas_update", "sql", "web_https", "odyssey"):
        staff.assert_open(path)
    assert staff.check_rc == 0, staff


def test_forty_ms_on_the_sql_link_reads_forty_ms_for_sql_while_other_paths_stay_fast(lab: Lab) -> None:
    others = {"web_server": ("oclc_webservices", "atlas_update", "article_exchange", "odyssey_outbound", "patron_api"),
              "staff_client": ("web_https", "oclc_webservices", "atlas_update", "odyssey")}
    with lab.topology.delay_link("sql_server", 0.020):  # 20 ms each way: a connect takes 40 ms
        latencies = {role: lab.latencies(role) for role in others}
        seen = lab.observe(others)

    for role, fast_paths in others.items():
        samples = latencies[role]
        assert all(len(samples.get(path, [])) == 5 for path in ("sql", *fast_paths)), f"{role}: a probe failed: {samples}"
        sql = min(samples["sql"])
        assert 0.036 <= sql <= 0.044, f"{role}: sql connect latency {sql * 1000:.1f} ms, wanted 40 ms +-10%: {samples}"
        for path in fast_paths:
            assert min(samples[path]) < 0.020, f"{role}: {path} slowed too: {samples}"

        # check probes once from a fresh process: its one sample shows the delay, and the path open
        observation = seen[role]
        row = observation.assert_open("sql").row
        assert row is not None and row.latency.endswith(" ms") and float(row.latency.split()[0]) >= 36.0, observation
        for path in fast_paths:
            observation.assert_open(path)
        assert observation.check_rc == 0, observation

    # Without the wire the same path is fast again: the delay was the link's, not the server's.
    after = lab.latencies("web_server", scrapes=3)["sql"]
    assert min(after) < 0.020, after


def test_a_peer_that_allow_lists_the_web_server_is_up_from_there_and_refused_from_a_staff_pc(lab: Lab) -> None:
    seen = lab.observe(["web_server", "staff_client"])
    web, staff = seen["web_server"], seen["staff_client"]
    patron_api = web.assert_open("patron_api")
    from_staff = staff.assert_closed("patron_api_from_staff", "refused")
    assert (patron_api.host, patron_api.port) == (from_staff.host, from_staff.port)  # one server, two answers
    assert web.check_rc == 0 and staff.check_rc == 0, (web, staff)

    # Without its allow-list the server answers the staff PC too, and that role's check says so.
    lab.topology.nft("public", "flush table inet site\n")
    staff = lab.observe(["staff_client"])["staff_client"]
    opened = staff.assert_open("patron_api_from_staff")
    assert opened.met == 0.0
    assert staff.check_rc == 1, staff
