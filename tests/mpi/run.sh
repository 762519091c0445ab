#!/usr/bin/env bash
# A quantize run over several MPI ranks writes, byte for byte, the file one
# process writes (llmq/dist.h): stories-llama-7m with gptq, gptq --act-order,
# awq and awq+gptq, q4_k with groups of 128, on 10 calibration windows of 512
# tokens (three units of 4, 4 and 2 windows), by the single-process build, the
# MPI build (`make MPI=1`) without mpirun, and `mpirun --oversubscribe -np 2`
# and `-np 3`. Then a killed rank: mpirun ends non-zero within seconds with no
# output file, and `--resume` finishes the same file.
#
# usage: tests/mpi/run.sh [LLMQ_BINARY (the single-process build)]
# env:   LLMQ_SHARED (default ../shared), MPI_METHODS, MPI_RANKS (default "2 3"),
#        CI=true (a missing Open MPI or model fails instead of skipping)
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
single=${1:-$root/build/llmq}
shared=${LLMQ_SHARED:-$root/../shared}
model=$shared/models/stories-llama-7m
calib=$shared/data/tinystories/tinystories_calib.txt
methods=${MPI_METHODS:-"gptq gptq--act-order awq awq+gptq"}
ranks=${MPI_RANKS:-"2 3"}
work=$root/build/mpi-test

skip_or_fail() {
    if [ "${CI:-}" = "true" ]; then echo "mpi: FAILED: $*"; exit 1; fi
    echo "mpi: skipped: $*"
    exit 0
}
command -v mpicc >/dev/null && command -v mpirun >/dev/null || skip_or_fail "Open MPI is not installed (scripts/install-deps.sh installs openmpi-bin, libopenmpi-dev)"
[ -f "$model/model.safetensors" ] || skip_or_fail "$model is absent"
[ -x "$single" ] || skip_or_fail "$single is not built"
make -s -C "$root" MPI=1 build-mpi/llmq >/dev/null || { echo "mpi: FAILED: make MPI=1"; exit 1; }
mpi=$root/build-mpi/llmq
run_as_root=()
[ "$(id -u)" -eq 0 ] && run_as_root=(--allow-run-as-root)
mpirun_n() { local n=$1; shift; mpirun "${run_as_root[@]}" --oversubscribe -np "$n" "$@"; }

rm -rf "$work" && mkdir -p "$work"
status=0
common=(--type q4_k --group-size 128 --calib "$calib" --calib-samples 10 --calib-seqlen 512 --threads 1)
for m in $methods; do
    method=${m%%--*}
    extra=()
    [ "$m" != "$method" ] && extra=(--"${m#*--}")
    tag=${m//+/_}
    "$single" quantize "$model" -o "$work/$tag.single.gguf" --method "$method" "${extra[@]}" "${common[@]}" >/dev/null 2>"$work/$tag.single.log" ||
        { echo "mpi: FAILED: $m in one process: $(tail -1 "$work/$tag.single.log")"; status=1; continue; }
    want=$(sha256sum < "$work/$tag.single.gguf" | cut -c1-64)
    "$mpi" quantize "$model" -o "$work/$tag.mpi1.gguf" --method "$method" "${extra[@]}" "${common[@]}" >/dev/null 2>"$work/$tag.mpi1.log"
    got=$(sha256sum < "$work/$tag.mpi1.gguf" 2>/dev/null | cut -c1-64)
    [ "$got" = "$want" ] || { echo "mpi: FAILED: $m: the MPI build without mpirun wrote ${got:-nothing}, one process $want"; status=1; }
    for n in $ranks; do
        mpirun_n "$n" "$mpi" quantize "$model" -o "$work/$tag.np$n.gguf" --method "$method" "${extra[@]}" "${common[@]}" --json \
            >"$work/$tag.np$n.json" 2>"$work/$tag.np$n.log"
        got=$(sha256sum < "$work/$tag.np$n.gguf" 2>/dev/null | cut -c1-64)
        # the work was shared: every rank held some of the 10 windows, and sums crossed between them
        split=$(python3 -c "
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])['ranks']
w = [r['count'] for r in j['windows']]
print('ok' if j['count'] == $n and sum(w) == 10 and min(w) > 0 and j['bytes_all_reduced'] > 0 else f'not shared: {j}')" "$work/$tag.np$n.json" 2>&1 | tail -1)
        if [ "$got" = "$want" ] && [ "$split" = ok ]; then echo "mpi: $m over $n ranks: the same file as one process (sha256 ${want:0:16})"
        else echo "mpi: FAILED: $m over $n ranks wrote ${got:-nothing}, one process $want; $split: $(tail -2 "$work/$tag.np$n.log")"; status=1; fi
    done
done

# A killed rank: rank 1 dies (SIGKILL) once layer 0 is recorded; mpirun must
# end within seconds, non-zero, leaving no output and no temp file beside it.
out=$work/killed.gguf
kill_common=(--method gptq --type q4_k --group-size 128 --calib "$calib" --calib-samples 40 --calib-seqlen 512 --threads 1)
"$single" quantize "$model" -o "$work/killed.single.gguf" "${kill_common[@]}" >/dev/null 2>&1 || { echo "mpi: FAILED: the killed-rank reference"; status=1; }
mpirun_n 2 "$mpi" quantize "$model" -o "$out" "${kill_common[@]}" >/dev/null 2>"$work/killed.log" &
launcher=$!
victim=
for _ in $(seq 1 600); do
    if [ -f "$out.partial/layer-00000.bin" ]; then
        for p in $(pgrep -f "build-mpi/llmq quantize .*killed.gguf"); do
            tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && victim=$p
        done
        [ -n "$victim" ] && break
    fi
    sleep 0.05
done
if [ -z "$victim" ]; then
    echo "mpi: FAILED: rank 1 of the run to kill was not found after layer 0"; status=1; wait "$launcher"
else
    kill -9 "$victim"
    t0=$(date +%s.%N)
    wait "$launcher"; rc=$?
    took=$(echo "$(date +%s.%N) - $t0" | bc)
    leftovers=$(ls "$work" | grep -c '^killed\.gguf\.tmp' || true)
    if [ "$rc" -ne 0 ] && [ ! -e "$out" ] && [ "$leftovers" -eq 0 ] && [ "$(echo "$took < 20" | bc)" -eq 1 ]; then
        echo "mpi: a killed rank ends the run in ${took:0:4} s, exit $rc, no output"
    else
        echo "mpi: FAILED: killed rank: exit $rc after ${took:0:4} s, output $([ -e "$out" ] && echo present || echo absent), $leftovers temp files"; status=1
    fi
    mpirun_n 2 "$mpi" quantize "$model" -o "$out" "${kill_common[@]}" --resume >/dev/null 2>"$work/resumed.log"
    if cmp -s "$out" "$work/killed.single.gguf" && grep -q "resuming after layer" "$work/resumed.log"; then
        echo "mpi: --resume over 2 ranks after the kill: the same file as one process ($(grep -o 'resuming after layer [0-9/]*' "$work/resumed.log"))"
    else
        echo "mpi: FAILED: --resume after the kill: $(tail -2 "$work/resumed.log")"; status=1
    fi
fi
[ "$status" -eq 0 ] && echo "mpi: ok"
exit "$status"
