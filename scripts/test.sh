#!/usr/bin/env bash
# The test command: sets everything up on a fresh machine, then runs every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -rs --strict-skips -p no:cacheprovider tests "$@"
