#!/usr/bin/env bash
# The test command: sets everything up on a fresh machine, then runs every
# test under every CPython 3.11+ the machine has (scripts/pythons.sh), each in
# its own venv, and fails if any of them fails.  The first (default) Python
# runs the whole suite; the others skip the tests marked `once` (they test
# files, not the interpreter).  While one Python's tests run, the next
# Python's venv is set up in the background.  Arguments go to every pytest.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mapfile -t pythons < <(bash scripts/pythons.sh)
if [ ${#pythons[@]} -eq 0 ]; then
    echo "test: no CPython 3.11 or later found (set PYTHON, or put python3.X on PATH)"
    exit 1
fi
logs=build/test-logs
mkdir -p "$logs"

setup() { # python venv -> its log; the exit status in <log>.rc
    local log="$logs/setup-${2#.}.log"
    bash scripts/setup.sh "$1" "$2" >"$log" 2>&1
    echo $? >"$log.rc"
}

read -r py venv <<<"${pythons[0]}"
setup "$py" "$venv"
# The wheels (tests/test_wheel.py installs each Python's) build meanwhile.
bash scripts/wheel.sh >"$logs/wheel.log" 2>&1 &
failed=0
summaries=()
for i in "${!pythons[@]}"; do
    read -r py venv <<<"${pythons[$i]}"
    next_setup=""
    if [ $((i + 1)) -lt ${#pythons[@]} ]; then
        read -r next_py next_venv <<<"${pythons[$((i + 1))]}"
        setup "$next_py" "$next_venv" &
        next_setup=$!
    fi
    log="$logs/setup-${venv#.}.log"
    cat "$log"
    version=$("$py" -c 'import platform; print(platform.python_version())')
    if [ "$(cat "$log.rc")" != 0 ]; then
        summaries+=("Python $version ($venv): setup failed (see $log)")
        failed=1
    else
        echo "test: Python $version ($venv)"
        once=()
        [ "$i" -eq 0 ] || once=(-m "not once")
        out="$logs/pytest-${venv#.}.log"
        "$venv/bin/python" -m pytest -q -rs --strict-skips -p no:cacheprovider "${once[@]}" \
            tests "$@" 2>&1 | tee "$out"
        status=${PIPESTATUS[0]}
        # 5: every test deselected (only `once` tests were asked for): fine after the first.
        if [ "$status" -eq 5 ] && [ "$i" -gt 0 ]; then status=0; fi
        [ "$status" -eq 0 ] || failed=1
        summaries+=("Python $version ($venv): $(grep -E '^=* ?[0-9]+ (passed|failed|error)|no tests ran' "$out" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//') (exit $status)")
    fi
    [ -z "$next_setup" ] || wait "$next_setup"
done

echo
echo "test: summary per Python"
printf '  %s\n' "${summaries[@]}"
if [ "$failed" -eq 0 ]; then
    echo "test: all ${#pythons[@]} Pythons passed"
else
    echo "test: FAILED on at least one of ${#pythons[@]} Pythons"
fi
exit "$failed"
