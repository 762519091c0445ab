#!/usr/bin/env bash
# Runs every benchmark program (build/bench/bench_*), each printing its own
# table; results are meant to be copied into BENCHMARKS.md with the date and machine.
set -euo pipefail
# OpenBLAS picks its kernels for the CPU unless OPENBLAS_CORETYPE forces a core;
# an inherited setting (this project's build machines export Haswell, the AVX2
# kernels, on an AVX-512 CPU) would make sgemm and the prompt path ~40% slower
# than what the CPU does, while llama.cpp picks its best variant. Benchmarks
# measure the CPU: set LLMQ_BENCH_KEEP_CORETYPE=1 to keep the inherited value.
[ -n "${LLMQ_BENCH_KEEP_CORETYPE:-}" ] || unset OPENBLAS_CORETYPE
echo "# llmq bench — $(date -u +%Y-%m-%dT%H:%MZ) — $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') — $(nproc) cores"
for b in "$@"; do
    echo
    echo "## $(basename "$b")"
    "$b"
done
