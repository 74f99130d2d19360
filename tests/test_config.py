"""Config: valid files become typed objects; every error names file, line and key, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from illiad_exporter.catalog import Expect, Require, Role
from illiad_exporter.config import ConfigError, load_config, parse_config, parse_duration
from illiad_exporter.plan import build_plan
from illiad_exporter.probers import PROBERS

CONFIGS = Path(__file__).parent / "configs"
EXAMPLES = Path(__file__).parent.parent / "examples"


def errors_of(name: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(CONFIGS / name)
    return [str(issue).replace(str(CONFIGS) + "/", "") for issue in caught.value.issues]


def test_every_error_of_a_bad_file_is_reported_at_once_with_line_and_key():
    assert errors_of("invalid-many-errors.yml") == [
        "invalid-many-errors.yml:2:3: defaults.timeout: expected a duration such as 5s or 500ms, got 'soon'",
        "invalid-many-errors.yml:3:3: defaults.ip_protocol: Input should be 'ip4' or 'ip6'",
        "invalid-many-errors.yml:6:45: sites[0].hosts.database: Input should be 'web_server', 'sql_server', "
        "'staff_client' or 'external'",
        "invalid-many-errors.yml:8:13: sites[0].paths.sql.port: Input should be less than or equal to 65535",
        "invalid-many-errors.yml:9:7: sites[0].paths.odyssee: unknown path id (catalog ids: sql, sql_from_external, "
        "web_https, web_http, oclc_webservices, atlas_update, article_exchange, odyssey, odyssey_outbound, "
        "odyssey_to_staff, iso_ill, iso_ill_outbound, z3950, patron_api, symphony_api, ldap, rdp)",
        "invalid-many-errors.yml:10:13: sites[0].paths.rdp.enabled: Input should be a valid boolean, unable to "
        "interpret input",
        "invalid-many-errors.yml:11:19: sites[0].paths.web_https.colour: unknown key for prober 'illiad_web'",
        "invalid-many-errors.yml:13:32: sites[0].custom[0].from[0]: Input should be 'web_server', 'sql_server', "
        "'staff_client' or 'external'",
        "invalid-many-errors.yml:13:82: sites[0].custom[0].prober: unknown prober 'carrier-pigeon' (known: "
        + ", ".join(sorted(PROBERS)) + ")",
        "invalid-many-errors.yml:14:5: sites[1].name: duplicate site name (also sites[0])",
        "invalid-many-errors.yml:16:1: surprise: unknown key (expected one of: defaults, exporter, sites, probe_allow)",
    ]


def test_yaml_syntax_error_names_the_line():
    (error,) = errors_of("invalid-yaml.yml")
    assert error.startswith("invalid-yaml.yml:4:1: invalid YAML:")


def test_inline_secret_is_refused():
    assert errors_of("invalid-inline-secret.yml") == [
        "invalid-inline-secret.yml:5:99: sites[0].custom[0].password: unknown key for prober 'http'",
    ]


def test_duplicate_key_is_an_error_not_a_silent_override():
    assert errors_of("invalid-duplicate-key.yml") == ["invalid-duplicate-key.yml:5:7: sites[0].hosts.web_server: duplicate key"]


def test_a_config_without_sites_is_refused():
    assert errors_of("invalid-no-sites.yml") == ["invalid-no-sites.yml:1:1: sites: sites: must be a non-empty list of sites"]


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yml")


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5.0), ("250ms", 0.25), ("1m30s", 90.0), (3, 3.0), ("1h", 3600.0)])
def test_durations_in_prometheus_style(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1s", "5 parsecs", True, ""])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_minimal_config_turns_on_required_and_security_paths_only():
    config = load_config(CONFIGS / "valid-minimal.yml")
    enabled = {p.id for p in config.sites[0].paths if p.enabled}
    assert enabled == {"sql", "sql_from_external", "web_https", "oclc_webservices", "atlas_update",
                       "article_exchange", "odyssey", "odyssey_outbound", "rdp"}


def test_overrides_from_the_issue_example():
    config = parse_config("""
defaults: {timeout: 5s, ip_protocol: ip4}
sites:
  - name: main-library
    hosts: {web_server: illiad.example.edu, sql_server: sql.example.edu}
    paths:
      sql: {port: 1344}
      z3950: {enabled: true, host: opac.example.edu, port: 210}
      rdp: {enabled: false}
    custom:
      - {name: ezproxy, from: [web_server], host: ezproxy.example.edu, port: 443, prober: tls}
""")
    paths = {p.id: p for p in config.sites[0].paths}
    assert paths["sql"].ports == (1344,)
    assert paths["z3950"].enabled and paths["z3950"].routes[Role.STAFF_CLIENT] == ("opac.example.edu",)
    assert not paths["rdp"].enabled
    assert paths["ezproxy"].custom and paths["ezproxy"].prober == "tls"
    web = build_plan(config, Role.WEB_SERVER)
    assert sorted((t.path, t.host, t.port) for t in web.targets) == [
        ("article_exchange", "ill.sd00.worldcat.org", 443),  # public default, planned only
        ("atlas_update", "update.atlas-sys.com", 443),  # public default, planned only
        ("ezproxy", "ezproxy.example.edu", 443),
        ("oclc_webservices", "webservices.oclc.org", 443),  # public default, planned only
        ("sql", "sql.example.edu", 1344),
    ]
    assert [(s.path, s.why) for s in web.skipped] == [
        ("odyssey_outbound", "no host for <external> in this site's hosts (or give paths.odyssey_outbound.hosts)")
    ]


def test_external_vantage_expects_sql_and_rdp_closed():
    config = load_config(CONFIGS / "valid-minimal.yml")
    plan = build_plan(config, Role.EXTERNAL)
    closed = sorted((t.path, t.host, t.port) for t in plan.targets if t.expect is Expect.CLOSED)
    assert closed == [
        ("rdp", "illiad.example.edu", 3389),
        ("rdp", "sql.example.edu", 3389),
        ("sql_from_external", "sql.example.edu", 1344),
        ("sql_from_external", "sql.example.edu", 1433),
    ]


def test_optional_path_with_a_site_only_target_needs_a_host():
    with pytest.raises(ConfigError) as caught:
        parse_config("sites:\n  - name: a\n    paths:\n      ldap: {enabled: true}\n", "x.yml")
    assert [str(i) for i in caught.value.issues] == [
        "x.yml:4:7: sites[0].paths.ldap: enabled, but no host: this path goes to a host only the site knows; set host: or hosts:"
    ]


def test_custom_path_needs_host_or_role_and_a_port():
    with pytest.raises(ConfigError) as caught:
        parse_config("sites:\n  - name: a\n    custom:\n      - {name: x, from: [web_server]}\n", "x.yml")
    assert [str(i) for i in caught.value.issues] == [
        "x.yml:4:9: sites[0].custom[0]: a custom path needs exactly one of host, hosts or role",
        "x.yml:4:9: sites[0].custom[0]: a custom path needs port or ports",
    ]


def test_hosts_table_pins_addresses_for_the_plan():
    config = parse_config("""
defaults:
  hosts: {sql.lab: [198.18.0.10]}
  system_resolver: false
sites:
  - name: a
    hosts: {sql_server: sql.lab}
""")
    (target,) = [t for t in build_plan(config, Role.WEB_SERVER).targets if t.path == "sql"]
    assert target.static_addresses == ("198.18.0.10",)
    assert target.system_resolver is False


@pytest.mark.parametrize("example", ["illiad.yml", "local.yml"])
def test_shipped_examples_are_valid(example):
    config = load_config(EXAMPLES / example)
    assert config.sites


def test_example_covers_every_catalog_path():
    from illiad_exporter.catalog import BY_ID

    text = (EXAMPLES / "illiad.yml").read_text()
    assert [pid for pid in BY_ID if f"      {pid}: " not in text] == []


def test_local_example_sends_nothing_off_the_machine():
    config = load_config(EXAMPLES / "local.yml")
    for role in Role:
        for target in build_plan(config, role).targets:
            assert target.host == "127.0.0.1", target


def test_hosts_ports_and_require_make_one_path_of_several_targets():
    config = parse_config("""
sites:
  - name: a
    hosts: {web_server: web.lab, sql_server: sql.lab}
    paths:
      sql: {ports: [1433, 1344]}
      odyssey_outbound: {hosts: [partner1.lab, partner2.lab], require: any}
      rdp: {hosts: [web.lab, sql.lab, vpn.lab], require: all}
    custom:
      - {name: proxy, from: [web_server], hosts: [p1.lab, p2.lab], ports: [3128, 8080], require: any,
         impact: "Patrons cannot reach licensed e-resources."}
""")
    paths = {p.id: p for p in config.sites[0].paths}
    assert paths["sql"].require is Require.ANY  # the catalog's default: "1433 or 1344"
    assert paths["odyssey_outbound"].routes == {Role.WEB_SERVER: ("partner1.lab", "partner2.lab")}
    assert paths["rdp"].routes == {Role.EXTERNAL: ("web.lab", "sql.lab", "vpn.lab")}
    assert paths["proxy"].impact == "Patrons cannot reach licensed e-resources."
    web = build_plan(config, Role.WEB_SERVER)
    assert sorted((t.path, t.host, t.port, t.require.value) for t in web.targets if t.path != "oclc_webservices"
                  and t.path not in ("atlas_update", "article_exchange")) == [
        ("odyssey_outbound", "partner1.lab", 7968, "any"),
        ("odyssey_outbound", "partner2.lab", 7968, "any"),
        ("proxy", "p1.lab", 3128, "any"),
        ("proxy", "p1.lab", 8080, "any"),
        ("proxy", "p2.lab", 3128, "any"),
        ("proxy", "p2.lab", 8080, "any"),
        ("sql", "sql.lab", 1344, "any"),
        ("sql", "sql.lab", 1433, "any"),
    ]
    assert web.impact[("a", "proxy")] == "Patrons cannot reach licensed e-resources."
    assert web.impact[("a", "sql")].startswith("Staff clients and the web server cannot reach the ILLiad database")


def test_bad_hosts_ports_require_and_impact_are_all_reported_with_line_and_key():
    with pytest.raises(ConfigError) as caught:
        parse_config("""sites:
  - name: a
    paths:
      sql: {host: db.lab, hosts: [db2.lab], ports: [1433, 1433]}
      odyssey_outbound: {hosts: [], require: some}
      rdp: {port: 3389, ports: [3389], hosts: [a.lab, A.lab.]}
    custom:
      - {name: x, from: [web_server], host: a.lab, hosts: [b.lab], port: 1}
      - {name: y, from: [web_server], hosts: [c.lab], role: sql_server, ports: [70000]}
      - {name: z, from: [web_server], host: d.lab, port: 1, impact: "two\\nlines"}
      - {name: w, from: [web_server], port: 1, require: any}
""", "x.yml")
    assert [str(i) for i in caught.value.issues] == [
        "x.yml:4:27: sites[0].paths.sql.hosts: give host or hosts, not both",
        "x.yml:4:59: sites[0].paths.sql.ports[1]: 1433 is listed twice",
        "x.yml:5:26: sites[0].paths.odyssey_outbound.hosts: List should have at least 1 item after validation, "
        "not 0",
        "x.yml:5:37: sites[0].paths.odyssey_outbound.require: Input should be 'all' or 'any'",
        "x.yml:6:25: sites[0].paths.rdp.ports: give port or ports, not both",
        "x.yml:6:55: sites[0].paths.rdp.hosts[1]: A.lab. is listed twice",
        "x.yml:8:52: sites[0].custom[0].hosts: give host or hosts, not both",
        "x.yml:9:81: sites[0].custom[1].ports[0]: Input should be less than or equal to 65535",
        "x.yml:10:61: sites[0].custom[2].impact: impact is one line of text, at most 300 characters: what breaks "
        "when the path is closed",
        "x.yml:11:9: sites[0].custom[3]: a custom path needs exactly one of host, hosts or role",
    ]


def test_an_odyssey_override_from_before_the_split_still_governs_the_outbound_leg():
    config = parse_config("""
sites:
  - name: a
    hosts: {web_server: web.lab, external: partner.lab}
    paths:
      odyssey: {enabled: false}
      iso_ill: {required: true, port: 1611}
""")
    paths = {p.id: p for p in config.sites[0].paths}
    assert not paths["odyssey"].enabled and not paths["odyssey_outbound"].enabled
    assert paths["iso_ill"].enabled and paths["iso_ill_outbound"].enabled
    assert paths["iso_ill_outbound"].required and paths["iso_ill_outbound"].routes == {Role.WEB_SERVER: ("partner.lab",)}
    assert not paths["odyssey_to_staff"].enabled  # optional, off until the site turns it on


def test_an_odyssey_host_override_keeps_meaning_the_inbound_legs():
    config = parse_config("""
sites:
  - name: a
    hosts: {web_server: web.lab, external: partner.lab}
    paths:
      odyssey: {host: odyssey.lab}
""")
    paths = {p.id: p for p in config.sites[0].paths}
    assert paths["odyssey"].routes == {Role.STAFF_CLIENT: ("odyssey.lab",), Role.EXTERNAL: ("odyssey.lab",)}
    assert paths["odyssey_outbound"].routes == {Role.WEB_SERVER: ("partner.lab",)}
