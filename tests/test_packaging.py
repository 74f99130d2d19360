"""The wheel as pip builds it: its metadata, and the rules, dashboard and example configs it
carries from the repository's own folders, written out by `illiad-exporter assets` run from
the wheel itself."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from illiad_exporter import __version__

from .peers import offline_pip

pytestmark = pytest.mark.process  # pip builds the wheel and installs it, as processes of its own

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(
    [f"alerts/{p.name}" for p in (REPO / "alerts").glob("*.rules.yml")] + ["alerts/alertmanager.example.yml"]
    + [f"grafana/{p.name}" for p in (REPO / "grafana").glob("*.json")]
    + [f"examples/{p.name}" for p in (REPO / "examples").glob("*.yml")]
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel pip builds from the checkout, and the build's output."""
    out = tmp_path_factory.mktemp("wheel")
    # from a copy of what the image build copies (.dockerignore): no stale build/ of a checkout
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for name in ("exporter", "alerts", "grafana", "examples"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(source)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **offline_pip()})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("*.whl")
    return built, proc.stdout + proc.stderr


def test_wheel_metadata_has_an_spdx_license_classifiers_and_project_urls(wheel: tuple[Path, str]) -> None:
    built, log = wheel
    assert "deprecated" not in log.lower()
    with zipfile.ZipFile(built) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(name))
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License"] is None  # the old free-text field is gone
    classifiers = metadata.get_all("Classifier")
    assert "Development Status :: 4 - Beta" in classifiers
    assert "Intended Audience :: System Administrators" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # the SPDX expression says it
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert {"Source", "Issues", "Documentation"} <= set(urls)
    assert urls["Issues"].endswith("/issues")


def test_wheel_carries_the_rules_dashboard_and_examples_byte_for_byte(wheel: tuple[Path, str]) -> None:
    """The files under illiad_exporter/assets/ are the repository's alerts/, grafana/ and
    examples/ files themselves (no copies kept in the tree), and nothing else of those folders."""
    assert "alerts/illiad-alerts.rules.yml" in SHIPPED and "grafana/illiad-ports.json" in SHIPPED
    with zipfile.ZipFile(wheel[0]) as archive:
        carried = sorted(n.removeprefix("illiad_exporter/assets/") for n in archive.namelist()
                         if n.startswith("illiad_exporter/assets/") and not n.endswith(".py"))
        assert carried == SHIPPED
        for name in SHIPPED:
            assert archive.read(f"illiad_exporter/assets/{name}") == (REPO / name).read_bytes(), name


def test_assets_command_of_the_installed_wheel_writes_its_files(wheel: tuple[Path, str], tmp_path: Path) -> None:
    """`illiad-exporter assets DIR`, run from the unpacked wheel (not the checkout), writes every
    shipped file with its version's content, and refuses to overwrite them on a second run."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel[0]) as archive:
        archive.extractall(site)
    env = {"PYTHONPATH": str(site), "PATH": ""}
    where = subprocess.run([sys.executable, "-c", "import illiad_exporter.assets as a; print(a.asset_root())"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert where.stdout.strip() == str(site / "illiad_exporter" / "assets")  # the wheel's copy, not the checkout
    out = tmp_path / "out"
    first = subprocess.run([sys.executable, "-m", "illiad_exporter", "assets", str(out)],
                           capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"illiad-exporter {__version__}: wrote {len(SHIPPED)} files to {out}"
    assert lines[1:] == [f"  {out / name}" for name in SHIPPED]
    for name in SHIPPED:
        assert (out / name).read_bytes() == (REPO / name).read_bytes(), name
    again = subprocess.run([sys.executable, "-m", "illiad_exporter", "assets", str(out)],
                           capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 1
    assert again.stderr.startswith(f"error: would overwrite {out / SHIPPED[0]}, ")
    assert again.stderr.rstrip().endswith("(use --overwrite)")
    forced = subprocess.run([sys.executable, "-m", "illiad_exporter", "assets", "--overwrite", str(out)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert forced.returncode == 0, forced.stderr
