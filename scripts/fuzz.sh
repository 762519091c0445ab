#!/usr/bin/env bash
# Runs each libFuzzer driver for SECONDS, one after the other:
#   scripts/fuzz.sh SECONDS build-fuzz/fuzz_gguf [build-fuzz/fuzz_config ...]
# Seeds come from tests/fuzz/corpus/<target>/ (read-only here); new inputs go to
# build-fuzz/corpus/<target>/ and crashes, leaks and timeouts to
# build-fuzz/artifacts/<target>/. Prints one line per driver (execs, execs/s,
# coverage) and exits non-zero when any driver found something.
# FUZZ_JOBS=N runs N drivers at once (default 1: the machine is shared).
set -u
seconds=${1:?usage: scripts/fuzz.sh SECONDS DRIVER...}
shift
build=${FUZZ_BUILD:-build-fuzz}
status=0

run_one() {
    local bin=$1 target seeds work art log
    target=$(basename "$bin"); target=${target#fuzz_}
    seeds=tests/fuzz/corpus/$target
    work=$build/corpus/$target
    art=$build/artifacts/$target
    log=$build/logs/$target.log
    mkdir -p "$work" "$art" "$(dirname "$log")" "$seeds"
    local dict=()
    [ -f "tests/fuzz/$target.dict" ] && dict=(-dict="tests/fuzz/$target.dict")
    # -timeout: one input taking over 10 s is a finding (a hang); -rss_limit_mb
    # bounds memory; -max_len leaves room for the largest seed.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$art/" "${dict[@]}" "$work" "$seeds" >"$log" 2>&1
    local rc=$?
    local execs rate cov
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n1)
    if [ "$rc" -eq 0 ]; then
        printf 'fuzz %-12s %4ss  %10s execs  %7s exec/s  %s  ok\n' "$target" "$seconds" "${execs:-?}" "${rate:-?}" "$cov"
    else
        printf 'fuzz %-12s FINDING (rc=%d), see %s and %s\n' "$target" "$rc" "$log" "$art"
        grep -E 'ERROR|SUMMARY|fuzz: |runtime error|Test unit written' "$log" | head -n 8
        return 1
    fi
}

jobs=${FUZZ_JOBS:-1}
if [ "$jobs" -le 1 ]; then
    for bin in "$@"; do run_one "$bin" || status=1; done
else
    pids=()
    for bin in "$@"; do
        run_one "$bin" & pids+=($!)
        if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}" || status=1; pids=("${pids[@]:1}"); fi
    done
    for p in "${pids[@]}"; do wait "$p" || status=1; done
fi
exit $status
