#!/usr/bin/env bash
# Prints the CPythons (3.11 or later) this machine has, one interpreter path
# and its venv a line ("<python> <venv>"): the default python first (its venv
# is .venv), then one of each other minor version (.venv-3.X), from pyenv's
# versions and from python3.X on PATH.  Free-threaded builds (python3.13t) are
# left out: memtamer refuses to load there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version_of() {
    "$1" -c 'import sys, sysconfig
if sys.implementation.name == "cpython" and sys.version_info >= (3, 11) \
        and not sysconfig.get_config_var("Py_GIL_DISABLED"):
    print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

default=${PYTHON:-python3}
candidates=("$default")
if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    for py in "$root"/versions/3.*/bin/python3; do
        [ -x "$py" ] && candidates+=("$py")
    done
fi
for minor in $(seq 11 30); do
    command -v "python3.$minor" >/dev/null 2>&1 && candidates+=("$(command -v "python3.$minor")")
done

seen=" "
for py in "${candidates[@]}"; do
    version=$(version_of "$py")
    [ -n "$version" ] || continue
    case "$seen" in *" $version "*) continue ;; esac
    if [ "$seen" = " " ]; then venv=.venv; else venv=.venv-$version; fi
    seen="$seen$version "
    echo "$py $venv"
done
