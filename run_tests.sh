#!/usr/bin/env bash
# Run every test (unit, integration on real loop drives / SMTP / SQLite, e2e) and the linter.
# Installs what it needs first (apt + .venv), so it works on a bare Debian machine as root.
# Extra arguments go to pytest, e.g.  ./run_tests.sh -k drive_manager -x
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh dev
mkdir -p /run/sshd 2>/dev/null || true
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
