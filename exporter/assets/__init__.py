"""The files that travel with the exporter: the alert and recording rules, the Alertmanager
example, the Grafana dashboard and the example configs (``illiad-exporter assets DIR``
writes them out, matching the installed version).

One source: they live in the repository's top-level ``alerts/``, ``grafana/`` and
``examples/``, which the chart and the tests read. A wheel carries them here, beside this
module (pyproject.toml maps those folders to ``illiad_exporter.assets.*`` packages); a source
checkout (an editable install) reads the repository's folders themselves.
"""

from __future__ import annotations

from pathlib import Path

# folder -> the file patterns shipped from it (pyproject.toml's package-data names the same)
SHIPPED: dict[str, tuple[str, ...]] = {
    "alerts": ("*.rules.yml", "alertmanager.example.yml"),
    "grafana": ("*.json",),
    "examples": ("*.yml",),
}


def asset_root() -> Path:
    """The folder holding ``alerts/``, ``grafana/`` and ``examples/``."""
    here = Path(__file__).resolve().parent
    for root in (here, here.parent.parent):  # a wheel, then a source checkout
        if all((root / folder).is_dir() for folder in SHIPPED):
            return root
    raise FileNotFoundError(f"the exporter's assets are missing: no {', '.join(SHIPPED)} beside {here} "
                            "or at the top of its source tree")


def bundled() -> dict[str, Path]:
    """Every shipped file: its name relative to the asset root (``alerts/x.rules.yml``) -> where it is."""
    root = asset_root()
    found: dict[str, Path] = {}
    for folder, patterns in SHIPPED.items():
        for pattern in patterns:
            for path in sorted((root / folder).glob(pattern)):
                found[f"{folder}/{path.name}"] = path
    return dict(sorted(found.items()))


def write_assets(destination: Path, *, overwrite: bool = False) -> list[Path]:
    """Copy every shipped file under ``destination`` (its folders made as needed). An existing
    file is an error unless ``overwrite``: nothing is written then."""
    files = bundled()
    targets = {name: destination / name for name in files}
    existing = [str(target) for target in targets.values() if target.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"would overwrite {', '.join(existing)} (use --overwrite)")
    for name, source in files.items():
        targets[name].parent.mkdir(parents=True, exist_ok=True)
        targets[name].write_bytes(source.read_bytes())
    return list(targets.values())
