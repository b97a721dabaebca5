#!/usr/bin/env bash
# Sets up everything memtamer needs on a fresh Debian machine, idempotently:
# system libraries (apt-get, only where missing), a virtual environment in .venv
# with the test dependencies, and memtamer itself built and installed into it.
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

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-test.txt -c requirements-test.lock
echo "setup: building and installing memtamer"
.venv/bin/python -m pip install -q --no-build-isolation .
