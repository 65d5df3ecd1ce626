#!/bin/sh
# Runs every test program in $1 (with tools from $2) and every tests/*/test_*.sh script, shows
# their output, and ends with the totals line "N passed, N failed". Exits non-zero if any check
# failed or a program crashed.
dir=${1:-build/tests}
export SD_BIN_DIR=${2:-bin}
passed=0 failed=0 crashed=0
# Then the scripts of tests/*/ (sd-server's integration test), which print the same totals line.
for t in "$dir"/test_* "$(dirname "$0")"/*/test_*.sh; do
    [ -x "$t" ] || continue
    case "$t" in *.d|*.o) continue ;; esac
    echo "== $(basename "$t")"
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    last=$(printf '%s\n' "$out" | tail -n 1)
    p=$(printf '%s\n' "$last" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
    f=$(printf '%s\n' "$last" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
    if [ -z "$p" ]; then
        echo "FAIL $(basename "$t") ended without a summary (exit status $rc)"
        crashed=$((crashed + 1))
        continue
    fi
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $(basename "$t") exited with status $rc"
        crashed=$((crashed + 1))
    fi
done
failed=$((failed + crashed))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
