#!/usr/bin/env bash
# Sets everything up, executes notebooks/tour.ipynb headless and prints its memreport.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/run_tour.py
