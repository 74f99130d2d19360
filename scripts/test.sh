#!/usr/bin/env bash
# Set up everything the tests need (Debian peers when root, .venv with the test tools), then
# run the whole suite on several workers (pytest-xdist). Extra arguments go to pytest.
#
#   scripts/test.sh --quick   the quick loop: only the tests that run in pytest's own process
#                             (pytest -m quick, see tests/quickset.py); installs no Debian package
#
# TEST_WORKERS sets the number of workers (default: twice the cores, at least 4: most tests
# wait on sockets and timeouts rather than the CPU); -n 0 in the arguments runs in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc 2>/dev/null || echo 2)
workers=${TEST_WORKERS:-$(( cores * 2 > 4 ? cores * 2 : 4 ))}
if [ "${1:-}" = "--quick" ]; then
  shift
  scripts/setup.sh test
  exec .venv/bin/python -m pytest -m quick -n "$workers" "$@"
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  mapfile -t packages < <(grep -v -e '^#' -e '^$' scripts/debian-packages.txt)
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The container tests' base image (a stand-in for the public python image), as a root file
  # system made here from the Debian mirror once, so the tests themselves fetch nothing.
  if [ ! -f .cache/base-bookworm.tar ]; then
    echo "making the container tests' base image (debootstrap bookworm)"
    scripts/base-image.sh .cache/base-bookworm.tar
  fi
else
  echo "not root or no apt-get: Debian peers are not installed; tests that need them will skip" >&2
fi
scripts/setup.sh test
# Whole modules to a worker (loadscope): a module's tests share its fixtures (a namespace lab,
# a built wheel, the container engine, which one session at a time may hold).
exec .venv/bin/python -m pytest -n "$workers" --dist loadscope "$@"
