#!/usr/bin/env bash
# Prompt processing at real size against llama.cpp (issue 13): `llmq ppl` and
# llama.cpp's llama-perplexity on the same GGUF file, the same text and thread
# count, with llama-perplexity's protocol (windows of CTX tokens, BOS first,
# the second half scored). Part of `make bench` (after bench-realsize.sh).
#
# For each shape, the one-layer checkpoint of scripts/bench-realsize.sh (`llmq
# synth --shape NAME --layers 1`: embedding, one decoder layer, head) quantized
# once per type with `llmq quantize --method rtn`; then per type and thread count:
#   llama.cpp: llama-perplexity -m F -f eval.txt -c CTX --chunks CHUNKS -t T
#              (its "seconds per pass" times the passes: evaluation without loading)
#   llmq:      llmq ppl F --text eval.txt --ctx CTX --max-chunks CHUNKS --protocol llamacpp
#              --threads T --json, once --exact (fp32 activations) and once as it
#              runs by default (int8 activations where that is the faster path);
#              "seconds" of its JSON: evaluation without loading or tokenizing.
# Both engines skip the last layer's feed-forward half for the rows no logit is
# read from, so one decoder layer is a fair sample of many.
# The binaries come from scripts/build-llamacpp-tools.sh (llama.cpp's source as
# node-llama-cpp ships it on npm, built here with GGML_NATIVE).
#
# usage: bash scripts/bench-pp.sh [BUILD_DIR]
#   SHAPES="llama2-7b llama3-8b"                shapes (llmq synth --list-shapes)
#   TYPES="q4_0 q4_k q4_k_m q6_k q8_0 q3_k"     weight types (RTN)
#   THREADS="1 $(nproc)"                        thread counts
#   CTX=512 CHUNKS=4                            windows (llama.cpp evaluates 4 per pass)
#   REPS=3                                      rounds (alternating the engines); the best of each
#   SHAPES_DIR=build/shapes                     where the checkpoints are kept between runs
# Skips with a message (exit 0) when the llama.cpp tools cannot be built.
# The environment is the user's: nothing here sets OMP_* or OPENBLAS_*.
set -euo pipefail
BUILD=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/realsize-lib.sh
LLMQ=$BUILD/llmq
SHAPES=${SHAPES:-"llama2-7b llama3-8b"}
TYPES=${TYPES:-"q4_0 q4_k q4_k_m q6_k q8_0 q3_k"}
THREADS=${THREADS:-"1 $(nproc)"}
CTX=${CTX:-512}
CHUNKS=${CHUNKS:-4}
REPS=${REPS:-3}
SHAPES_DIR=${SHAPES_DIR:-build/shapes}
OUT=$BUILD/bench-pp-realsize
mkdir -p "$OUT" "$SHAPES_DIR"

bin=$(bash scripts/build-llamacpp-tools.sh | tail -1) || true
if [ -z "$bin" ] || [ ! -x "$bin/llama-perplexity" ]; then
    echo "bench-pp: skipped: llama-perplexity could not be built (scripts/build-llamacpp-tools.sh)"
    exit 0
fi

echo
echo "## Prompt processing at real size against llama.cpp (scripts/bench-pp.sh), $(cpu_line)"
echo
echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg). OPENBLAS_*/OMP_* as the user has them:" \
     "${OPENBLAS_CORETYPE:+OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE }${OMP_WAIT_POLICY:+OMP_WAIT_POLICY=$OMP_WAIT_POLICY }(nothing else set)."
echo "Evaluation tokens/s (load excluded), $CHUNKS windows of $CTX; llmq's default arithmetic and kernel family in brackets."
echo
echo "| shape | type | threads | llama.cpp tok/s | llmq --exact tok/s | llmq default tok/s | default / llama.cpp | ppl llama.cpp | ppl llmq default | Δ ppl | ppl llmq --exact |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
# --fast when llmq ppl runs int8 by default on this machine (its JSON says), else nothing
llmq_default_fast() {
    echo "[1,2,3,4,5,6,7,8]" >"$OUT/probe-tokens.json"
    "$LLMQ" ppl "$1" --tokens "$OUT/probe-tokens.json" --ctx 4 --max-chunks 1 --json 2>/dev/null |
        python3 -c 'import json,sys; print("--fast" if json.loads(sys.stdin.read().splitlines()[-1])["fast"] else "")'
}

status=0
for shape in $SHAPES; do
    dir=$(shape_checkpoint "$LLMQ" "$SHAPES_DIR" "$shape")
    for type in $TYPES; do
        f=$OUT/$shape-$type.gguf
        if [ ! -f "$f" ] || [ "$LLMQ" -nt "$f" ]; then
            "$LLMQ" quantize "$dir" -o "$f" --method rtn --type "$type" >"$OUT/quantize-$shape-$type.log" 2>&1 ||
                { echo "bench-pp: $shape $type: quantize failed ($OUT/quantize-$shape-$type.log)"; status=1; continue; }
        fi
        for t in $THREADS; do
            log=$OUT/llamacpp-$shape-$type-$t.log
            theirs= exact= def=
            # REPS rounds, the three runs alternated so that all see the same machine; the best of each
            for ((r = 0; r < REPS; r++)); do
                "$bin/llama-perplexity" -m "$f" -f "$dir/eval.txt" -c "$CTX" --chunks "$CHUNKS" -t "$t" >"$log" 2>&1 ||
                    { echo "bench-pp: llama-perplexity failed ($log)"; status=1; continue 2; }
                # one "seconds per pass" line (the first pass); a pass is min(4, chunks) windows
                theirs+=$(python3 - "$log" "$CHUNKS" "$CTX" <<'EOF'
import re, sys, math
text = open(sys.argv[1], errors="replace").read()
chunks, ctx = int(sys.argv[2]), int(sys.argv[3])
per_pass = float(re.search(r"([0-9.]+) seconds per pass", text).group(1))
ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", text).group(1))
n_seq = min(4, chunks)
print(f"{chunks * ctx / (per_pass * math.ceil(chunks / n_seq)):.1f} {ppl}")
EOF
)$'\n'
                exact+=$("$LLMQ" ppl "$f" --text "$dir/eval.txt" --ctx "$CTX" --max-chunks "$CHUNKS" --protocol llamacpp --threads "$t" --exact --json 2>/dev/null | tail -1)$'\n'
                def+=$("$LLMQ" ppl "$f" --text "$dir/eval.txt" --ctx "$CTX" --max-chunks "$CHUNKS" --protocol llamacpp --threads "$t" --json 2>/dev/null | tail -1)$'\n'
            done
            python3 - "$shape" "$type" "$t" "$theirs" "$exact" "$def" <<'EOF'
import json, sys
shape, typ, t, theirs, exact, dflt = sys.argv[1:]
tok_l, ppl_l = max(tuple(map(float, line.split())) for line in theirs.split("\n") if line.strip())
best = lambda runs: max((json.loads(line) for line in runs.split("\n") if line.strip()), key=lambda j: j["tokens_per_second"])
e, d = best(exact), best(dflt)
mode = ("int8, " if d["fast"] else "exact, ") + d["kernel"]
print(f"| {shape} | {typ} | {t} | {tok_l:.0f} | {e['tokens_per_second']:.0f} | {d['tokens_per_second']:.0f} ({mode}) | "
      f"{d['tokens_per_second'] / tok_l:.2f} | {ppl_l:.2f} | {d['ppl']:.2f} | {100 * (d['ppl'] / ppl_l - 1):+.2f}% | {e['ppl']:.2f} |")
EOF
        done
    done
done

# Where a prompt's time goes (bench_forward --json: 512 tokens, the last position's logits, as llama-bench's pp):
# the linears alone with the file's weights and llmq's default arithmetic, the head for one row, the rest
# (attention, norms, RoPE); the linears' GOP/s against the vpdpbusd ceiling measured in the same run.
bf=$BUILD/bench/bench_forward
if [ -x "$bf" ]; then
    t=${THREADS##* }
    echo
    echo "Split of bench_forward's pp512 at $t threads (llmq default arithmetic):"
    echo
    echo "| shape | type | pp512 tok/s | linears ms | linears GOP/s | of int8 peak | head ms | attention + rest ms |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for shape in $SHAPES; do
        for type in $TYPES; do
            f=$OUT/$shape-$type.gguf
            [ -f "$f" ] || continue
            fast=$(llmq_default_fast "$f")
            j=$("$bf" "$f" --threads "$t" --reps 3 $fast --json 2>/dev/null | tail -1)
            python3 - "$shape" "$type" "$j" <<'EOF'
import json, sys
shape, typ, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
peak = j["int8_peak_gop_s"]
share = f"{100 * j['linears_gop_s'] / peak:.0f}%" if peak and j["fast"] else "–"
print(f"| {shape} | {typ} | {j['tok_s']:.0f} | {j['linears_ms']:.0f} | {j['linears_gop_s']:.0f} | {share} (of {peak:.0f}) | "
      f"{j['head_ms']:.1f} | {j['rest_ms']:.0f} |")
EOF
        done
    done
fi
exit $status
