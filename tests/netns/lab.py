"""The simulated ILLiad site on the namespace topology: real peers in the right hosts, an
exporter in each vantage host, the site firewall, and one way to look at what each role sees
(its exporter's metrics and its ``illiad-exporter check`` table, taken together).

Names resolve only through the config's ``defaults.hosts`` table (``system_resolver:
false``): the real public names (webservices.oclc.org, ...) point at the stand-in host, so
the test exercises the real catalog defaults and no packet leaves the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ..certs import write_cert
from ..peers import LIBRARY_LOCATIONS, TDSPOOL_CONF, Peer, missing, need_binary, need_root, nginx_argv, wait_for_port
from .topology import BY_ROLE, PREFIX, Topology, in_netns

VANTAGES = ("web_server", "staff_client", "external")
EXPORTER_PORT = 9968
SITE = "main-library"
SCRAPE_TIMEOUT = 8.0

NAMES = {
    "illiad.example.edu": "web_server",
    "sql.example.edu": "sql_server",
    "partner.example.org": "external",
    # The real public defaults of the catalog, overridden: pointed at the stand-in host.
    "webservices.oclc.org": "public",  # override of the default
    "update.atlas-sys.com": "public",  # override of the default
    "ill.sd00.worldcat.org": "public",  # override of the default
    "patronapi.example.edu": "public",  # a vendor-hosted ILS
}
PUBLIC_TLS_NAMES = (  # the defaults, overridden to the stand-in
    "webservices.oclc.org", "update.atlas-sys.com", "ill.sd00.worldcat.org")
PATRON_API_PORT = 4500

CONFIG = """\
defaults:
  timeout: 2s
  system_resolver: false   # never the machine's DNS
  hosts:
{hosts}
exporter:
  default_scrape_timeout: 10s
sites:
  - name: {site}
    hosts: {{web_server: illiad.example.edu, sql_server: sql.example.edu, external: partner.example.org}}
    paths:
      web_https: {{ca_file: {ca}}}
      oclc_webservices: {{ca_file: {ca}}}
      atlas_update: {{ca_file: {ca}}}
      article_exchange: {{ca_file: {ca}}}
      # paths that must stay closed are dropped at the perimeter: wait less for them
      sql_from_external: {{timeout: 1s}}
      rdp: {{timeout: 1s}}
      patron_api: {{enabled: true, host: patronapi.example.edu, port: {patron_port}}}
    custom:
      # the PatronAPI server must answer the ILLiad server only: closed from a staff PC
      - {{name: patron_api_from_staff, from: [staff_client], host: patronapi.example.edu, port: {patron_port},
          prober: patron_api, expect: closed}}
"""

# The site's standing firewall; scenarios add to it and :meth:`Lab.reset_firewalls` restores it.
BASELINE_FIREWALL = {
    "router": """
table inet site {
    chain forward {
        type filter hook forward priority filter; policy accept;
        # the perimeter: nothing from outside reaches the database host
        ip saddr 198.19.0.0/16 ip daddr 198.18.2.10 drop
    }
}
""",
    "public": f"""
table inet site {{
    chain input {{
        type filter hook input priority filter; policy accept;
        # the PatronAPI server answers the ILLiad web server only
        tcp dport {PATRON_API_PORT} ip saddr != 198.18.1.10 reject with tcp reset
    }}
}}
""",
}


def require_netns() -> None:
    """Everything these tests need from the machine, or skip (locally) / fail (in CI)."""
    need_root("network namespaces, nft and TUN devices")
    for binary, package in (("ip", "iproute2"), ("nft", "nftables"), ("nginx", "nginx-light"),
                            ("tdspool", "freetds-bin")):
        need_binary(binary, package)
    if not Path("/dev/net/tun").exists():
        missing("/dev/net/tun is missing (the delay wire needs TUN devices)")
    probe = f"{PREFIX}-{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=15)
    if made.returncode != 0:
        missing(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        nft = subprocess.run(["ip", "netns", "exec", probe, "nft", "list", "ruleset"], capture_output=True,
                             text=True, timeout=15)
        if nft.returncode != 0:
            missing(f"nft does not work inside a network namespace: {nft.stderr.strip()}")
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=15)


class NetnsPeer(Peer):
    """A peer process started inside a namespace; ready once its port accepts there."""

    def __init__(self, netns: str, argv: list[str], *, address: str, port: int, **kwargs: object) -> None:
        super().__init__(["ip", "netns", "exec", netns, *argv], **kwargs)  # type: ignore[arg-type]
        self.netns, self.address, self.ready_port = netns, address, port

    def start(self) -> NetnsPeer:
        super().start()
        try:
            in_netns(self.netns, lambda: wait_for_port(
                self.ready_port, host=self.address, timeout=self.ready_timeout,
                alive=lambda: self.process.poll() is None))  # type: ignore[union-attr]
        except Exception:
            self.stop()
            detail = self.log.read_text(errors="replace")[-2000:] if self.log and self.log.exists() else ""
            raise RuntimeError(f"{' '.join(self.argv[4:6])} did not start in {self.netns}:\n{detail}") from None
        return self


# -- what a role sees ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckRow:
    path: str
    target: str
    expected: str
    observed: str
    latency: str
    reason: str  # the reason word only ("timeout"), "" when up
    verdict: str  # the target's: "ok", "FAIL" or "UNKNOWN"


def parse_check_table(output: str) -> dict[tuple[str, str], CheckRow]:
    """``check``'s target rows by (path, host:port); columns are cut at the header's
    positions. A row with a PATH is a path's verdict; the rows under it, with PATH empty,
    are its targets."""
    lines = output.splitlines()
    header = lines[0]
    names = ("SITE", "PATH", "NEED", "EXPECT", "RESULT", "TARGET", "OBSERVED", "LATENCY", "DETAIL")
    starts = [header.index(word) for word in names]
    rows: dict[tuple[str, str], CheckRow] = {}
    path = expect = ""
    for line in lines[1:]:
        if not line.strip():
            break  # the verdict follows a blank line
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]  # type: ignore[operator]
        site, path_cell, _, expect_cell, result, target, observed, latency, detail = cells
        if path_cell:
            path, expect = path_cell, expect_cell.split()[0] if expect_cell else ""
            continue
        words = detail.split()
        reason = words[0].rstrip(":") if words else ""
        rows[(path, target)] = CheckRow(path, target, expect, observed, latency, reason, result)
    return rows


@dataclass(frozen=True)
class PathSeen:
    """One probe of one path from one role, as the metrics and the check table tell it."""

    path: str
    host: str
    port: str
    expect: str
    up: float
    met: float
    reason: str | None
    latency: float | None
    tls_verified: str | None
    row: CheckRow | None


@dataclass
class Observation:
    role: str
    samples: list[Sample]
    check_rc: int
    check_output: str
    rows: dict[tuple[str, str], CheckRow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = parse_check_table(self.check_output) if self.check_output.strip() else {}

    def _series(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and s.labels.get("site") == SITE]

    def labels_of(self, metric: str, path: str) -> list[dict[str, str]]:
        """The label sets of ``metric`` for one path (an info metric's facts, say)."""
        return [s.labels for s in self._series(metric) if s.labels.get("path") == path]

    def probes(self) -> set[tuple[str, str, str]]:
        """(path, host, port) of every probe this role's exporter made."""
        return {(s.labels["path"], s.labels["host"], s.labels["port"]) for s in self._series("illiad_port_up")}

    def seen(self, path: str, *, port: int | None = None, host: str | None = None) -> PathSeen:
        ups = [s for s in self._series("illiad_port_up") if s.labels["path"] == path
               and (port is None or s.labels["port"] == str(port)) and (host is None or s.labels["host"] == host)]
        assert len(ups) == 1, f"{self.role}: expected one probe of {path} port={port} host={host}, got {ups}\n{self}"
        labels = ups[0].labels

        def value(name: str) -> float | None:
            found = [s.value for s in self._series(name) if _same_probe(s.labels, labels)]
            return found[0] if found else None

        reasons = [s.labels["reason"] for s in self._series("illiad_probe_failure_reason")
                   if _same_probe(s.labels, labels) and s.value == 1]
        verified = [s.labels["verified"] for s in self._series("illiad_tls_info") if _same_probe(s.labels, labels)]
        return PathSeen(
            path=path, host=labels["host"], port=labels["port"], expect=labels["expect"], up=ups[0].value,
            met=value("illiad_port_expectation_met"), reason=reasons[0] if len(reasons) == 1 else None,  # type: ignore[arg-type]
            latency=value("illiad_port_latency_seconds"), tls_verified=verified[0] if verified else None,
            row=self.rows.get((path, f"{labels['host']}:{labels['port']}")),
        )

    def assert_open(self, path: str, **which: object) -> PathSeen:
        """Up, no failure reason, and the check table agrees."""
        seen = self.seen(path, **which)  # type: ignore[arg-type]
        assert (seen.up, seen.reason) == (1.0, None), f"{self.role}: {path} should be open: {seen}\n{self}"
        assert seen.row is not None and seen.row.observed == "open", f"{self.role}: check disagrees on {path}\n{self}"
        self._assert_met(seen)
        return seen

    def assert_closed(self, path: str, reason: str, **which: object) -> PathSeen:
        """Down with exactly this reason, no connect latency, and the check table agrees."""
        seen = self.seen(path, **which)  # type: ignore[arg-type]
        assert (seen.up, seen.reason) == (0.0, reason), f"{self.role}: {path} should be {reason}: {seen}\n{self}"
        assert seen.latency is None, f"{self.role}: {path} has a latency though nothing connected: {seen}"
        assert seen.row is not None and (seen.row.observed, seen.row.reason) == ("closed", reason), \
            f"{self.role}: check disagrees on {path}\n{self}"
        self._assert_met(seen)
        return seen

    def _assert_met(self, seen: PathSeen) -> None:
        observed = "open" if seen.up else "closed"
        met = 1.0 if observed == seen.expect else 0.0
        assert seen.met == met, f"{self.role}: illiad_port_expectation_met for {seen.path} should be {met}: {seen}"
        assert seen.row is not None and seen.row.verdict == ("ok" if met else "FAIL"), \
            f"{self.role}: check verdict for {seen.path}\n{self}"

    def __str__(self) -> str:
        return f"--- check from {self.role} exited {self.check_rc}:\n{self.check_output}"


def _same_probe(labels: dict[str, str], probe: dict[str, str]) -> bool:
    return all(labels.get(k) == probe[k] for k in ("site", "vantage", "path", "host", "port"))


# -- the site ----------------------------------------------------------------------------------


class Lab:
    """The whole site: :meth:`start` builds it, :meth:`stop` removes every trace of it."""

    def __init__(self, workdir: Path, ca: trustme.CA) -> None:
        self.workdir = workdir
        self.ca = ca
        self.topology = Topology()
        self.peers: list[Peer] = []
        self.config = workdir / "illiad.yml"

    def netns(self, role: str) -> str:
        return self.topology.netns(role)

    def start(self) -> Lab:
        self.topology.build()
        self.reset_firewalls()
        self._write_config()
        self._start_peers()
        self._start_exporters()
        return self

    def stop(self) -> None:
        # Signal everyone first so slow exits (tdspool takes seconds) overlap.
        for peer in self.peers:
            if peer.process is not None and peer.process.poll() is None:
                peer.process.send_signal(signal.SIGTERM)
        for peer in self.peers:
            peer.stop()
        self.peers.clear()
        self.topology.destroy()  # also kills, by pid, anything still running inside

    def _write_config(self) -> None:
        ca = self.workdir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(ca))
        hosts = "\n".join(f"    {name}: [{BY_ROLE[role].address}]" for name, role in NAMES.items())
        self.config.write_text(CONFIG.format(hosts=hosts, site=SITE, ca=ca, patron_port=PATRON_API_PORT))

    def _start(self, peer: Peer) -> None:
        self.peers.append(peer)
        peer.start()

    def _start_peers(self) -> None:
        certs = self.workdir / "certs"
        certs.mkdir()
        web = write_cert(self.ca, certs, "web", "illiad.example.edu")
        partner = write_cert(self.ca, certs, "partner", "partner.example.org")
        public = write_cert(self.ca, certs, "public", *PUBLIC_TLS_NAMES)
        # role -> (certificate, extra plain ports): the ILLiad web server and the partner
        # library's each with Odyssey; the OCLC/vendor stand-in also answers PatronAPI.
        for role, files, extra in (("web_server", web, (7968,)), ("external", partner, (7968,)),
                                   ("public", public, (PATRON_API_PORT,))):
            host = BY_ROLE[role]
            workdir = self.workdir / f"nginx-{host.short}"
            locations = LIBRARY_LOCATIONS.format(dir=workdir) if role == "public" else None
            argv = nginx_argv(workdir, cert=files.cert, key=files.key, https_port=443, http_port=80, host=host.address,
                              extra_ports=extra, locations=locations)
            self._start(NetnsPeer(self.netns(role), argv, address=host.address, port=443,
                                  log=self.workdir / f"nginx-{host.short}" / "stdout.log"))
        sql_dir = self.workdir / "tdspool"
        sql_dir.mkdir()
        # Answers PRELOGIN with no backend (min pool conn = 0): no database is ever contacted.
        (sql_dir / "pool.conf").write_text(TDSPOOL_CONF.format(port=1433))
        (sql_dir / "freetds.conf").write_text("[global]\n")  # not the machine's FreeTDS config
        self._start(NetnsPeer(self.netns("sql_server"), [need_binary("tdspool", "freetds-bin"), "-c",
                                                         str(sql_dir / "pool.conf"), "ILLIAD"],
                              address=BY_ROLE["sql_server"].address, port=1433, cwd=sql_dir,
                              env={**os.environ, "FREETDSCONF": str(sql_dir / "freetds.conf")},
                              log=sql_dir / "tdspool.log", stop_timeout=5.0))

    def _start_exporters(self) -> None:
        for role in VANTAGES:
            address = BY_ROLE[role].address
            argv = [sys.executable, "-m", "illiad_exporter", "serve", "--config.file", str(self.config),
                    "--vantage", role, "--web.listen-address", f"{address}:{EXPORTER_PORT}"]
            self._start(NetnsPeer(self.netns(role), argv, address=address, port=EXPORTER_PORT,
                                  log=self.workdir / f"exporter-{role}.log", ready_timeout=30.0))

    # -- firewalls -----------------------------------------------------------------------

    def reset_firewalls(self) -> None:
        """Every host's firewall back to the site's standing rules."""
        self.topology.flush_firewalls()
        for role, rules in BASELINE_FIREWALL.items():
            self.topology.nft(role, rules)

    def firewall(self, role: str, hook: str, rule: str) -> None:
        """Add one rule in ``role``'s namespace, run before the standing rules of that hook."""
        self.topology.nft(role, f"""
table inet scenario {{
    chain {hook} {{
        type filter hook {hook} priority -10; policy accept;
        {rule}
    }}
}}
""")

    # -- looking -------------------------------------------------------------------------

    def scrape(self, role: str) -> list[Sample]:
        url = f"http://{BY_ROLE[role].address}:{EXPORTER_PORT}/metrics"
        request = urllib.request.Request(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy from the environment

        def get() -> str:
            with opener.open(request, timeout=SCRAPE_TIMEOUT + 5) as answer:
                return answer.read().decode()

        text = in_netns(self.netns(role), get, timeout=SCRAPE_TIMEOUT + 10)
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def check(self, role: str) -> tuple[int, str]:
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns(role), sys.executable, "-m", "illiad_exporter", "check",
             "--config.file", str(self.config), "--vantage", role],
            capture_output=True, text=True, timeout=30)
        assert done.returncode in (0, 1), f"check from {role} failed to run ({done.returncode}):\n{done.stderr}"
        return done.returncode, done.stdout

    def observe(self, roles: Iterable[str] = VANTAGES) -> dict[str, Observation]:
        """Scrape each role's exporter and run check in each role's host, all at once."""
        roles = list(roles)
        with ThreadPoolExecutor(max_workers=2 * len(roles)) as pool:
            scrapes = {role: pool.submit(self.scrape, role) for role in roles}
            checks = {role: pool.submit(self.check, role) for role in roles}
            seen = {role: Observation(role, scrapes[role].result(), *checks[role].result()) for role in roles}
        for role, observation in seen.items():
            from_table = {(row.path, row.target) for row in observation.rows.values()}
            from_metrics = {(path, f"{host}:{port}") for path, host, port in observation.probes()}
            assert from_table == from_metrics, f"{role}: check and the exporter probed different paths\n{observation}"
        return seen

    def latencies(self, role: str, scrapes: int = 5) -> dict[str, list[float]]:
        """Each path's connect latencies over a few scrapes, one after another (each scrape
        probes anew). Judge a path by the least of them: a busy CPU only ever adds to a
        sample, so the least is the path's own latency, at or above any delay the link adds."""
        found: dict[str, list[float]] = {}
        for _ in range(scrapes):
            for s in self.scrape(role):
                if s.name == "illiad_port_latency_seconds" and s.labels.get("site") == SITE:
                    found.setdefault(s.labels["path"], []).append(s.value)
        return found
