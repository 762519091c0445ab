#!/usr/bin/env bash
# Runs every Criterion test binary, then prints one closing tally line.
set -u
# One test binary at a time, one test at a time: every test gets all cores, and
# OpenMP threads of parallel tests never oversubscribe the machine (busy-waiting
# OpenMP teams competing for 2 cores can slow a test down 10x or more). Passive
# waiting keeps a stray concurrent job from making it much worse.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
passed=0; failed=0; skipped=0; status=0
for t in "$@"; do
    echo "== $t"
    out=$("$t" --jobs "${TEST_JOBS:-1}" 2>&1); rc=$?
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
