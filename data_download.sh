#!/usr/bin/env bash
# Fetch real street images (OpenStreetView-5M by default, or GSV-Cities) and
# pretrained weights for cityviz. Runs from any directory; `--help` lists every
# option. The work is done by cityviz_helpers/download.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -x "$REPO/.venv/bin/python" ]; then
  PY="$REPO/.venv/bin/python"
else
  PY="${PYTHON:-python3}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m cityviz_helpers.download "$@"
