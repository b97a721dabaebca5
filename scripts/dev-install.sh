#!/usr/bin/env bash
# Rebuilds and reinstalls memtamer into .venv, reusing build/ between runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/python -m pip install -q --no-build-isolation -Cbuild-dir=build/dev . 2>&1 | grep -vE "^\s*$" || true
