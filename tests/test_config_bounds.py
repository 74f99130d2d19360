"""The bounds on loading a config: a consortium's config written as the README shows loads
under the defaults; each bound refuses what crosses it with a message that names the bound,
where it was crossed and what raises it; the flags and their environment variables set them.
(What a load takes in time and memory is measured in bench/config_load.py, not here.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.consortium import PATHS_PER_SITE, consortium_text, write_consortium
from illiad_exporter.cli import main
from illiad_exporter.config import ConfigError, load_config, parse_config
from illiad_exporter.configfile import BoundCrossed, LoadBounds

from .test_reload_bounds import ALIAS_BOMB

RAISE_VALUES = "raise the bound with --config.max-values or $ILLIAD_EXPORTER_CONFIG_MAX_VALUES"
RAISE_DEPTH = "raise the bound with --config.max-depth or $ILLIAD_EXPORTER_CONFIG_MAX_DEPTH"
RAISE_TIMEOUT = "raise the bound with --config.load-timeout or $ILLIAD_EXPORTER_CONFIG_LOAD_TIMEOUT"
RAISE_MEMORY = "raise the bound with --config.max-load-memory or $ILLIAD_EXPORTER_CONFIG_MAX_LOAD_MEMORY"
TOO_MANY = "YAML values (aliases counted each time they expand): refused; " + RAISE_VALUES


def refusal(text: str, **bounds: object) -> str:
    """The message of the BoundCrossed that parsing ``text`` as c.yml within ``bounds`` raises."""
    with pytest.raises(BoundCrossed) as refused:
        parse_config(text, "c.yml", bounds=LoadBounds(**bounds))  # type: ignore[arg-type]
    return str(refused.value)


def validate(config: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``illiad-exporter validate`` in a process of its own, with only ``env``'s bound variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ILLIAD_EXPORTER_CONFIG_")}
    return subprocess.run([sys.executable, "-m", "illiad_exporter", "validate", "--config.file", str(config), *flags],
                          capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})


@pytest.fixture
def validated(monkeypatch, capsys):  # type: ignore[no-untyped-def]
    """``illiad-exporter validate`` in this process (the flags' defaults are read from the
    environment when the command line is parsed): (exit status, stdout, stderr)."""
    for name in os.environ:
        if name.startswith("ILLIAD_EXPORTER_CONFIG_"):
            monkeypatch.delenv(name)

    def run(config: Path, *flags: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            status = main(["validate", "--config.file", str(config), *flags])
        out, err = capsys.readouterr()
        return status, out, err
    return run


@pytest.mark.slow
def test_a_100000_path_consortium_config_loads_under_the_default_bounds(tmp_path):
    """10,000 sites of 10 paths, written as the README shows (15.6 MB, 1.1 million values):
    every site and path is there. (The 4 MiB cap it replaces refused 3,000 such sites.)"""
    config = load_config(write_consortium(tmp_path / "consortium.yml", 10_000))
    assert len(config.sites) == 10_000
    assert sum(1 for site in config.sites for path in site.paths if path.enabled) == 10_000 * PATHS_PER_SITE
    assert config.sites[-1].name == "lib09999"
    assert config.sites[-1].path("ezproxy").ports == (443,)


def test_the_consortium_file_is_safe_to_probe_from_every_vantage():
    """Every planned target of the generated config is loopback or 198.18.0.0/15."""
    import ipaddress

    from illiad_exporter.catalog import Role
    from illiad_exporter.plan import build_plan

    config = parse_config(consortium_text(40))
    allowed = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("198.18.0.0/15"))
    targets = [target for role in Role for target in build_plan(config, role).targets]
    assert len(targets) > 40 * PATHS_PER_SITE
    assert all(any(ipaddress.ip_address(t.host) in network for network in allowed) for t in targets)


def test_values_past_the_bound_are_refused_where_the_count_crosses_it():
    """Values as written: root, key, list and a, b (5), then c is one too many."""
    assert refusal("sites: [a, b, c, d]\n", max_values=5) == f"c.yml:1:15: more than 5 {TOO_MANY}"


def test_values_through_aliases_are_counted_each_time_they_expand():
    """Ten values once expanded: root, x, [a, b], sites, its list, the first *x (3); the
    second *x is the eleventh, placed where its anchor stands and by its key path."""
    text = "x: &x [a, b]\nsites: [*x, *x, *x]\n"
    assert refusal(text, max_values=10) == f"c.yml:1:4: sites[1]: more than 10 {TOO_MANY}"
    with pytest.raises(ConfigError) as invalid:  # ten exactly: within the bound, then judged as a config
        parse_config("x: &x [a, b]\nsites: [*x]\n", "c.yml", bounds=LoadBounds(max_values=10))
    assert not isinstance(invalid.value, BoundCrossed)


def test_an_alias_bomb_is_refused_before_anything_is_built():
    """Nine levels of ten aliases (10**9 values from 330 bytes): the figures of each anchor
    are counted once, and the value that crosses 3,000,000 is named."""
    assert refusal(ALIAS_BOMB) == f"c.yml:1:10: g[1][5][8][8][8][8][1]: more than 3000000 {TOO_MANY}"


def test_nesting_past_the_bound_is_refused_at_the_first_level_too_deep():
    assert refusal("sites: [[[x]]]\n", max_depth=3) == \
        f"c.yml:1:10: YAML nested more than 3 deep: refused; {RAISE_DEPTH}"
    # the same with an anchor in the file (the node path): the same place
    assert refusal("a: &a 1\nsites: [[[x]]]\n", max_depth=3) == \
        f"c.yml:2:10: YAML nested more than 3 deep: refused; {RAISE_DEPTH}"


def test_nesting_through_aliases_and_an_alias_inside_itself_are_refused():
    assert refusal("a: &a [x]\nsites: [[*a]]\n", max_depth=3) == \
        f"c.yml:1:4: sites[0][0]: YAML nested more than 3 deep: refused; {RAISE_DEPTH}"
    assert refusal("a: &a [*a]\n") == \
        f"c.yml:1:4: a[0][0][0][0][0][0][0][0][0][0][0]...: YAML nested more than 64 deep: refused; {RAISE_DEPTH}"


def test_twenty_thousand_brackets_are_refused_as_too_deep():
    """libyaml gives up at 1,000 levels, before it hands over one event: that place is named."""
    assert refusal("sites: " + "[" * 20_000 + "]" * 20_000 + "\n") == \
        f"c.yml:1:1007: YAML nested more than 64 deep: refused; {RAISE_DEPTH}"


def test_a_load_past_its_time_is_stopped_where_it_got_to():
    """A bound no load meets: the first look at the clock (the 256th value) stops it, and
    names that value's place."""
    text = consortium_text(5)
    events = [e for e in yaml.parse(text) if isinstance(e, (yaml.ScalarEvent, yaml.CollectionStartEvent))]
    mark = events[255].start_mark
    assert refusal(text, timeout=1e-9) == \
        f"c.yml:{mark.line + 1}:{mark.column + 1}: the load took more than 1e-06ms: stopped; {RAISE_TIMEOUT}"


def test_a_file_larger_than_16_bytes_a_value_is_refused_unread(tmp_path):
    config = tmp_path / "c.yml"
    config.write_text("sites:\n" + "#" * 1593 + "\n")  # 1,601 bytes
    with pytest.raises(BoundCrossed) as refused:
        load_config(config, bounds=LoadBounds(max_values=100))
    assert str(refused.value) == (f"{config}: config larger than 1600 bytes (16 for each YAML value "
                                  f"--config.max-values allows): refused unread; {RAISE_VALUES}")
    with pytest.raises(ConfigError) as invalid:  # 16 bytes more allowed: read, and judged as a config
        load_config(config, bounds=LoadBounds(max_values=101))
    assert "sites: must be a non-empty list of sites" in str(invalid.value)


def test_the_flags_and_their_variables_set_each_bound(tmp_path, validated):
    """validate refuses a 3-site consortium (342 values, 4,649 bytes) under
    --config.max-values 320 and under $ILLIAD_EXPORTER_CONFIG_MAX_VALUES=320, loads it when
    either raises the bound to 1000 (the flag over the variable), and likewise for the other
    bounds."""
    config = tmp_path / "c.yml"
    config.write_text(consortium_text(3))
    refused = re.compile(rf"{re.escape(str(config))}:\d+:\d+: more than 320 {re.escape(TOO_MANY)}\n"
                         rf"1 error\(s\) in {re.escape(str(config))}\n")
    for status, _, err in (validated(config, "--config.max-values", "320"),
                           validated(config, env={"ILLIAD_EXPORTER_CONFIG_MAX_VALUES": "320"}),
                           validated(config, "--config.max-values", "320",
                                     env={"ILLIAD_EXPORTER_CONFIG_MAX_VALUES": "1000"})):
        assert status == 1 and refused.fullmatch(err), err
    for status, out, err in (validated(config, "--config.max-values", "1000"),
                             validated(config, env={"ILLIAD_EXPORTER_CONFIG_MAX_VALUES": "1000"}),
                             validated(config, "--config.max-values", "1000",
                                       env={"ILLIAD_EXPORTER_CONFIG_MAX_VALUES": "320"})):
        assert status == 0 and "valid; 3 site(s)" in out, err

    slow = write_consortium(tmp_path / "slow.yml", 300)  # 33,000 values: far more than a millisecond
    status, _, err = validated(slow, env={"ILLIAD_EXPORTER_CONFIG_LOAD_TIMEOUT": "1ms"})
    assert status == 1 and f"the load took more than 1ms: stopped; {RAISE_TIMEOUT}\n" in err
    assert validated(slow, "--config.load-timeout", "1m", env={"ILLIAD_EXPORTER_CONFIG_LOAD_TIMEOUT": "1ms"}
                     )[0] == 0

    deep = tmp_path / "deep.yml"  # 70 levels under an unknown key: past the default 64
    deep.write_text(consortium_text(1) + "deep: " + "[" * 70 + "]" * 70 + "\n")
    status, _, err = validated(deep)
    assert status == 1 and f"YAML nested more than 64 deep: refused; {RAISE_DEPTH}\n" in err
    for status, _, err in (validated(deep, "--config.max-depth", "80"),
                           validated(deep, env={"ILLIAD_EXPORTER_CONFIG_MAX_DEPTH": "80"})):
        assert status == 1 and "nested more than" not in err  # read now, then judged as a config
        assert f"{deep}:26:1: deep: unknown key" in err, err


@pytest.mark.process
def test_a_load_that_grows_the_process_past_its_memory_bound_is_stopped(tmp_path):
    """A fresh process (the memory it grows by is the load's): 300 sites grow it by far more
    than 1 MiB; stopped where it had got to, by the flag and by the variable."""
    if not Path("/proc/self/statm").exists():
        pytest.skip("the memory bound is measured from /proc (Linux)")
    config = write_consortium(tmp_path / "c.yml", 300)
    lines = len(config.read_text().splitlines())
    for run in (validate(config, "--config.max-load-memory", "1MiB"),
                validate(config, env={"ILLIAD_EXPORTER_CONFIG_MAX_LOAD_MEMORY": "1MiB"})):
        found = re.fullmatch(rf"{re.escape(str(config))}:(\d+):(\d+): the load grew the process's resident memory "
                             rf"by more than 1MiB: stopped; {re.escape(RAISE_MEMORY)}\n1 error\(s\) in .*\n", run.stderr)
        assert run.returncode == 1 and found, run.stderr
        assert 1 <= int(found[1]) <= lines
    assert validate(config, "--config.max-load-memory", "1GiB", env={"ILLIAD_EXPORTER_CONFIG_MAX_LOAD_MEMORY": "1MiB"}
                    ).returncode == 0


@pytest.mark.parametrize("flag, value, says", [
    ("--config.max-values", "0", "expected a number greater than zero, got 0"),
    ("--config.max-depth", "500", "expected a number from 1 to 200, got 500"),
    ("--config.load-timeout", "soon", "expected a duration such as 5s or 500ms, got 'soon'"),
    ("--config.max-load-memory", "1GB", "expected a size such as 512MiB or 2GiB, got '1GB'"),
])
def test_a_bad_bound_is_a_usage_error(tmp_path, validated, capsys, flag, value, says):
    config = tmp_path / "c.yml"
    config.write_text(consortium_text(1))
    with pytest.raises(SystemExit) as usage:
        validated(config, flag, value)
    assert usage.value.code == 2
    assert f"argument {flag}: {says}" in capsys.readouterr().err
