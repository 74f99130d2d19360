"""Config memory: a load shares what its paths repeat, and its cost per path stays small."""

from __future__ import annotations

import gc
import pickle
import tracemalloc

from illiad_exporter.catalog import Role
from illiad_exporter.config import ConfigError, parse_config
from illiad_exporter.plan import build_plan


def consortium(sites: int, paths: int, *, extra: str = "") -> str:
    """``sites`` sites of ``paths`` custom HTTP paths each, every target host its own."""
    lines = ["defaults: {system_resolver: false, timeout: 1s}", "sites:"]
    for s in range(sites):
        customs = ", ".join(
            f"{{name: p{p}, from: [sql_server], host: 198.18.{s // 250}.{s % 250 + 1}, port: {8000 + p}, "
            f"prober: http, path: /p{p % 2}{extra}}}" for p in range(paths))
        lines.append(f"  - {{name: site{s:05d}, hosts: {{web_server: web{s}.lib.test}}, custom: [{customs}]}}")
    return "\n".join(lines) + "\n"


def test_paths_with_the_same_options_share_one_options_object_and_catalog_paths_are_shared():
    config = parse_config(consortium(3, 4))
    a, b, c = config.sites
    # custom paths with the same prober options: one object; other options: another
    assert a.path("p0").options is b.path("p0").options is c.path("p2").options
    assert a.path("p1").options is b.path("p3").options
    assert a.path("p0").options is not a.path("p1").options
    assert a.path("p0").options.path == "/p0" and a.path("p1").options.path == "/p1"
    # a catalog path that comes out the same in every site is one object
    assert a.path("sql_from_external") is b.path("sql_from_external")
    # one that goes to the site's own web server is the site's
    assert a.path("web_https").routes[Role.STAFF_CLIENT] == ("web0.lib.test",)
    assert b.path("web_https").routes[Role.STAFF_CLIENT] == ("web1.lib.test",)
    # options made by another load are that load's own (a reload validates afresh)
    assert parse_config(consortium(1, 1)).sites[0].path("p0").options is not a.path("p0").options


def test_a_planned_target_pickles_to_an_equal_target():
    """Targets go to probe worker processes pickled."""
    plan = build_plan(parse_config(consortium(5, 3)), Role.SQL_SERVER)
    assert len(plan.targets) == 15
    assert pickle.loads(pickle.dumps(plan.targets)) == plan.targets


def test_a_2000_path_config_loads_and_plans_in_under_4_kib_a_path_at_its_peak():
    """The load's peak is what the process keeps as RSS (the allocator holds on to freed
    memory): once 6.6 KiB a path (the YAML node tree, a position for every key, an options
    model for every path of every site), now about 1.5."""
    n = 2000
    text = consortium(200, 10)
    gc.collect()
    tracemalloc.start()
    try:
        config = parse_config(text, "consortium.yml")
        plan = build_plan(config, Role.SQL_SERVER)
        gc.collect()
        live, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan) == n
    assert peak / n < 4096, f"{peak / n:.0f} bytes a path at the load's peak"
    assert live / n < 2048, f"{live / n:.0f} bytes a path kept"


def test_an_error_far_into_a_large_file_still_names_its_line_and_column():
    """Positions are found only when an error needs one: they must still be exact."""
    text = consortium(300, 2).replace("port: 8001, prober: http, path: /p1}]}\n  - {name: site00250",
                                      "port: 80001, prober: http, path: /p1}]}\n  - {name: site00250")
    try:
        parse_config(text, "consortium.yml")
    except ConfigError as error:
        line = next(n for n, t in enumerate(text.splitlines(), 1) if "80001" in t)
        column = text.splitlines()[line - 1].index("port: 80001") + 1  # an error in a value points at its key
        assert str(error) == (f"consortium.yml:{line}:{column}: sites[249].custom[1].port: "
                              "Input should be less than or equal to 65535")
    else:
        raise AssertionError("port 80001 was accepted")


def test_a_file_with_anchors_loads_the_same_as_without():
    """Anchors and aliases take the node path; the result is the same config."""
    plain = parse_config("sites:\n  - {name: a, custom: [{name: x, from: [web_server], host: h.test, port: 1}]}\n"
                         "  - {name: b, custom: [{name: x, from: [web_server], host: h.test, port: 1}]}\n")
    aliased = parse_config("sites:\n  - {name: a, custom: &c [{name: x, from: [web_server], host: h.test, port: 1}]}\n"
                           "  - {name: b, custom: *c}\n")
    assert plain.sites == aliased.sites
