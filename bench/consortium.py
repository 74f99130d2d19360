"""A consortium's config, written the way the README's Configuration reference shows: each
site its own ``hosts:``, its catalog overrides under ``paths:`` and its ``custom:`` paths,
block style, no anchors. The bench's config-load row and the tests of the load bounds both
load it; it is generated, never checked in.

Every site has PATHS_PER_SITE enabled paths (six from the catalog, four custom). Every
address is loopback or in 198.18.0.0/15, and the catalog's paths to public hosts (OCLC, the
vendor) are switched off: the file is only loaded, but it must be safe to probe.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

PATHS_PER_SITE = 10
# the catalog's paths to fixed public hosts: off in every site
PUBLIC_PATHS = ("oclc_webservices", "atlas_update", "article_exchange")
_ADDRESSES_PER_SITE = 8
_FIRST = int(ipaddress.ip_address("198.18.0.0"))
_LAST = int(ipaddress.ip_address("198.19.255.255"))


def _address(site: int, k: int) -> str:
    """The k-th test address of a site: 198.18.0.0/15 holds 16,384 sites' eight each; past
    that the sites share them (the file is only loaded)."""
    return str(ipaddress.ip_address(_FIRST + (site * _ADDRESSES_PER_SITE + k) % (_LAST - _FIRST + 1)))


def consortium_site(site: int) -> str:
    """One member library, an item of ``sites:``."""
    a = [_address(site, k) for k in range(_ADDRESSES_PER_SITE)]
    off = "".join(f"      {path_id}: {{enabled: false}}\n" for path_id in PUBLIC_PATHS)
    return f"""\
  # lib{site:05d}: member library {site + 1}; its ILLiad web server, database and staff PCs, and
  # the partners it sends Odyssey documents to most. Contact: the library's systems office
  # (ill-systems@lib{site:05d}.example.edu); firewall changes go through the campus network team,
  # who want the rule, the source and the reason: `illiad-exporter check --explain` writes them.
  - name: lib{site:05d}
    hosts: {{web_server: {a[0]}, sql_server: {a[1]}, staff_client: {a[2]}, external: {a[3]}}}
    paths:
{off}      sql: {{ports: [1433, 1344]}}
      odyssey_outbound: {{hosts: [{a[4]}, {a[5]}]}}
      z3950: {{enabled: true, host: {a[6]}, port: 210, timeout: 3s}}
      rdp: {{enabled: false}}
    custom:
      - {{name: ezproxy, from: [web_server], host: {a[7]}, port: 443, prober: tls,
         impact: "Patrons cannot open licensed e-resources through the proxy."}}
      - {{name: catalog-web, from: [staff_client], host: {a[6]}, port: 443, prober: http, path: /vufind,
         impact: "Staff cannot look up holdings in the library catalog while processing requests."}}
      - {{name: smtp, from: [web_server], host: {a[1]}, port: 25,
         impact: "ILLiad cannot e-mail patrons that their items have arrived or are overdue."}}
      - {{name: print-server, from: [staff_client], host: {a[2]}, port: 9100, required: false,
         impact: "Staff cannot print pull slips and book bands."}}
"""


def consortium_text(sites: int) -> str:
    """``sites`` member libraries of PATHS_PER_SITE paths each."""
    head = "defaults: {system_resolver: false, timeout: 2s}\nsites:\n"
    return head + "".join(consortium_site(s) for s in range(sites))


def write_consortium(path: Path, sites: int) -> Path:
    path.write_text(consortium_text(sites), encoding="utf-8")
    return path
