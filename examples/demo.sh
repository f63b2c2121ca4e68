#!/usr/bin/env bash
# One command from a fresh Debian machine to a running demo (see README.md, "Quick start").
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus >/dev/null && [ ! -x /usr/bin/prometheus ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -e .
echo "demo: status UI on http://${SENTINEL_LISTEN:-127.0.0.1:8080}/ (open it in a browser once Sentinel runs)"
exec .venv/bin/python examples/demo.py
