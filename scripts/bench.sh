#!/usr/bin/env bash
# Runs every benchmark program (build/bench/bench_*), each printing its own
# table; results are meant to be copied into BENCHMARKS.md with the date and machine.
set -euo pipefail
echo "# llmq bench — $(date -u +%Y-%m-%dT%H:%MZ) — $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') — $(nproc) cores"
for b in "$@"; do
    echo
    echo "## $(basename "$b")"
    "$b"
done
