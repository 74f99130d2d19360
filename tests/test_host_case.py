"""Host names compare without regard to case (and a trailing dot) wherever a name is compared
or looked up: the probe_allow list, the config's hosts table, the single-flight keys. A case
change must not slip a name past its pin to the system resolver."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illiad_exporter.adhoc import adhoc_target
from illiad_exporter.catalog import Role
from illiad_exporter.config import parse_config
from illiad_exporter.plan import build_plan
from illiad_exporter.singleflight import flight_key

from .exporter_process import exporter, fetch, loopback_site_config
from .test_server import samples, value

LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
NAMES = st.lists(LABEL, min_size=1, max_size=4).map(".".join).filter(lambda n: not n.replace(".", "").isdigit())


def spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` with any letters upper-cased, and perhaps a trailing dot."""
    return st.tuples(st.lists(st.booleans(), min_size=len(name), max_size=len(name)), st.booleans()).map(
        lambda flips: "".join(c.upper() if up else c for c, up in zip(name, flips[0])) + ("." if flips[1] else "")
    )


def config_text(table_name: str, target_name: str, allow_name: str) -> str:
    return f"""
defaults: {{system_resolver: false, hosts: {{"{table_name}": [198.18.7.7]}}}}
probe_allow: ["{allow_name}:18081"]
sites:
  - name: lib
    hosts: {{web_server: "{target_name}", sql_server: 198.18.0.1}}
    paths:
      sql: {{enabled: false}}
      oclc_webservices: {{enabled: false}}
      atlas_update: {{enabled: false}}
      article_exchange: {{enabled: false}}
      odyssey: {{enabled: false}}
    custom:
      - {{name: app, from: [web_server], role: web_server, port: 18081}}
"""


@settings(max_examples=200, deadline=None, database=None)
@given(st.data())
def test_any_spelling_of_a_name_hits_the_same_pin_allow_entry_and_flight(data):
    name = data.draw(NAMES, label="name")
    table, target, allowed, asked = (data.draw(spellings(name), label=what)
                                     for what in ("table", "site host", "allow entry", "target="))
    config = parse_config(config_text(table, target, allowed))
    planned = build_plan(config, Role.WEB_SERVER).by_site["lib"][0]
    assert planned.static_addresses == ("198.18.7.7",)
    adhoc = asyncio.run(adhoc_target(config, "web_server", f"{asked}:18081", "tcp"))
    assert adhoc.static_addresses == ("198.18.7.7",)  # allowed by name, and still pinned
    renamed = build_plan(parse_config(config_text(table, asked, allowed)), Role.WEB_SERVER).by_site["lib"][0]
    assert flight_key(renamed) == flight_key(planned)  # one probe for every spelling


def test_two_spellings_of_one_name_in_the_hosts_table_are_refused():
    text = config_text("lab.test", "lab.test", "lab.test").replace(
        '"lab.test": [198.18.7.7]', '"lab.test": [198.18.7.7], "LAB.test": [198.18.7.8]')
    try:
        parse_config(text, "c.yml")
    except Exception as error:  # noqa: BLE001 - the message is the assertion
        assert "listed twice" in str(error) and "c.yml:2:" in str(error)
    else:
        raise AssertionError("a hosts table naming one host twice was accepted")


@pytest.mark.process
def test_an_upper_case_target_is_probed_at_the_pinned_address_by_the_real_exporter(tmp_path, silent_port):
    """probe_allow names lab.test and the hosts table pins it to 127.0.0.1, where a listener
    waits; lab.test resolves nowhere else (system resolver on). target=LAB.TEST is allowed
    and reaches the pin, so the probe is up, not a dns failure."""
    config = loopback_site_config(
        tmp_path / "c.yml", custom=f"      - {{name: app, from: [web_server], host: 127.0.0.1, port: {silent_port}}}",
        top=f'probe_allow: ["lab.test:{silent_port}"]\n', hosts='{"lab.test": [127.0.0.1]}')
    config.write_text(config.read_text().replace("system_resolver: false", "system_resolver: true"))
    peer, url = exporter(config, tmp_path)
    with peer:
        for spelling in ("lab.test", "LAB.TEST", "Lab.Test."):
            status, text = fetch(f"{url}/probe?target={spelling}:{silent_port}&prober=tcp")
            assert status == 200, text
            assert value(text, "illiad_port_up") == 1.0, (spelling, text)
            assert 1.0 not in samples(text, "illiad_probe_failure_reason").values()  # no reason: not dns
