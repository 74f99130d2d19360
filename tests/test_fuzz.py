"""Bad input everywhere, generated: the config loader gives a Config or a ConfigError whose
every line names the file (and the line, when the YAML parsed), and /probe answers 200, 400
or 403 with a short reason, never a 500 or a traceback."""

from __future__ import annotations

import asyncio
import copy
import http.client
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illiad_exporter.catalog import Role
from illiad_exporter.config import Config, ConfigError, parse_config
from illiad_exporter.server import build_app
from illiad_exporter.state import ExporterState

from .exporter_process import PUBLIC_PATHS, loopback_site_config, only_test_hosts

EXAMPLE = Path(__file__).parent.parent / "examples" / "illiad.yml"
VALID = yaml.safe_load(EXAMPLE.read_text())
FILE = "fuzz.yml"
ISSUE_LINE = re.compile(r"^fuzz\.yml(:\d+:\d+)?: \S")

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=30), st.sampled_from(["5s", "0s", "-1s", "1m30s", "ip6", "closed", "tcp", "tls", "{env: X}",
                                           "198.18.0.0/15", "a:1", "*", "~", "0x10", "1e400", "!!python/none"]),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def check_outcome(text: str, *, parsed_yaml: bool) -> None:
    try:
        config = parse_config(text, FILE)
    except ConfigError as error:
        assert error.issues, "a ConfigError with no issue"
        for line in str(error).splitlines():
            assert ISSUE_LINE.match(line), line
        if parsed_yaml:  # the file parsed as YAML: every issue can point at its line
            assert all(issue.line >= 1 for issue in error.issues), str(error)
        return
    assert isinstance(config, Config) and config.sites


@FUZZ
@given(st.text(max_size=400))
def test_config_loader_on_arbitrary_text(text):
    check_outcome(text, parsed_yaml=False)


@FUZZ
@given(st.lists(st.sampled_from(["sites:", "  - name: lib", "    hosts: {web_server: a}", "defaults:",
                                 "  timeout: 5s", "  hosts: {x: [1.2.3.4]}", "probe_allow: [10.0.0.0/8]",
                                 "exporter: {max_concurrency: 0}", "    paths: {sql: {port: 99999}}", "- [",
                                 "  &a x", "*a", "? [a]", ": b", "\t", "'", "key: !!binary QUJD", "%TAG ! x",
                                 "---", "...", "x: {{{", "sites: 7"]), max_size=14))
def test_config_loader_on_yaml_ish_lines(lines):
    check_outcome("\n".join(lines) + "\n", parsed_yaml=False)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, prefix + (index,))


ALL_PATHS = [p for p in _paths(VALID) if p]


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    config = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent: Any = config
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[last] = draw(values)
            elif action == "delete":
                del parent[last]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=12))] = draw(values)
            else:
                parent.append(draw(values))
        except (KeyError, IndexError, TypeError, AttributeError):
            continue  # an earlier mutation removed or retyped this part
    return config


@FUZZ
@given(mutated_configs())
def test_config_loader_on_mutations_of_a_valid_config(config):
    text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    check_outcome(text, parsed_yaml=True)


# --- /probe's query ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An exporter in a background thread's event loop; its probes go to a refusing port."""
    from .peers import free_port

    closed = free_port()
    config = loopback_site_config(
        tmp_path_factory.mktemp("fuzz") / "c.yml", timeout="1s", hosts="{lab.test: [127.0.0.1]}",
        top=f'probe_allow: ["127.0.0.1/32:{closed}"]\n', switched_off=PUBLIC_PATHS,
        paths=f"      sql: {{port: {closed}, prober: tcp}}\n")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    only_test_hosts(config, Role.WEB_SERVER.value)

    async def start() -> None:
        state = ExporterState(config, Role.WEB_SERVER)
        state.load()
        runner = web.AppRunner(build_app(state))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"127.0.0.1:{holder['port']}|{closed}"
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


keys = st.one_of(st.sampled_from(["site", "path", "target", "prober", "module", "", "SITE"]), st.text(max_size=10))
query_values = st.one_of(
    st.sampled_from(["lib", "sql", "tcp", "tls", "http", "ldap", "127.0.0.1:{closed}", "lab.test:{closed}",
                     "[::1]:{closed}", "127.0.0.1:0", "198.18.0.1:1433", "localhost:{closed}", "", "%", "%zz"]),
    st.text(max_size=40),
)


@FUZZ
@given(st.lists(st.tuples(keys, query_values), max_size=5), st.booleans())
def test_probe_query_never_errors_or_shows_internals(served, pairs, raw):
    address, closed = served.split("|")
    pairs = [(k, v.replace("{closed}", closed)) for k, v in pairs]
    if raw:  # hand-joined, so stray % and & reach the server undecoded
        query = "&".join(f"{urllib.parse.quote(k, safe='%')}={urllib.parse.quote(v, safe='%:[]')}" for k, v in pairs)
    else:
        query = urllib.parse.urlencode(pairs)
    connection = http.client.HTTPConnection(address, timeout=10)
    try:
        connection.request("GET", "/probe?" + query)
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
    finally:
        connection.close()
    assert response.status in (200, 400, 403), (response.status, body)
    if response.status != 200:
        assert body.endswith("\n") and body.count("\n") == 1 and len(body) < 400, body
        assert "Traceback" not in body and "File \"" not in body
    else:
        assert "illiad_port_up" in body
