"""`illiad-exporter availability` against a real Prometheus holding three days of history with
known outages (written as OpenMetrics and backfilled with promtool), and the hourly records
of alerts/illiad-availability.rules.yml backfilled from that data by promtool: the command
reports exactly the outages written, their lengths to the scrape interval, the availability
to 0.1%, the same figures as the records; and every bad input is one line and exit code 2."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import trustme
import yaml

from illiad_exporter import availability
from illiad_exporter.availability import PrometheusAccess, PrometheusClient, measure

from .certs import write_cert
from .fakes import ThreadedServer, garbage, hold_silently
from .peers import Peer, free_port, need_binary, nginx_argv, prometheus_peer
from .readme_blocks import lab_block

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "illiad-availability.rules.yml"
START = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc).timestamp()
END = START + 3 * 86400
SCRAPE = 60  # one sample a minute, at 30 s past it (as a scrape's offset would put it)
README_COMMAND = "illiad-exporter availability --prometheus http://prometheus:9090 --from 2026-11-02 --to 2026-11-05"
README_URL = "http://prometheus:9090"
PASSWORD = "report-secret"


def at(day: int, clock: str) -> float:
    """A time on 2026-11-0<day>, e.g. at(2, "02:00")."""
    hours, minutes = map(int, clock.split(":"))
    return dt.datetime(2026, 11, day, hours, minutes, tzinfo=dt.timezone.utc).timestamp()


@dataclass(frozen=True)
class History:
    site: str
    path: str
    required: bool
    targets: tuple[tuple[str, int], ...]
    failing: tuple[tuple[float, float, str], ...] = ()  # [from, to) minutes with the reason
    unknown: tuple[tuple[float, float], ...] = ()  # [from, to): no verdict (the exporter could not tell)
    never_known: bool = False


# The history: (site, path) with the minutes it failed (each failed sample is at :30 of its minute).
PATHS = (
    History("main-library", "oclc_webservices", True, (("oclc.example.org", 443),), failing=(
        (at(2, "02:00"), at(2, "02:30"), "timeout"), (at(3, "02:00"), at(3, "02:30"), "timeout"),
        (at(4, "02:00"), at(4, "02:30"), "timeout"), (at(3, "14:10"), at(3, "14:15"), "refused"))),
    History("main-library", "sql", True, (("sql.example.edu", 1433),),
          failing=((at(4, "09:45"), at(4, "11:15"), "refused"),)),
    History("main-library", "odyssey", True, (("odyssey.example.edu", 1221),),
          unknown=((at(2, "12:00"), at(2, "13:00")),)),
    History("main-library", "article_exchange", False, (("ae.example.org", 443),), never_known=True),
    History("law-library", "oclc_webservices", True, (("oclc.example.org", 443), ("oclc2.example.org", 443)),
          failing=((at(4, "23:50"), END, "timeout"),)),
)
VANTAGE = "web_server"


def _inside(minute: float, spans: tuple[tuple[float, ...], ...]) -> tuple[float, ...] | None:
    return next((s for s in spans if s[0] <= minute < s[1]), None)


def openmetrics() -> str:
    """The history as OpenMetrics, as the exporter's scrapes would have stored it."""
    minutes = [START + i * SCRAPE for i in range(int((END - START) // SCRAPE))]
    families: dict[str, list[str]] = {"illiad_path_expectation_met": [], "illiad_path_info": [],
                                      "illiad_probe_failure_reason": []}
    for p in PATHS:
        base = f'job="illiad-sites",instance="{p.site}",site="{p.site}",vantage="{VANTAGE}",path="{p.path}"'
        required = "true" if p.required else "false"
        for minute in minutes:
            ts = minute + 30
            fail = _inside(minute, p.failing)
            if not p.never_known and not _inside(minute, p.unknown):
                families["illiad_path_expectation_met"].append(
                    f'illiad_path_expectation_met{{{base},required="{required}"}} {0 if fail else 1} {ts}')
            for host, port in p.targets:
                target = f'{base},host="{host}",port="{port}",expect="open"'
                families["illiad_path_info"].append(
                    f'illiad_path_info{{{target},prober="tls",required="{required}"}} 1 {ts}')
                if fail:
                    families["illiad_probe_failure_reason"].append(
                        f'illiad_probe_failure_reason{{{target},reason="{fail[2]}"}} 1 {ts}')
    out = []
    for name, lines in families.items():
        out.append(f"# TYPE {name} gauge")
        out += sorted(lines, key=lambda line: (line.rsplit(" ", 2)[0], float(line.rsplit(" ", 1)[1])))
    return "\n".join(out) + "\n# EOF\n"


def expected() -> dict[tuple[str, str], dict[str, object]]:
    """What the command must report of each path: exact outages and sample counts."""
    found = {}
    for p in PATHS:
        total = int((END - START) // SCRAPE)
        failed = sum(int((b - a) // SCRAPE) for a, b, _ in p.failing)
        unknown = total if p.never_known else sum(int((b - a) // SCRAPE) for a, b in p.unknown)
        known = total - unknown
        found[(p.site, p.path)] = {
            "samples_known": known, "samples_met": known - failed, "samples_unknown": unknown,
            "availability": (known - failed) / known if known else None,
            "outages": sorted((a, b, [f"{reason} ({host}:{port})" for host, port in p.targets]) for a, b, reason in p.failing),
        }
    return found


def _ready(base: str, context: ssl.SSLContext | None = None, auth: str | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request(f"{base}/-/ready", headers={"Authorization": auth} if auth else {})
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as answer:  # noqa: S310 (loopback)
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, "Prometheus did not become ready"
        time.sleep(0.3)


@dataclass(frozen=True)
class Prom:
    url: str
    ca: Path | None = None
    password_file: Path | None = None

    def args(self) -> list[str]:
        extra = ["--prometheus", self.url]
        if self.ca:
            extra += ["--ca-file", str(self.ca)]
        if self.password_file:
            extra += ["--basic-auth-user", "reporter", "--basic-auth-password-file", str(self.password_file)]
        return extra

    def client(self) -> PrometheusClient:
        return PrometheusClient(PrometheusAccess(self.url, "reporter" if self.password_file else None,
                                                 str(self.password_file) if self.password_file else None,
                                                 ca_file=str(self.ca) if self.ca else None))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TSDB directory holding the history (no records)."""
    promtool = need_binary("promtool", "prometheus")
    work = tmp_path_factory.mktemp("history")
    source = work / "history.om"
    source.write_text(openmetrics())
    data = work / "data"
    done = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return data


def _start(binary: str, directory: Path, data: Path, *extra: str, rules: bool) -> Peer:
    config = directory / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1m"},
                                      "rule_files": [str(RULES)] if rules else []}))
    if data != directory / "data":
        shutil.copytree(data, directory / "data")
    return prometheus_peer(binary, config, "--storage.tsdb.retention.time=100y", *extra).start()


@pytest.fixture(scope="module")
def raw_prometheus(history: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    """Prometheus on the history alone, without the availability rules."""
    binary = need_binary("prometheus", "prometheus")
    peer = _start(binary, tmp_path_factory.mktemp("raw"), history, rules=False)
    try:
        base = f"http://127.0.0.1:{peer.port}"
        _ready(base)
        yield Prom(base)
    finally:
        peer.stop()


@pytest.fixture(scope="module")
def prometheus(raw_prometheus: Prom, history: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    """Prometheus with the history, the availability rules loaded and their hourly records
    backfilled by promtool from the raw one; served over TLS with basic auth."""
    promtool = need_binary("promtool", "prometheus")
    binary = need_binary("prometheus", "prometheus")
    work = tmp_path_factory.mktemp("full")
    records = work / "records"
    # The records fall at an offset in the hour that Prometheus hashes from the group's name and
    # file: the file is named alike wherever the checkout is, so the offset (and the README's
    # output) is the same everywhere.
    shutil.copy2(RULES, work / RULES.name)
    done = subprocess.run([promtool, "tsdb", "create-blocks-from", "rules", f"--start={int(START)}",
                           f"--end={int(END) + 3600}", f"--url={raw_prometheus.url}", f"--output-dir={records}",
                           RULES.name], capture_output=True, text=True, timeout=300, cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.copytree(history, work / "data")
    for block in records.iterdir():
        shutil.copytree(block, work / "data" / block.name)
    ca = trustme.CA()
    cert = write_cert(ca, work / "tls", "prometheus", "127.0.0.1")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = work / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(cert.cert), "key_file": str(cert.key)},
                                   "basic_auth_users": {"reporter": hashed}}))
    password_file = work / "password"
    password_file.write_text(PASSWORD + "\n")
    peer = _start(binary, work, work / "data", f"--web.config.file={web}", rules=True)
    try:
        base = f"https://127.0.0.1:{peer.port}"
        context = ssl.create_default_context(cafile=str(cert.ca))
        _ready(base, context, "Basic " + base64.b64encode(f"reporter:{PASSWORD}".encode()).decode())
        yield Prom(base, cert.ca, password_file)
    finally:
        peer.stop()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "illiad_exporter", "availability", *args], capture_output=True,
                          text=True, timeout=120)


def _ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_it_reports_exactly_the_outages_written_and_the_availability(prometheus: Prom) -> None:
    """Each outage written, start and end to the minute it began and ended (the scrape
    interval), its failure reasons with the target; availability to 0.1% (here exact); the
    unknown hour counted neither way; a path never known is 'no data', not 100%."""
    done = run(*prometheus.args(), "--from", "2026-11-02", "--to", "2026-11-05", "--output", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["start"], report["end"], report["step_seconds"]) == (_iso(START), _iso(END), SCRAPE)
    got = {(p["site"], p["path"]): p for p in report["paths"]}
    want = expected()
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert (g["samples_known"], g["samples_met"], g["samples_unknown"]) == (
            w["samples_known"], w["samples_met"], w["samples_unknown"]), key
        if w["availability"] is None:
            assert g["availability"] is None and g["outages"] == 0, key
        else:
            assert g["availability"] == pytest.approx(w["availability"], abs=0.001), key
        # Start: the step (one scrape interval) that holds the first failed sample (at a + 30 s);
        # end: the start of the step that holds the first met one (b + 30 s). Lengths to the step.
        outages = g["outage_list"]
        assert len(outages) == len(w["outages"]), key
        for o, (a, b, reasons) in zip(outages, w["outages"]):
            start, end = _ts(o["start"]), _ts(o["end"])
            assert a + 30 - SCRAPE < start <= a + 30 and min(b + 30, END) - SCRAPE < end <= b + 30, (key, o)
            assert abs(o["seconds"] - (b - a)) < SCRAPE and sorted(o["reasons"]) == sorted(reasons), (key, o)
        assert abs(g["down_seconds"] - sum(b - a for a, b, _ in w["outages"])) < SCRAPE * max(1, len(outages))
    oclc = got[("main-library", "oclc_webservices")]
    assert (oclc["outages"], oclc["longest_seconds"], oclc["down_seconds"]) == (4, 1800, 3 * 1800 + 300)
    assert [o["ongoing"] for o in got[("law-library", "oclc_webservices")]["outage_list"]] == [True]
    # Only the hours with a failure (7) and the range's two ragged edges were read raw; the
    # rest came from the records.
    assert report["hours_from_records"] + report["hours_read_raw"] == 72
    assert report["hours_read_raw"] <= 10 and report["hours_from_records"] >= 62


def test_the_recording_rules_give_the_same_availability(prometheus: Prom) -> None:
    """The README's 30-day query over the hourly records, here over every record that holds
    some of the history (the hour after it too: records end at their group's offset in the
    hour): per path the same share as the command and as written, and the unknown samples."""
    client = prometheus.client()
    met = "illiad_path:illiad_path_expectation_met:sum_over_time_1h"
    count = "illiad_path:illiad_path_expectation_met:count_over_time_1h"
    unknown = "illiad_path:illiad_path_expectation_met:unknown_count_over_time_1h"
    shares = {(r["metric"]["site"], r["metric"]["path"]): float(r["value"][1])
              for r in client.query(f"sum_over_time({met}[3d1h]) / sum_over_time({count}[3d1h])", END + 3600)}
    unknowns = {(r["metric"]["site"], r["metric"]["path"]): float(r["value"][1])
                for r in client.query(f"sum_over_time({unknown}[3d1h])", END + 3600)}
    report = measure(client, START, END)
    for key, w in expected().items():
        if w["availability"] is None:
            assert key not in shares
        else:
            assert shares[key] == pytest.approx(w["availability"], abs=0.001), key
            share = next(p.share for p in report.paths if (p.key.site, p.key.path) == key)
            assert shares[key] == pytest.approx(share, abs=0.001)
        assert unknowns[key] == w["samples_unknown"], key


def test_a_long_range_is_read_in_pages_within_the_point_limit(prometheus: Prom,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With a limit of 100 points a request, the raw reads take many pages and give the same
    result; no request asks for more points than the limit."""
    asked: list[int] = []

    class Counting(PrometheusClient):
        def _call(self, path, params, **kwargs):  # type: ignore[no-untyped-def]
            if path.endswith("query_range"):
                asked.append(int((float(params["end"]) - float(params["start"])) / float(params["step"])) + 1)
            return super()._call(path, params, **kwargs)

    whole = measure(Counting(prometheus.client().access), START, END)
    requests = len(asked)
    asked.clear()
    monkeypatch.setattr(availability, "MAX_POINTS", 100)
    paged = measure(Counting(prometheus.client().access), START, END)
    assert max(asked) <= 100 and len(asked) > requests
    assert [(p.key, p.met, p.known, p.unknown, [(o.start, o.end, o.reasons) for o in p.outages])
            for p in paged.paths] == [(p.key, p.met, p.known, p.unknown,
                                       [(o.start, o.end, o.reasons) for o in p.outages]) for p in whole.paths]


def test_site_limits_the_report_to_one_site(prometheus: Prom) -> None:
    """--site reads only that site's series: the other site's paths are not in the report."""
    done = run(*prometheus.args(), "--from", "2026-11-02", "--to", "2026-11-05", "--site", "law-library",
               "--output", "json")
    assert done.returncode == 0, done.stderr
    assert {(p["site"], p["path"]) for p in json.loads(done.stdout)["paths"]} == {("law-library", "oclc_webservices")}


def test_the_readme_shows_this_output(prometheus: Prom) -> None:
    """The README's block is what the command prints for this history (the URL aside)."""
    args = README_COMMAND.split()[2:]
    args[args.index("--prometheus") + 1] = prometheus.url
    done = run(*args[:], *prometheus.args()[2:])
    assert done.returncode == 0, done.stderr
    assert done.stdout.replace(prometheus.url, README_URL) == lab_block(README_COMMAND)


def test_markdown_and_html_say_the_same(prometheus: Prom) -> None:
    """The Markdown has the table and the outages; the HTML page is self-contained (no script,
    no file or address it loads) and marks the path with no data as such."""
    common = [*prometheus.args(), "--from", "2026-11-02", "--to", "2026-11-05"]
    markdown = run(*common, "--output", "markdown")
    assert markdown.returncode == 0, markdown.stderr
    assert "| main-library | sql | web_server | required | 97.92% | 1 | 1h 30m | 1h 30m | - |" in markdown.stdout
    assert "| main-library | sql | web_server | 2026-11-04 09:44:54 | 2026-11-04 11:14:54 | 1h 30m | " \
           "refused (sql.example.edu:1433) |" in markdown.stdout
    assert "| main-library | article_exchange | web_server | optional | no data | - | - | - | 4320 |" in markdown.stdout
    page = run(*common, "--output", "html")
    assert page.returncode == 0, page.stderr
    text = page.stdout
    assert text.startswith("<!doctype html>") and "<script" not in text and "src=" not in text
    assert "href=" not in text and "@import" not in text
    assert '<tr data-site="main-library" data-path="article_exchange" data-vantage="web_server">' in text
    assert '<td class="num none">no data</td>' in text
    assert text.count("<tr data-site=") == len(PATHS) + 6  # a row per path and per outage


# -- bad input: one line, exit code 2 -------------------------------------------------------------


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.mark.process
def test_an_unreachable_prometheus() -> None:
    """Nothing listens there: one line that names the Prometheus and why, exit 2."""
    port = free_port()
    line = _one_line_error(run("--prometheus", f"http://127.0.0.1:{port}", "--since", "1d"))
    assert line == f"error: cannot reach Prometheus at http://127.0.0.1:{port}: Connection refused"


@pytest.mark.process
def test_a_server_that_stays_silent_or_answers_garbage() -> None:
    """A listener that accepts and never answers is a timeout after --timeout; one that sends
    bytes that are not HTTP is named as such (not the bytes): each one line."""
    with ThreadedServer(hold_silently) as silent:
        url = f"http://127.0.0.1:{silent.port}"
        assert _one_line_error(run("--prometheus", url, "--timeout", "1", "--since", "1d")) == (
            f"error: cannot reach Prometheus at {url}: timed out")
    with ThreadedServer(garbage) as noise:
        url = f"http://127.0.0.1:{noise.port}"
        line = _one_line_error(run("--prometheus", url, "--timeout", "2", "--since", "1d"))
        assert line.startswith(f"error: cannot reach Prometheus at {url}: the answer is not HTTP ("), line


def test_a_prometheus_that_refuses_the_credentials(prometheus: Prom, tmp_path: Path) -> None:
    """Prometheus with basic auth: no credentials or a wrong password is its 401 in one line;
    without --ca-file its certificate is not trusted, also one line."""
    line = _one_line_error(run("--prometheus", prometheus.url, "--ca-file", str(prometheus.ca), "--since", "1d"))
    assert line.startswith(f"error: Prometheus at {prometheus.url} refused the request: HTTP 401 Unauthorized")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    line = _one_line_error(run("--prometheus", prometheus.url, "--ca-file", str(prometheus.ca), "--basic-auth-user",
                               "reporter", "--basic-auth-password-file", str(wrong), "--since", "1d"))
    assert "HTTP 401 Unauthorized" in line
    line = _one_line_error(run("--prometheus", prometheus.url, "--since", "1d"))  # no CA: not trusted
    assert line.startswith(f"error: cannot reach Prometheus at {prometheus.url}: ") and "CERTIFICATE" in line


@pytest.mark.peer("nginx")
def test_a_bearer_token_file_is_sent_as_prometheus_clients_send_it(raw_prometheus: Prom, tmp_path: Path) -> None:
    """nginx in front of Prometheus lets through only "Authorization: Bearer <token>" (as an
    auth proxy does): with --bearer-token-file the request reaches Prometheus (which answers
    that it lacks the rules), with another token it is the proxy's 401."""
    token = "s3cr3t-token"
    ca = trustme.CA()
    cert = write_cert(ca, tmp_path / "tls", "proxy", "127.0.0.1")
    port = free_port()
    upstream = raw_prometheus.url.removeprefix("http://")
    locations = (f'        location / {{ if ($http_authorization != "Bearer {token}") {{ return 401 "no"; }} '
                 f"proxy_pass http://{upstream}; }}\n")
    proxy = Peer(nginx_argv(tmp_path / "nginx", cert=cert.cert, key=cert.key, https_port=free_port(),
                            http_port=port, locations=locations), port=port)
    good, bad = tmp_path / "token", tmp_path / "other"
    good.write_text(token + "\n")
    bad.write_text("another-token\n")
    url = f"http://127.0.0.1:{port}"
    with proxy:
        line = _one_line_error(run("--prometheus", url, "--bearer-token-file", str(good), "--since", "1d"))
        assert line.startswith(f"error: Prometheus at {url} does not record availability"), line
        line = _one_line_error(run("--prometheus", url, "--bearer-token-file", str(bad), "--since", "1d"))
        assert line.startswith(f"error: Prometheus at {url} refused the request: HTTP 401 Unauthorized"), line


def test_a_range_with_no_data(prometheus: Prom) -> None:
    """A month before the history, or a site Prometheus never saw: "no data", exit 2."""
    line = _one_line_error(run(*prometheus.args(), "--from", "2026-10-01", "--to", "2026-10-02"))
    assert line == (f"error: no data: Prometheus at {prometheus.url} holds no illiad series between "
                    "2026-10-01 00:00:00 UTC and 2026-10-02 00:00:00 UTC")
    line = _one_line_error(run(*prometheus.args(), "--from", "2026-11-02", "--to", "2026-11-05",
                               "--site", "no-such-library"))
    assert "no data" in line and "for site no-such-library" in line


def test_a_prometheus_without_the_recording_rules(raw_prometheus: Prom) -> None:
    """The history is there but not the availability rules: the line says which file to load."""
    line = _one_line_error(run("--prometheus", raw_prometheus.url, "--from", "2026-11-02", "--to", "2026-11-05"))
    assert line == (f"error: Prometheus at {raw_prometheus.url} does not record availability (no rule "
                    "illiad_path:illiad_path_expectation_met:count_over_time_1h): add illiad-availability.rules.yml "
                    "to its rule_files (`illiad-exporter assets DIR` writes it)")


@pytest.mark.process
def test_bad_arguments() -> None:
    """A URL without a scheme, a duration or time it cannot read, a range backwards, a token
    file that is not there: each one line before any request, exit 2."""
    assert _one_line_error(run("--prometheus", "prometheus:9090")) == (
        "error: --prometheus 'prometheus:9090': give an http:// or https:// URL")
    assert _one_line_error(run("--prometheus", "http://127.0.0.1:9", "--since", "30 days")) == (
        "error: '30 days' is not a duration such as 30d, 12h or 1w")
    assert _one_line_error(run("--prometheus", "http://127.0.0.1:9", "--from", "yesterday")).startswith(
        "error: 'yesterday' is not a time")
    assert _one_line_error(run("--prometheus", "http://127.0.0.1:9", "--from", "2026-11-05", "--to", "2026-11-02")) == (
        "error: the range is empty: --from must be before --to")
    assert _one_line_error(run("--prometheus", "http://127.0.0.1:9", "--bearer-token-file", "/nonexistent")) == (
        "error: bearer token file /nonexistent: No such file or directory")


# -- what counts as one outage (no Prometheus needed) --------------------------------------------


def _timeline(states: str, step: float = 60.0) -> list[tuple[float, float, list[float]]]:
    """Windows of one step from 0: '+' every sample met, '-' not met, '?' unknown (no verdict),
    '~' mixed (one met, one not)."""
    counts = {"+": [1.0, 1.0, 1.0], "-": [0.0, 1.0, 1.0], "?": [0.0, 0.0, 1.0], "~": [1.0, 2.0, 2.0]}
    return [(i * step, (i + 1) * step, counts[s]) for i, s in enumerate(states)]


def _found(states: str, *, last: bool = True) -> list[tuple[float, float, bool]]:
    return [(o.start, o.end, o.ongoing)
            for o in availability.find_outages(_timeline(states), len(states) * 60.0, last=last)]


def test_an_outage_runs_from_its_first_failed_step_to_the_first_step_all_met() -> None:
    """Its start is the start of the first step with a failed sample, its end the start of the
    first step whose samples were all met; a step with both is part of it."""
    assert _found("++---++") == [(120, 300, False)]
    assert _found("+~--~+") == [(60, 300, False)]  # mixed steps: failed samples in them


def test_an_unknown_gap_of_five_minutes_or_less_does_not_split_an_outage() -> None:
    """The exporter could not tell for 5 minutes in the middle: still one outage, to the first
    met step; after a longer gap, two, the first ending at its last failed step."""
    assert _found("+--?????-+") == [(60, 540, False)]
    assert _found("+--??????-+") == [(60, 180, False), (540, 600, False)]


def test_an_outage_at_the_end_of_the_range_is_still_failing() -> None:
    """Failing up to the range's end: still failing (ongoing), ended at its last failed step;
    a raw span that ends where a clean hour begins ends the outage there."""
    assert _found("++--") == [(120, 240, True)]
    assert _found("++--??????") == [(120, 240, False)]  # it stopped being known long before the end
    # a raw span that ends where a clean hour begins: the path was met right after it
    assert _found("++--", last=False) == [(120, 240, False)]
    assert _found("++--??", last=False) == [(120, 360, False)]
