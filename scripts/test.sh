#!/usr/bin/env bash
# Set up everything the tests need (Debian peers when root, .venv with the test tools), then
# run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  mapfile -t packages < <(grep -v -e '^#' -e '^$' scripts/debian-packages.txt)
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "not root or no apt-get: Debian peers are not installed; tests that need them will skip" >&2
fi
scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
