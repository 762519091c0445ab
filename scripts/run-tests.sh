#!/usr/bin/env bash
# Runs every Criterion test binary, then prints one closing tally line.
set -u
passed=0; failed=0; skipped=0; status=0
for t in "$@"; do
    echo "== $t"
    out=$("$t" --jobs "${TEST_JOBS:-2}" 2>&1); rc=$?
    echo "$out" | grep -vE '^\[----\] +$' 
    line=$(echo "$out" | grep -E 'Synthesis: Tested' | tail -n1)
    if [ -z "$line" ]; then echo "!! $t produced no Criterion synthesis (rc=$rc)"; failed=$((failed+1)); status=1; continue; fi
    tested=$(echo "$line" | sed -E 's/.*Tested: *([0-9]+).*/\1/')
    pass=$(echo "$line" | sed -E 's/.*Passing: *([0-9]+).*/\1/')
    fail=$(echo "$line" | sed -E 's/.*Failing: *([0-9]+).*/\1/')
    crash=$(echo "$line" | sed -E 's/.*Crashing: *([0-9]+).*/\1/')
    skip=$(echo "$out" | grep -cE '\[SKIP\]')
    passed=$((passed + pass)); failed=$((failed + fail + crash)); skipped=$((skipped + skip))
    [ "$rc" -ne 0 ] && status=1
    : "$tested"
done
echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] || status=1
exit $status
