#!/usr/bin/env bash
# Quick start: install, then serve the example config (every path points at 127.0.0.1).
# Then: curl http://127.0.0.1:9968/metrics   or open http://127.0.0.1:9968/
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/illiad-exporter serve --config.file examples/local.yml --vantage "${VANTAGE:-web_server}" \
  --web.listen-address "${LISTEN:-127.0.0.1:9968}" "$@"
