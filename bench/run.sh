#!/usr/bin/env bash
# Runs the benchmarks and writes bench/RESULTS.md (one section per script).
#   bash bench/run.sh              every bench/*.py script (not _private ones)
#   bash bench/run.sh foundation   only the named ones
# Creates or updates bench/.venv (from PyPI: bench/requirements.txt, and
# memtamer built from this tree); system libraries come from scripts/setup.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."

python=${PYTHON:-python3}
if [ ! -x bench/.venv/bin/python ]; then
    echo "bench: creating bench/.venv"
    "$python" -m venv bench/.venv
fi
bench/.venv/bin/python -m pip install -q --upgrade pip
bench/.venv/bin/python -m pip install -q -r bench/requirements.txt
echo "bench: building and installing memtamer"
bench/.venv/bin/python -m pip install -q --no-build-isolation .

# Same string hashes in every run, so dict-heavy loops do the same work.
export PYTHONHASHSEED=0
if [ $# -gt 0 ]; then
    scripts=()
    for name in "$@"; do scripts+=("bench/${name%.py}.py"); done
else
    scripts=(bench/[!_]*.py)
fi
for script in "${scripts[@]}"; do
    echo "bench: running $script"
    bench/.venv/bin/python "$script"
done
echo "bench: results in bench/RESULTS.md"
