"""Every role, every path, through real firewalls: each ILLiad host is a network namespace,
and what each role's exporter (and its ``check``) reports must be exactly what the firewall
lets through."""

from __future__ import annotations

import pytest

from .lab import Lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

WEB_PATHS = {"sql", "oclc_webservices", "atlas_update", "article_exchange", "odyssey", "patron_api"}
STAFF_PATHS = {"sql", "web_https", "oclc_webservices", "atlas_update", "odyssey", "patron_api_from_staff"}
EXTERNAL_PATHS = {"sql_from_external", "web_https", "odyssey", "rdp"}


def test_with_the_standing_firewall_every_role_reaches_what_it_needs_and_sql_stays_closed_from_outside(lab: Lab) -> None:
    seen = lab.observe()
    web, staff, external = seen["web_server"], seen["staff_client"], seen["external"]

    assert {p for p, _, _ in web.probes()} == WEB_PATHS
    for path in ("sql", "oclc_webservices", "atlas_update", "article_exchange", "odyssey", "patron_api"):
        web.assert_open(path)
    assert web.seen("odyssey").host == "partner.example.org"  # the partner library's Odyssey
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
