#!/usr/bin/env bash
# Rebuilds and reinstalls memtamer into a venv (.venv unless given, e.g.
# .venv-3.13), reusing its build directory (build/dev, build/dev-3.13) between runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${1:-.venv}
build=build/dev${venv#.venv}
"$venv/bin/python" -m pip install -q --no-build-isolation -Cbuild-dir="$build" . 2>&1 | grep -vE "^\s*$" || true
