#!/usr/bin/env bash
# Calibration over MPI ranks on one machine (llmq/dist.h): GPTQ of one
# real-shape decoder layer (build/shapes/NAME, as bench-realsize.sh writes it)
# by one process with 1 thread, and by mpirun -np 2 with 1 thread each; the
# time per stage (rank 0's), the bytes each rank all-reduced, peak RSS, and
# whether the files are the same. Prints a Markdown table.
#
# usage: scripts/bench-mpi.sh [BUILD_DIR (default build)]
# env:   SHAPE (llama2-7b), CALIB_SAMPLES (16), CALIB_SEQLEN (512), METHOD (gptq), RANKS ("1 2"),
#        BASELINE (an llmq binary to time first in one process, e.g. a build of an earlier commit)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shape=${SHAPE:-llama2-7b}
dir=${SHAPES_DIR:-$build/shapes}/$shape
samples=${CALIB_SAMPLES:-16}
seqlen=${CALIB_SEQLEN:-512}
method=${METHOD:-gptq}
ranks=${RANKS:-"1 2"}
[ -f "$dir/config.json" ] || { echo "bench-mpi: $dir is absent (scripts/bench-realsize.sh writes it)" >&2; exit 1; }
make -s -C "$root" MPI=1 build-mpi/llmq >/dev/null
mpi=$root/build-mpi/llmq
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
as_root=()
[ "$(id -u)" -eq 0 ] && as_root=(--allow-run-as-root)
echo "GPTQ of one $shape layer, q4_k, $samples × $seqlen calibration tokens, 1 thread per rank ($(date -u +%F), $(nproc) cores)"
echo
echo "| ranks | wall s | forward s | Hessian s | solver s | in collectives s | all-reduced per rank MiB | peak RSS rank 0 MiB | sha256 |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for n in ${BASELINE:+baseline} $ranks; do
    start=$(date +%s.%N)
    if [ "$n" = baseline ]; then
        "$BASELINE" quantize "$dir" -o "$out/q$n.gguf" --method "$method" --type q4_k --calib "$dir/calib.txt" --calib-samples "$samples" \
            --calib-seqlen "$seqlen" --threads 1 --json > "$out/q$n.json" 2> "$out/q$n.err"
    elif [ "$n" -eq 1 ]; then
        "$mpi" quantize "$dir" -o "$out/q$n.gguf" --method "$method" --type q4_k --calib "$dir/calib.txt" --calib-samples "$samples" \
            --calib-seqlen "$seqlen" --threads 1 --json > "$out/q$n.json" 2> "$out/q$n.err"
    else
        mpirun "${as_root[@]}" --oversubscribe -np "$n" "$mpi" quantize "$dir" -o "$out/q$n.gguf" --method "$method" --type q4_k \
            --calib "$dir/calib.txt" --calib-samples "$samples" --calib-seqlen "$seqlen" --threads 1 --json > "$out/q$n.json" 2> "$out/q$n.err"
    fi
    wall=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
    python3 - "$out/q$n.json" "$n" "$wall" "$(sha256sum < "$out/q$n.gguf" | cut -c1-16)" <<'PY'
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
s = lambda k: round(sum(l.get('seconds', {}).get(k, 0) for l in j.get('layers', [])), 1)
red = j.get('ranks', {}).get('bytes_all_reduced', 0) / 2**20
coll = j.get('ranks', {}).get('seconds_in_collectives', 0)
print(f"| {sys.argv[2]} | {sys.argv[3]} | {s('forward')} | {s('hessian')} | {s('solver')} | {coll:.1f} | {red:.0f} | {j['peak_rss_bytes'] // 2**20} | {sys.argv[4]} |")
PY
done
