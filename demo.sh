#!/usr/bin/env bash
# Run the product's main job on a built-in single-machine demo farm (needs root: loop drives).
# Installs what it needs first (apt + .venv), then builds the farm in a temporary directory,
# runs it, and removes everything it made.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh dev
exec .venv/bin/python demo/demo_farm.py "$@"
