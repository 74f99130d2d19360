"""What a config or a check's JSON says reaches a terminal or a markdown page as it is
written, never as markup or terminal control: one escaping module (escape.py) for every
writer. The markdown is rendered by GitHub's own renderer (cmark-gfm) with raw HTML let
through, as a careless ticket system would; the hostile strings are the same for
``check --output markdown``, ``check --explain``, the check table and ``report``."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from hypothesis import given, settings
from hypothesis import strategies as st

from illiad_exporter.escape import markdown, markdown_code, markdown_fence, visible

from .peers import free_port

HOST = "<h1>x`y\x1b[31m\x07z"  # HTML, a backtick that would end a code span, ESC and BEL
IMPACT = "[l](javascript:alert(1)) <b>bold</b> ``` *x* _y_ | c |"
HOSTILE = [HOST, IMPACT, "```\nrm -rf /\n```", "1. item", "- item", "# head #", "a\\`b", "&lt;&amp;", "x\u202eevil",
           "<!-- c -->", "![i](x)", "~~s~~", "www_x__y__", "`", "  ", " a ", "\x00\x9b"]
# Text as a config could hold it: printable ASCII markup, controls, spaces, some Unicode
TEXT = st.text(alphabet=st.sampled_from(list("`*_[]()<>&|~#!\\-+=.:;'\"/ ab1\n\t\x1b\x07\x9b\u202e\u00e9")),
               max_size=40)


def rendered(text: str, *, gfm: bool = False) -> str:
    """HTML as GitHub renders it, with raw HTML passed through (CMARK_OPT_UNSAFE)."""
    if gfm:
        return cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    return cmarkgfm.markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)


def test_visible_writes_control_characters_as_escapes() -> None:
    assert visible(HOST) == "<h1>x`y\\x1b[31m\\x07z"
    assert visible("a\nb\tc\r\x00\x7f\x9b\u202ed") == "a\\nb\\tc\\r\\x00\\x7f\\x9b\\u202ed"
    assert visible("sql.example.edu (198.18.2.10) port 1433, é") == "sql.example.edu (198.18.2.10) port 1433, é"


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_text_renders_as_it_is_written(text: str) -> None:
    assert _paragraph_text(rendered("x " + markdown(text))) == ("x " + visible(text)).strip()
    assert _paragraph_text(rendered("| a |\n| --- |\n| " + markdown(text) + " |", gfm=True), tag="td") == \
        visible(text).strip()


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_any_text_renders_as_it_is_written(text: str) -> None:
    assert _paragraph_text(rendered("x " + markdown(text))) == ("x " + visible(text)).strip()
    if visible(text).strip():  # at the start of a line
        assert _paragraph_text(rendered(markdown(text))) == visible(text).strip()
    assert _paragraph_text(rendered("| a |\n| --- |\n| " + markdown(text) + " |", gfm=True), tag="td") == \
        visible(text).strip()


@settings(max_examples=300, deadline=None)
@given(TEXT.filter(lambda t: t.strip(" ") != ""))
def test_a_code_span_holds_any_text(text: str) -> None:
    found = re.fullmatch(r"<p>x <code>(.*)</code></p>\n", rendered("x " + markdown_code(text)), re.S)
    assert found is not None and html.unescape(found.group(1)) == visible(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=4).map("\n".join))
def test_a_fenced_block_holds_any_lines(text: str) -> None:
    found = re.fullmatch(r'<pre><code class="language-powershell">(.*)</code></pre>\n',
                         rendered(markdown_fence(text, "powershell")), re.S)
    assert found is not None
    assert html.unescape(found.group(1)) == "\n".join(visible(line) for line in text.split("\n")) + "\n"


def _paragraph_text(html_text: str, *, tag: str = "p") -> str:
    """The text of the one ``tag`` element: nothing but text inside (no element was made)."""
    found = re.search(rf"<{tag}>(.*)</{tag}>", html_text, re.S)
    assert found is not None, html_text
    assert "<" not in found.group(1), html_text  # escaped as &lt; when it is text
    return html.unescape(found.group(1)).strip()  # a paragraph's edges are not shown


# -- the writers -------------------------------------------------------------------------------


def hostile_config(path: Path, port: int) -> Path:
    """The SQL server's name is HOST (pinned to 127.0.0.1), and a custom path to it, whose
    impact is IMPACT, is refused at ``port``: an explanation with a Windows rule on HOST."""
    yaml_host = json.dumps(HOST).replace("\\u001b", "\\e").replace("\\u0007", "\\a")
    off = "".join(f"      {p}: {{enabled: false}}\n" for p in ("sql", "sql_from_external", "oclc_webservices",
                                                                  "atlas_update", "article_exchange", "odyssey"))
    path.write_text(f"""
defaults: {{timeout: 2s, system_resolver: false, hosts: {{web.test: [127.0.0.1], {yaml_host}: [127.0.0.1]}}}}
sites:
  - name: main-library
    hosts: {{web_server: web.test, sql_server: {yaml_host}}}
    paths:
{off}    custom:
      - {{name: door, from: [web_server], role: sql_server, port: {port}, prober: tcp, impact: {json.dumps(IMPACT)}}}
""")
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "illiad_exporter", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.mark.process
def test_every_writer_shows_a_hostile_config_as_written(tmp_path: Path) -> None:
    """check --output markdown and report render no element from the config (no heading,
    link or bold), and show HOST and IMPACT as written, in the 'Windows Defender Firewall,
    on HOST' line too; the check table and --explain write no ESC or BEL to the terminal."""
    port = free_port()
    config = hostile_config(tmp_path / "c.yml", port)
    check = ["check", "--config.file", str(config), "--vantage", "web_server"]
    as_json = _run(*check, "--output", "json", cwd=tmp_path)
    assert as_json.returncode == 1, as_json.stderr
    (tmp_path / "web.json").write_text(as_json.stdout)
    as_markdown = _run(*check, "--output", "markdown", cwd=tmp_path)
    report = _run("report", "web.json", cwd=tmp_path)
    explained = _run(*check, "--explain", cwd=tmp_path)
    for done in (as_markdown, report, explained):
        assert done.returncode == (0 if done is report else 1), done.stderr
        assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    shown = visible(HOST)
    for text in (as_markdown.stdout, report.stdout):
        page = rendered(text, gfm=True)
        assert not re.search(r"<h1>x|<a\b|<b>|<em>|<del>", page), page  # nothing the config made
        words = html.unescape(re.sub(r"<[^>]+>", "", page))
        assert f"Windows Defender Firewall, on {shown} (PowerShell as administrator):" in words
        assert f"Impact: {IMPACT}" in words
        assert f"<code>{html.escape(shown, quote=False)}:{port}</code>" in page  # its backtick ends no code span
        assert f"Check that the service runs on {shown} and listens on" in words
    assert f"  Windows firewall on {shown}: New-NetFirewallRule" in explained.stdout
    assert f"  Impact: {IMPACT}" in explained.stdout
    assert [line.split()[:3] for line in explained.stdout.splitlines() if shown in line and "FAIL" in line] == [
        ["FAIL", f"{shown}:{port}", "closed"]]


def test_a_log_line_writes_control_characters_as_escapes() -> None:
    """logfmt quotes a value that is not printable as it stands: a host's ESC and BEL reach
    the journal or the terminal as \\u001b and \\u0007."""
    import logging

    from illiad_exporter.logs import LogfmtFormatter

    record = logging.makeLogRecord({"msg": "probe failed", "levelno": logging.DEBUG, "levelname": "DEBUG",
                                    "name": "illiad_exporter.scrape", "host": HOST, "port": 1433})
    line = LogfmtFormatter().format(record)
    assert line.endswith(' host="<h1>x`y\\u001b[31m\\u0007z" port=1433')
    assert line.isprintable()


def test_the_availability_report_shows_hostile_names_as_written() -> None:
    """``availability``'s text and markdown go through the same escaping: a site, path or
    failure reason read back from Prometheus' labels is the config's text, as hostile as
    any host name."""
    from illiad_exporter.availability import (Availability, Outage, PathAvailability, PathKey, as_markdown,
                                              as_text)

    outage = Outage(1_800_000_000.0, 1_800_000_600.0, reasons=[f"refused ({HOST}:1433)"])
    path = PathAvailability(PathKey(site=HOST, vantage="web_server", path=IMPACT, required=True),
                            met=9, known=10, outages=[outage])
    report = Availability("http://127.0.0.1:9090", 1_800_000_000.0, 1_800_003_600.0, 60.0, None, [path], 0, 1.0)
    text = as_text(report)
    assert "\x1b" not in text and "\x07" not in text and "<h1>x`y\\x1b[31m\\x07z" in text
    page = rendered(as_markdown(report), gfm=True)
    assert "<h1>x" not in page and "<b>" not in page and 'href="javascript' not in page
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", page, re.S)]
    assert visible(HOST) in cells and visible(IMPACT).strip() in cells
    assert f"refused ({visible(HOST)}:1433)" in cells
