#!/usr/bin/env bash
# Prompt processing (pp512) of llmq against llama.cpp on the same GGUF file and
# the same thread count; the last part of `make bench`.
#
# For each type (default q4_0 q4_k q8_0) stories-llama-7m is quantized with
# `llmq quantize --method rtn` to build/bench-pp/7m-TYPE.gguf (kept while newer
# than the llmq binary), then both engines evaluate one 512-token prompt on that
# file, alternating llmq and llama.cpp ROUNDS times so that a load spike on the
# machine hits both; each number is the best of REPS timed runs (after one warm-up)
# in each of ROUNDS processes.
#   llmq:      build/bench/bench_forward FILE --threads N --reps REPS --json
#              (every layer over 512 token ids, the output head for the last position only)
#   llama.cpp: tests/conformance/llamacpp_pp.mjs through node-llama-cpp's prebuilt
#              binaries (installed from npm by tests/conformance/install.sh, shared
#              with the conformance check in build/conformance): the first 512 eval
#              token ids in one batch, no logits requested (llama-bench's pp test)
# Both compute logits for the last position only. The token ids differ
# (bench_forward's are synthetic), which changes no amount of work.
#
# usage: scripts/bench-llamacpp.sh [LLMQ_BINARY] [BENCH_FORWARD_BINARY]
# env:   THREADS (default nproc), REPS (default 5), ROUNDS (default 2),
#        TYPES (default "q4_0 q4_k q8_0"), LLMQ_SHARED (default ../shared),
#        NODE_LLAMA_CPP_VERSION (default 3.22.1); OMP_WAIT_POLICY etc. reach llmq only
#        (llama.cpp's prebuilt ggml uses its own thread pool, not OpenMP).
# Skips with a message (exit 0) without node/npm, ../shared, the binaries or the npm
# install; exits 1 when a quantization or a measurement fails.
set -u
# As scripts/bench.sh: OpenBLAS picks its kernels for the CPU unless an
# inherited OPENBLAS_CORETYPE forces a core (LLMQ_BENCH_KEEP_CORETYPE=1 keeps it).
[ -n "${LLMQ_BENCH_KEEP_CORETYPE:-}" ] || unset OPENBLAS_CORETYPE
root=$(cd "$(dirname "$0")/.." && pwd)
llmq=${1:-$root/build/llmq}
bench_forward=${2:-$root/build/bench/bench_forward}
shared=${LLMQ_SHARED:-$root/../shared}
model=$shared/models/stories-llama-7m
threads=${THREADS:-$(nproc)}
reps=${REPS:-5}
rounds=${ROUNDS:-2}
types=${TYPES:-"q4_0 q4_k q8_0"}
version=${NODE_LLAMA_CPP_VERSION:-3.22.1}
work=$root/build/conformance
out=$root/build/bench-pp
ctx=512 # bench_forward's fixed context

echo
echo "## pp512 against llama.cpp (scripts/bench-llamacpp.sh)"
skip() {
    echo "bench-llamacpp: skipped: $*"
    exit 0
}

. "$root/tests/conformance/install.sh"
llamacpp_node_ok || skip "$llamacpp_problem"
[ -f "$model/model.safetensors" ] || skip "$model is absent"
[ -x "$llmq" ] || skip "$llmq is not built (make bench builds it)"
[ -x "$bench_forward" ] || skip "$bench_forward is not built (make bench builds it)"
llamacpp_install "$work" "$version" || skip "$llamacpp_problem"
cp "$root/tests/conformance/llamacpp_pp.mjs" "$work/"

mkdir -p "$out"
node -e '
const fs = require("fs");
fs.writeFileSync(process.argv[2], JSON.stringify(JSON.parse(fs.readFileSync(process.argv[1], "utf8")).slice(0, Number(process.argv[3]))));
' "$model/eval_tokens.json" "$out/tokens.json" "$ctx" || skip "cannot read $model/eval_tokens.json"

# field NAME JSON: one field of a one-line JSON object ("" when absent or not JSON)
field() { node -e 'try { const v = JSON.parse(process.argv[2])[process.argv[1]]; console.log(v ?? "") } catch (e) { console.log("") }' "$1" "$2"; }
# better A B: the larger of two numbers, "" counting as absent
better() { node -p 'const [a, b] = process.argv.slice(1).map(Number); String(Math.max(a || 0, b || 0) || "")' "$1" "$2"; }

status=0 rows= kernel= variant=
for t in $types; do
    gguf=$out/7m-$t.gguf
    if [ ! -f "$gguf" ] || [ "$llmq" -nt "$gguf" ]; then
        if ! "$llmq" quantize "$model" -o "$gguf" --type "$t" --method rtn >"$out/quantize-$t.log" 2>&1; then
            tail -3 "$out/quantize-$t.log"; echo "bench-llamacpp: $t: llmq quantize failed"; status=1; continue
        fi
    fi
    ours_best= theirs_best=
    for ((r = 0; r < rounds; r++)); do
        ours=$(OMP_NUM_THREADS=$threads "$bench_forward" "$gguf" --threads "$threads" --reps "$reps" --json 2>"$out/llmq-$t.log" | tail -1)
        theirs=$(cd "$work" && node llamacpp_pp.mjs "$gguf" "$out/tokens.json" --ctx "$ctx" --threads "$threads" --reps "$reps" \
                 2>"$out/llamacpp-$t.log" | tail -1)
        ours_best=$(better "$ours_best" "$(field tok_s "$ours")")
        theirs_best=$(better "$theirs_best" "$(field tok_s "$theirs")")
        kernel=$(field kernel "$ours") variant=$(field cpu_variant "$theirs")
    done
    if [ -z "$ours_best" ] || [ -z "$theirs_best" ]; then
        echo "bench-llamacpp: $t: no result (llmq: ${ours:-nothing}; llama.cpp: $(tail -2 "$out/llamacpp-$t.log"))"; status=1; continue
    fi
    rows+=$(node -p 'const [t, bytes, a, b] = process.argv.slice(1);
`| ${t} | ${(bytes / 1048576).toFixed(2)} | ${Number(a).toFixed(0)} | ${Number(b).toFixed(0)} | ${(a / b).toFixed(2)} |`' \
            "$t" "$(stat -c %s "$gguf")" "$ours_best" "$theirs_best")$'\n'
done

echo "stories-llama-7m (RTN), ctx $ctx, threads: $threads, best of $reps runs in each of $rounds rounds;" \
     "llama.cpp: node-llama-cpp $version, ${variant:-unknown} CPU backend; llmq kernel ${kernel:-unknown}"
echo
echo "| type | file MiB | llmq tok/s | llama.cpp tok/s | llmq / llama.cpp |"
echo "|---|---:|---:|---:|---:|"
printf "%s" "$rows"
[ $status -eq 0 ] || echo "bench-llamacpp: FAILED for some types (logs in $out)"
exit $status
