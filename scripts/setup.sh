#!/usr/bin/env bash
# Create .venv and install the exporter into it (with the test tools when given "test").
# Skipped when .venv already holds that install of this pyproject.toml (the install is
# editable: code changes need none).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extra=${1:-}
stamp=.venv/installed
want="${extra:-plain} $(cat pyproject.toml "$0" | sha256sum | cut -d' ' -f1)"  # this script's steps too
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "$extra" = "test" ]; then
  .venv/bin/python -m pip install --quiet -e '.[test]'
  # The wheels a fresh install of the exporter needs, and its build backend: the tests that
  # install it as the README says do so from here, with no package index (nothing leaves
  # this machine while the tests run; tests/peers.py offline_pip).
  rm -rf .venv/wheelhouse
  .venv/bin/python -m pip download --quiet --dest .venv/wheelhouse . 'setuptools>=77' wheel
  rm -f .venv/wheelhouse/illiad*
else
  .venv/bin/python -m pip install --quiet -e .
fi
echo "$want" > "$stamp"
