"""--probe-workers N: worker processes probe shares of the sites behind the one endpoint.

Each test runs the real exporter (`illiad-exporter serve --probe-workers N`) against loopback
listeners that count the connections they accept, and checks what a user relies on: every
path probed exactly once per scrape, one answer with one header per family, overlapping
scrapes sharing a probe, reloads reaching the workers (and failed ones not), a killed worker
blamed on the exporter and replaced, and no process left behind after SIGTERM.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from illiad_exporter.probers import ProbeResult, ProbeTarget
from illiad_exporter.catalog import Expect
from illiad_exporter.probers.base import ProberOptions
from illiad_exporter.scrape import Outcome
from illiad_exporter.deflate import Deflated, gzip_body, plain_body
from illiad_exporter.metrics import render_outcomes, write_sections, join_sections
from illiad_exporter.workers import share_sites

from .exporter_process import PUBLIC_PATHS, exporter, fetch, log_text, wait_until
from .fakes import ThreadedServer, hold_silently, slow_http_ok
from .peers import Peer, missing


def _config(path: Path, sites: dict[str, tuple[str, int]]) -> Path:
    """One path per site: site name -> (prober, port) on 127.0.0.1; the catalog's paths to
    public hosts switched off (none starts at the external vantage today; none ever will here)."""
    lines = ["defaults: {timeout: 3s, system_resolver: false}", "sites:"]
    off = ", ".join(f"{path_id}: {{enabled: false}}" for path_id in PUBLIC_PATHS)
    for name, (prober, port) in sites.items():
        lines.append(f"  - {{name: {name}, paths: {{{off}}}, custom: [{{name: door, from: [external], "
                     f"host: 127.0.0.1, port: {port}, prober: {prober}}}]}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _each_its_site(servers: list[ThreadedServer], prober: str = "tcp") -> dict[str, tuple[str, int]]:
    return {f"lib{i}": (prober, s.port) for i, s in enumerate(servers)}


def _with_workers(tmp_path: Path, sites: dict[str, tuple[str, int]], *extra: str, workers: int = 2,
                  env: dict[str, str] | None = None) -> tuple[Peer, str]:
    """An exporter (external vantage) with probe workers, on a config of ``sites``."""
    return exporter(_config(tmp_path / "illiad.yml", sites), tmp_path, "--probe-workers", str(workers), *extra,
                    vantage="external", env=env)


@contextmanager
def _listeners(count: int, handler=hold_silently) -> Iterator[list[ThreadedServer]]:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        yield [stack.enter_context(ThreadedServer(handler)) for _ in range(count)]


def _accepted(servers: list[ThreadedServer], expected: list[int]) -> list[int]:
    """The listeners' accept counts once they reach ``expected`` (their accept threads may
    lag the handshake the kernel completed), or as they stand after 5 s."""
    deadline = time.monotonic() + 5.0
    while any(s.accepted < e for s, e in zip(servers, expected)) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # and nothing more arrives
    return [s.accepted for s in servers]


def _series(text: str, name: str) -> dict[str, float]:
    """site -> value of ``name`` (one series per site in these configs)."""
    return {s.labels["site"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name}


def _worker_pids(log: str) -> dict[int, int]:
    """worker index -> pid, from the serving process's log (the latest start of each)."""
    found: dict[int, int] = {}
    for line in log.splitlines():
        if "probe worker started" in line:
            worker, pid = re.search(r"worker=(\d+)", line), re.search(r"pid=(\d+)", line)
            if worker and pid:
                found[int(worker.group(1))] = int(pid.group(1))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.process
@pytest.mark.parametrize("start, event_loop", [("forkserver", "asyncio"), ("spawn", "asyncio"),  # spawn: as on
                                               ("forkserver", "uvloop")])  # Windows and macOS
def test_every_path_is_probed_once_and_the_answer_is_one_exposition(tmp_path: Path, start: str,
                                                                    event_loop: str) -> None:
    """600 sites over 3 workers: each path is probed exactly once per scrape (12 listeners,
    50 sites each), and the answer is what one process says (the same series), each family
    once. The plans and answers are longer than a pipe holds (64 KiB), as a consortium's are."""
    if event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        missing("uvloop (the [fast] extra, in the test extra too) is not installed")
    with _listeners(12) as servers:
        sites = {f"lib{i:03d}": ("tcp", servers[i % 12].port) for i in range(600)}
        config = _config(tmp_path / "illiad.yml", sites)
        single, url1 = exporter(config, tmp_path, vantage="external")
        with single:
            status, alone = fetch(f"{url1}/metrics")
        assert status == 200
        assert _accepted(servers, [50] * 12) == [50] * 12
        peer, url = exporter(config, tmp_path, "--probe-workers", "3", "--event-loop", event_loop, vantage="external",
                             env={"ILLIAD_EXPORTER_PROBE_WORKER_START": start})
        with peer:
            status, text = fetch(f"{url}/metrics")
            assert status == 200
            assert _accepted(servers, [100] * 12) == [100] * 12  # 50 more each: one probe per path
            assert len(_worker_pids(log_text(peer))) == 3
            assert "probe worker lost" not in log_text(peer)
    assert _series(text, "illiad_port_up") == {name: 1.0 for name in sites}
    assert _series(text, "illiad_path_expectation_met") == {name: 1.0 for name in sites}
    for family in ("illiad_port_up", "illiad_probe_duration_seconds", "illiad_path_expectation_met"):
        assert text.count(f"# TYPE {family} gauge\n") == 1
    path_series = {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text)
                   for s in f.samples if s.name.startswith("illiad_") and "site" in s.labels}
    alone_series = {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(alone)
                    for s in f.samples if s.name.startswith("illiad_") and "site" in s.labels}
    assert path_series == alone_series


@pytest.mark.process
def test_a_share_of_several_parts_answers_as_one_process_does(tmp_path: Path) -> None:
    """1,200 paths over 2 workers: 600 each, so each writes and sends its answer in parts
    (workers.PART_TARGETS, 500), which the serving process puts together: every path once,
    the same series as one process, each family once."""
    with _listeners(12) as servers:
        lines = ["defaults: {timeout: 3s, system_resolver: false}", "sites:"]
        off = ", ".join(f"{path_id}: {{enabled: false}}" for path_id in PUBLIC_PATHS)
        for i in range(120):
            customs = ", ".join(f"{{name: p{p}, from: [external], host: 127.0.0.1, port: {servers[i % 12].port}}}"
                                for p in range(10))
            lines.append(f"  - {{name: lib{i:03d}, paths: {{{off}}}, custom: [{customs}]}}")
        config = tmp_path / "illiad.yml"
        config.write_text("\n".join(lines) + "\n")
        single, url1 = exporter(config, tmp_path, vantage="external")
        with single:
            status, alone = fetch(f"{url1}/metrics")
        assert status == 200
        peer, url = exporter(config, tmp_path, "--probe-workers", "2", vantage="external")
        with peer:
            status, text = fetch(f"{url}/metrics")
            assert status == 200
            assert _accepted(servers, [200] * 12) == [200] * 12  # 100 each a scrape: one probe per path
            assert "probe worker lost" not in log_text(peer)

    def series(exposition: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(exposition)
                for s in f.samples if s.name.startswith("illiad_") and "site" in s.labels}

    ups = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "illiad_port_up"]
    assert len(ups) == 1200 and set(ups) == {1.0}
    assert series(text) == series(alone)
    assert text.count("# TYPE illiad_port_up gauge\n") == 1


@pytest.mark.process
def test_overlapping_scrapes_share_one_probe_in_the_worker_that_owns_the_path(tmp_path: Path) -> None:
    with _listeners(1, slow_http_ok(1.0)) as (slow,), _listeners(3) as others:
        sites = {"slow": ("http", slow.port), **{f"lib{i}": ("tcp", s.port) for i, s in enumerate(others)}}
        peer, url = _with_workers(tmp_path, sites)
        with peer:
            answers: list[tuple[int, str]] = []
            scrapes = [threading.Thread(target=lambda: answers.append(fetch(f"{url}/metrics"))) for _ in range(2)]
            for scrape in scrapes:
                scrape.start()
                time.sleep(0.2)  # the second arrives while the first's slow probe runs
            for scrape in scrapes:
                scrape.join(15)
        assert [status for status, _ in answers] == [200, 200]
        assert _accepted([slow], [1]) == [1]
        for _, text in answers:
            assert _series(text, "illiad_port_up")["slow"] == 1.0


@pytest.mark.process
@pytest.mark.parametrize("limit, probed_in", [
    ("0.75", "serving_process"),  # the default: an idle serving process probes the site itself
    ("0.000001", "worker"),  # busier than that since it started (loading its config): the worker
    ("0", "worker"),  # never in the serving process
])
def test_a_sites_probe_runs_in_the_serving_process_while_it_has_cpu_to_spare(tmp_path: Path, limit: str,
                                                                            probed_in: str) -> None:
    """Crossing a pipe to a worker and back costs a site's ten-odd probes 1.4x the CPU at
    Prometheus' pace (bench/run.py): the serving process probes the site itself while it has
    CPU to spare. Either way: one probe, the same answer, counted by where it ran."""
    with _listeners(2) as servers:
        peer, url = _with_workers(tmp_path, _each_its_site(servers), f"--probe-workers.serving-cpu-limit={limit}")
        with peer:
            time.sleep(0.6)  # more than a window (headroom.WINDOW): a reading, not the first instant
            status, text = fetch(f"{url}/probe?site=lib1")
            assert _accepted(servers, [0, 1]) == [0, 1]
            _, own = fetch(f"{url}/metrics")
    assert status == 200
    assert _series(text, "illiad_port_up") == {"lib1": 1.0}
    assert _series(text, "illiad_path_expectation_met") == {"lib1": 1.0}
    counted = {s.labels["probed_in"]: s.value for f in text_string_to_metric_families(own) for s in f.samples
               if s.name == "illiad_exporter_site_probes_total"}
    assert counted == {"serving_process": 0.0, "worker": 0.0, probed_in: 1.0}


@pytest.mark.process
def test_a_reload_reaches_the_workers_and_a_failed_one_keeps_their_plan(tmp_path: Path) -> None:
    with _listeners(4) as servers:
        peer, url = _with_workers(tmp_path, _each_its_site(servers[:3]))
        config = tmp_path / "illiad.yml"
        with peer:
            assert set(_series(fetch(f"{url}/metrics")[1], "illiad_port_up")) == {"lib0", "lib1", "lib2"}
            _config(config, _each_its_site(servers))
            assert fetch(f"{url}/-/reload", method="POST")[0] == 200
            assert set(_series(fetch(f"{url}/metrics")[1], "illiad_port_up")) == {"lib0", "lib1", "lib2", "lib3"}
            assert _accepted(servers[3:], [1]) == [1]
            config.write_text("sites: [{name: broken, custom: [{name: door}]}]\n")
            status, body = fetch(f"{url}/-/reload", method="POST")
            assert status == 500 and "keeping the running one" in body
            assert set(_series(fetch(f"{url}/metrics")[1], "illiad_port_up")) == {"lib0", "lib1", "lib2", "lib3"}
            assert _accepted(servers, [3, 3, 3, 2]) == [3, 3, 3, 2]


@pytest.mark.process
@pytest.mark.parametrize("start", ["forkserver", "spawn"])
def test_a_worker_killed_during_a_scrape_is_blamed_on_the_exporter_and_replaced(tmp_path: Path, start: str) -> None:
    """The paths it was probing read reason exporter (verdict unknown: no library alert),
    the not-run counter says no_worker, and the next scrape has a new worker probing them."""
    with _listeners(6, slow_http_ok(1.5)) as servers:
        sites = _each_its_site(servers, "http")
        peer, url = _with_workers(tmp_path, sites, env={"ILLIAD_EXPORTER_PROBE_WORKER_START": start})
        with peer:
            victim = wait_until(lambda: _worker_pids(log_text(peer)).get(1), what="worker 1", timeout=30)
            answers: list[tuple[int, str]] = []
            scrape = threading.Thread(target=lambda: answers.append(fetch(f"{url}/metrics")))
            scrape.start()
            wait_until(lambda: sum(s.accepted for s in servers) == 6 or None, what="every probe to connect")
            os.kill(victim, signal.SIGKILL)
            scrape.join(15)
            ((status, text),) = answers
            assert status == 200
            reasons = {s.labels["site"]: s.labels["reason"] for f in text_string_to_metric_families(text)
                       for s in f.samples if s.name == "illiad_probe_failure_reason" and s.value == 1}
            lost = set(reasons)
            assert lost and lost < set(sites) and set(reasons.values()) == {"exporter"}
            assert _series(text, "illiad_port_up") == {name: 0.0 if name in lost else 1.0 for name in sites}
            assert set(_series(text, "illiad_path_expectation_met")) == set(sites) - lost  # unknown: absent
            not_run = {s.labels["cause"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
                       if s.name == "illiad_exporter_probes_not_run_total"}
            assert not_run["no_worker"] == len(lost)
            status, text = fetch(f"{url}/metrics")
            assert _series(text, "illiad_port_up") == {name: 1.0 for name in sites}
            assert _worker_pids(log_text(peer))[1] != victim
            assert "probe worker lost" in log_text(peer)


@pytest.mark.process
def test_a_worker_killed_between_scrapes_is_replaced_before_the_next(tmp_path: Path) -> None:
    with _listeners(4) as servers:
        sites = _each_its_site(servers)
        peer, url = _with_workers(tmp_path, sites)
        with peer:
            victim = wait_until(lambda: _worker_pids(log_text(peer)).get(0), what="worker 0")
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: "probe worker lost" in log_text(peer), what="the loss to be noticed")
            status, text = fetch(f"{url}/metrics")
            assert status == 200 and _series(text, "illiad_port_up") == {name: 1.0 for name in sites}
            assert _worker_pids(log_text(peer))[0] != victim
            assert _accepted(servers, [1] * 4) == [1] * 4


@pytest.mark.process
@pytest.mark.parametrize("start", ["forkserver", "spawn"])
def test_a_worker_killed_by_a_signal_is_logged_with_the_signal(tmp_path: Path, start: str) -> None:
    """A worker the kernel or an operator kills (the OOM killer sends SIGKILL) is logged with
    the signal that ended it, never exit_code=None (its pipe closes before its exit is
    reaped; the forkserver hands the status over its own pipe)."""
    with _listeners(2) as servers:
        peer, url = _with_workers(tmp_path, _each_its_site(servers), env={"ILLIAD_EXPORTER_PROBE_WORKER_START": start})
        with peer:
            victim = wait_until(lambda: _worker_pids(log_text(peer)).get(0), what="worker 0", timeout=30)
            os.kill(victim, signal.SIGKILL)
            lost = wait_until(lambda: [line for line in log_text(peer).splitlines() if "probe worker lost" in line],
                              what="the loss to be logged")
    assert len(lost) == 1
    assert f" worker=0 pid={victim} why=exited signal=SIGKILL" in lost[0], lost[0]
    assert "exit_code" not in lost[0]


@contextmanager
def _scraped_once(tmp_path: Path) -> Iterator[tuple[Peer, list[int]]]:
    """A running exporter with 2 workers that has answered a scrape, and the workers' pids."""
    with _listeners(2) as servers:
        peer, url = _with_workers(tmp_path, _each_its_site(servers))
        with peer:
            assert fetch(f"{url}/metrics")[0] == 200
            workers = list(_worker_pids(log_text(peer)).values())
            assert len(workers) == 2 and all(_alive(pid) for pid in workers)
            yield peer, workers


@pytest.mark.process
def test_workers_are_forked_from_a_copy_of_the_serving_process(tmp_path: Path) -> None:
    """On Linux the workers' parent is a fork of the serving process (the same program and
    arguments, its child), so they share what it imported; no new interpreter imports it
    all again and no resource tracker runs beside them."""
    with _scraped_once(tmp_path) as (peer, workers):
        def stat(pid: int) -> tuple[int, str]:
            return (int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]),
                    Path(f"/proc/{pid}/cmdline").read_text())

        parents = {stat(pid)[0] for pid in workers}
        assert len(parents) == 1
        (fork_server,) = parents
        assert stat(fork_server) == (peer.pid, stat(peer.pid)[1])
        children = [int(c) for t in os.listdir(f"/proc/{peer.pid}/task")
                    for c in Path(f"/proc/{peer.pid}/task/{t}/children").read_text().split()]
        assert children == [fork_server]  # and nothing else (multiprocessing's resource tracker)


@pytest.mark.process
def test_the_workers_share_the_event_loop_the_serving_process_imported(tmp_path: Path) -> None:
    """uvloop is imported before the fork server is made, so the workers share its pages
    rather than each importing it again (3-4 MiB a worker)."""
    if importlib.util.find_spec("uvloop") is None:
        missing("uvloop (the [fast] extra, in the test extra too) is not installed")
    with _listeners(2) as servers:
        peer, url = _with_workers(tmp_path, _each_its_site(servers), "--event-loop", "uvloop")
        with peer:
            assert fetch(f"{url}/metrics")[0] == 200
            workers = list(_worker_pids(log_text(peer)).values())
            (fork_server,) = {int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
                              for pid in workers}
            assert "uvloop/loop." in Path(f"/proc/{fork_server}/maps").read_text()


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.process
def test_the_serving_process_keeps_sharing_its_imports_with_the_fork_server(tmp_path: Path) -> None:
    """What the serving process had when it made the fork server stays frozen in it too,
    through its configs, scrapes and reloads: no collection walks it, so its pages stay
    shared. Thawed at each config, as before, a collection copied about 13 MiB of them:
    the serving process then shared 40% of the fork server's memory, now over 60%."""
    with _scraped_once(tmp_path) as (peer, workers):
        url = f"http://127.0.0.1:{peer.port}"
        assert fetch(f"{url}/-/reload", method="POST")[0] == 200
        assert fetch(f"{url}/metrics")[0] == 200
        time.sleep(1)  # the new config is collected and frozen once no scrape runs (gcpause)
        (fork_server,) = {int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]) for pid in workers}
        shared, whole = _kib(peer.pid, "Shared_Dirty"), _kib(fork_server, "Rss")
        assert shared > 0.6 * whole, (shared, whole)


@pytest.mark.process
def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    with _scraped_once(tmp_path) as (peer, workers):
        session = os.getsid(peer.pid)
        peer.stop()
        assert peer.process is not None and peer.process.returncode == 0
        wait_until(lambda: not any(_alive(pid) and not _zombie(pid) for pid in workers) or None,
                   what="the workers to exit")

        def left() -> list[str]:  # the fork server and resource tracker go when the serving process has
            return [Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in
                    map(int, filter(str.isdigit, os.listdir("/proc"))) if _session_of(pid) == session
                    and not _zombie(pid)]  # exited, waiting for init to reap it

        time.sleep(1.0)
        assert left() == []


@pytest.mark.process
def test_sigterm_to_the_whole_group_still_answers_the_scrape_in_flight(tmp_path: Path) -> None:
    """As systemd stops a service: every process of it gets SIGTERM. The workers leave
    stopping to the serving process, which answers the scrape under way first."""
    with _listeners(4, slow_http_ok(1.0)) as servers:
        peer, url = _with_workers(tmp_path, _each_its_site(servers, "http"))
        with peer:
            wait_until(lambda: len(_worker_pids(log_text(peer))) == 2 or None, what="both workers")
            answers: list[tuple[int, str]] = []
            scrape = threading.Thread(target=lambda: answers.append(fetch(f"{url}/metrics")))
            scrape.start()
            wait_until(lambda: sum(s.accepted for s in servers) == 4 or None, what="every probe to connect")
            os.killpg(peer.pid, signal.SIGTERM)
            scrape.join(15)
            assert peer.process is not None and peer.process.wait(15) == 0
        ((status, text),) = answers
        assert status == 200
        assert _series(text, "illiad_port_up") == {f"lib{i}": 1.0 for i in range(4)}


@pytest.mark.process
def test_workers_exit_by_themselves_when_the_serving_process_is_killed(tmp_path: Path) -> None:
    with _scraped_once(tmp_path) as (peer, workers):
        os.kill(peer.pid, signal.SIGKILL)  # no goodbye: the workers see their inbox close
        wait_until(lambda: not any(_alive(pid) and not _zombie(pid) for pid in workers) or None, timeout=10,
                       what="the orphaned workers to exit")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


# -- the parts: written apart, joined as one ---------------------------------------------------


def _outcome(site: str, up: bool) -> Outcome:
    target = ProbeTarget(site=site, path="door", vantage="external", host="127.0.0.1", port=9, prober="tcp",
                         expect=Expect.OPEN, timeout=1.0, options=ProberOptions())
    result = ProbeResult()
    if up:
        result.up = True
    else:
        from illiad_exporter.probers import Reason

        result.fail(Reason.REFUSED, "refused")
    result.duration = 0.001
    return Outcome(target, result, 0.0)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_joined_parts_are_the_exposition_of_the_whole_byte_for_byte(openmetrics: bool) -> None:
    """The parts come compressed; sent as they are in one gzip body, or decompressed, they
    are exactly one process's answer for the same paths in the same order."""
    outcomes = [_outcome(f"lib{i}", up=i % 3 != 0) for i in range(300)]
    whole = render_outcomes(outcomes, openmetrics=openmetrics).encode()
    parts = [write_sections(outcomes[:4], chunk_lines=3), write_sections(outcomes[4:], chunk_lines=50)]
    # a big part's sections come compressed, a small part's as text
    assert all(isinstance(s.lines, Deflated) for s in parts[1].families if s.name == "illiad_port_up")
    assert all(isinstance(s.lines, bytes) for s in parts[0].families)
    assert b"".join(plain_body(join_sections(parts, openmetrics=openmetrics))) == whole
    assert gzip.decompress(b"".join(gzip_body(join_sections(parts, openmetrics=openmetrics)))) == whole


@pytest.mark.process
def test_a_gzip_answer_made_of_the_workers_compressed_parts_is_the_plain_answer(tmp_path: Path) -> None:
    """600 sites over 2 workers: their sections come compressed and go out as they are in
    the gzip answer, which decompresses (its CRC-32 and length checked) to the families and
    series of the plain answer, in the same order."""
    with _listeners(4) as servers:
        sites = {f"lib{i:03d}": ("tcp", servers[i % 4].port) for i in range(600)}
        peer, url = exporter(_config(tmp_path / "illiad.yml", sites), tmp_path, "--probe-workers", "2",
                             vantage="external")
        with peer:
            status, plain = fetch(f"{url}/metrics")
            request = urllib.request.Request(f"{url}/metrics", headers={"Accept-Encoding": "gzip"})
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 (loopback)
                assert response.headers["Content-Encoding"] == "gzip"
                body = response.read()
    assert status == 200
    unzipped = gzip.decompress(body).decode()
    assert len(body) * 5 < len(unzipped)

    def shape(text: str) -> tuple[list[str], set[tuple[str, tuple[tuple[str, str], ...]]]]:
        families = list(text_string_to_metric_families(text))
        return ([f.name for f in families],
                {(s.name, tuple(sorted(s.labels.items()))) for f in families for s in f.samples
                 if s.name.startswith(("illiad_port", "illiad_probe", "illiad_path"))})

    assert shape(unzipped) == shape(plain)
    assert _series(unzipped, "illiad_port_up") == _series(plain, "illiad_port_up") == {name: 1.0 for name in sites}


def test_shares_are_whole_sites_balanced_by_probe_count() -> None:
    sizes = {"big": 10, "a": 4, "b": 3, "c": 3, "d": 2, "e": 1}
    by_site = {site: tuple(range(n)) for site, n in sizes.items()}
    shares = share_sites(by_site, 2)  # type: ignore[arg-type]
    assert sorted(s for share in shares for s in share) == sorted(sizes)
    loads = [sum(sizes[s] for s in share) for share in shares]
    assert loads == [11, 12] or loads == [12, 11]
    assert share_sites(by_site, 2) == shares  # the same plan, the same shares  # type: ignore[arg-type]


@pytest.mark.process
@pytest.mark.parametrize("argv, env, message", [
    (["--probe-workers", "0"], {}, "the number of probe workers must be between 1 and 64, got 0"),
    (["--probe-workers", "many"], {}, "expected a number of processes or auto, got 'many'"),
    (["--probe-workers", "2"], {"ILLIAD_EXPORTER_PROBE_WORKER_START": "fork"},
     "probe workers cannot start with 'fork' here (forkserver on Linux, or spawn)"),
    (["--probe-workers.serving-cpu-limit", "2"], {}, "a share of one core is between 0 and 1, got 2"),
    ([], {"ILLIAD_EXPORTER_SERVING_CPU_LIMIT": "most"}, "expected a share of one core such as 0.75, got 'most'"),
])
def test_a_bad_worker_setting_is_refused_with_a_clear_error(tmp_path: Path, argv: list[str], env: dict[str, str],
                                                            message: str) -> None:
    config = _config(tmp_path / "illiad.yml", {"lib": ("tcp", 9)})
    done = subprocess.run([sys.executable, "-m", "illiad_exporter", "serve", "--config.file", str(config),
                           "--vantage", "external", "--web.listen-address", "127.0.0.1:0", *argv],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
