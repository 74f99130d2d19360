"""Graceful shutdown: SIGTERM or Ctrl-C mid-scrape lets the scrape finish by its deadline,
then the process exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .exporter_process import exporter, fetch, log_text, loopback_site_config, only_test_hosts, wait_until
from .peers import Peer, free_port
from .test_server import value
from .test_webconfig import SALT_AND_DIGEST, basic


def slow_config(path, port: int):
    return loopback_site_config(path, custom=f"""\
      - {{name: slow, from: [web_server], host: 127.0.0.1, port: {port}, prober: http}}""")


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_scrape_lets_the_scrape_answer_then_exits_0(tmp_path, silent_port, signame):
    """The target accepts and never answers, so the scrape runs for the probe's 2 s timeout;
    the signal arrives 0.5 s in. The scrape still gets its full answer (reason timeout),
    new connections are refused, and the process exits 0 right after."""
    config = slow_config(tmp_path / "c.yml", silent_port)
    peer, url = exporter(config, tmp_path)
    answer: list[tuple[int, str]] = []
    with peer:
        scrape = threading.Thread(target=lambda: answer.append(fetch(url + "/metrics")), daemon=True)
        started = time.monotonic()
        scrape.start()
        time.sleep(0.5)
        peer.process.send_signal(getattr(signal, signame))  # type: ignore[union-attr]
        returncode = peer.process.wait(10)  # type: ignore[union-attr]
        stopped_after = time.monotonic() - started
        scrape.join(5)
    assert returncode == 0, log_text(peer)
    assert 1.5 <= stopped_after < 4.0  # waited for the in-flight scrape, then went at once
    [(status, text)] = answer
    assert status == 200
    assert value(text, "illiad_probe_failure_reason", path="slow", reason="timeout") == 1.0
    log = log_text(peer)
    assert "shutting down" in log and "stopped" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_sigterm_when_idle_exits_0_at_once(tmp_path, silent_port):
    peer, url = exporter(slow_config(tmp_path / "c.yml", silent_port), tmp_path)
    with peer:
        assert fetch(url + "/-/healthy") == (200, "Healthy\n")
        started = time.monotonic()
        peer.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert peer.process.wait(10) == 0  # type: ignore[union-attr]
        assert time.monotonic() - started < 1.5


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.slow
def test_sigterm_during_a_password_check_answers_the_login_and_ends_the_process(tmp_path, silent_port):
    """Nothing interrupts bcrypt once its C code runs. The exporter is started with the cost
    bound raised to 20 (by its launcher here, for the test only), so a wrong password's
    check runs for a minute on a core; SIGTERM comes while it runs. The login waiting for it
    is answered 503, and the process exits 0 at once: neither the server's shutdown nor the
    interpreter's exit waits for the check (before, the log said "stopped" and the process
    kept a core busy until bcrypt was done)."""
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"basic_auth_users: {{prometheus: $2y$20${SALT_AND_DIGEST}}}\n")
    launcher = ("import sys; from illiad_exporter import webconfig; webconfig.BCRYPT_MAX_COST = 20; "
                "from illiad_exporter.cli import main; sys.exit(main())")
    port = free_port()
    config = slow_config(tmp_path / "c.yml", silent_port)
    only_test_hosts(config, "web_server")
    peer = Peer([sys.executable, "-c", launcher, "serve", "--config.file",
                 str(config), "--vantage", "web_server",
                 "--web.listen-address", f"127.0.0.1:{port}", "--web.config.file", str(web_yml)],
                port=port, log=tmp_path / "exporter.log")
    answer: list[tuple[int, str] | Exception] = []

    def login() -> None:
        try:
            answer.append(fetch(f"http://127.0.0.1:{port}/metrics", timeout=60, headers=basic("prometheus", "guess")))
        except OSError as error:
            answer.append(error)

    with peer:
        idle = _cpu_seconds(peer.pid)
        client = threading.Thread(target=login, daemon=True)
        client.start()
        wait_until(lambda: _cpu_seconds(peer.pid) > idle + 1.0, timeout=30, what="bcrypt to be running")
        peer.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        try:
            returncode = peer.process.wait(15)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            pytest.fail("the exporter was still running 15 s after SIGTERM:\n" + log_text(peer)[-2000:])
        client.join(15)
    assert returncode == 0, log_text(peer)
    assert answer == [(503, "Service Unavailable: shutting down\n")]
    log = log_text(peer)
    assert "stopped" in log and "Traceback" not in log
