#!/usr/bin/env bash
# Sets up everything memtamer needs on a fresh Debian machine, idempotently:
# system libraries (apt-get, only where missing), a virtual environment with
# the test dependencies, and memtamer itself built and installed into it.
# Usage: setup.sh [PYTHON VENV]: by default $PYTHON (or python3) into .venv;
# scripts/test.sh gives each CPython scripts/pythons.sh finds its own venv.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

apt_packages=(build-essential pkg-config valgrind libblosc-dev libyaml-dev libzmq3-dev tmux clang-format
              chromium-headless-shell)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${1:-${PYTHON:-python3}}
venv=${2:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv ($("$python" --version))"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# The lock holds the versions CI ran with; its pins and requirements-test.txt
# may carry environment markers (python_version), which pip evaluates for the
# venv's Python.  Wheels only: a pin without a wheel for this Python must
# fail here, not turn into a long source build.
"$venv/bin/python" -m pip install -q --only-binary=:all: -r requirements-test.txt \
    -c requirements-test.lock
echo "setup: building and installing memtamer into $venv"
"$venv/bin/python" -m pip install -q --no-build-isolation .
