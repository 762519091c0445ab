#!/usr/bin/env bash
# Quality table for BENCHMARKS.md: perplexity and KL divergence from the
# original of each method × type, on stories-llama-7m (shared) with the shared
# TinyStories calibration and evaluation texts, protocol gptq, ctx 256.
# Usage: scripts/bench-quality.sh [MODEL_DIR] [CALIB] [EVAL]   (env: TYPES, METHODS, SAMPLES, KEEP, GROUP_SIZES, LLMQ)
# METHODS: rtn, gptq, gptaq, awq, awq+gptq, awq+gptaq, block, gptaq+block, each with -act (--act-order) and/or
# -refine (--refine 2). LLMQ: the binary (default build/llmq).
# GROUP_SIZES (default "0 128"): --group-size values, 0 = the native blocks (the CLI's default).
set -euo pipefail
cd "$(dirname "$0")/.."
llmq=${LLMQ:-build/llmq}
shared=${LLMQ_SHARED:-../shared}
model=${1:-$shared/models/stories-llama-7m}
calib=${2:-$shared/data/tinystories/tinystories_calib.txt}
eval=${3:-$shared/data/tinystories/tinystories_eval.txt}
types=${TYPES:-"q4_0 q4_1 q4_k q3_k"}
methods=${METHODS:-"rtn gptq gptq-act awq awq+gptq"}
samples=${SAMPLES:-128}
groups=${GROUP_SIZES:-"0 128"}
# The reference GPTQ/AWQ tools keep embedding and head unquantized: so does this table.
keep=${KEEP:---keep-output f16 --keep-embed f16}
ctx=256
out=build/bench-quality
mkdir -p "$out"
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[2])[sys.argv[1]])' "$1" "$2"; }

echo "model $model, calibration $calib ($samples × 512 tokens), eval $eval, protocol gptq ctx $ctx, $keep"
echo
base=$($llmq ppl "$model" --text "$eval" --ctx $ctx --json | tail -n1)
echo "| type | method | group | bpw | ppl | KL | top-1 | quantize s |"
echo "|---|---|---|---|---|---|---|---|"
echo "| bf16 | original | - | 16 | $(printf %.4f "$(field ppl "$base")") | 0 | 100% | - |"
for g in $groups; do
for t in $types; do
    for m in $methods; do
        # METHOD[-act][-refine]: gptq-act = gptq --act-order, gptaq-refine = gptaq --refine 2
        meth=${m%%-*}
        extra=""
        case "$m" in *-act*) extra="$extra --act-order" ;; esac
        case "$m" in *-refine*) extra="$extra --refine 2" ;; esac
        f="$out/$t-$m-g$g.gguf"
        q=$($llmq quantize "$model" -o "$f" --method "$meth" $extra --type "$t" --group-size "$g" --calib "$calib" --calib-samples "$samples" \
            --calib-seqlen 512 $keep --json 2>"$out/$t-$m-g$g.log" | tail -n1)
        r=$($llmq ppl "$f" --text "$eval" --ctx $ctx --kl-base "$model" --json | tail -n1)
        printf '| %s | %s | %s | %.3f | %.4f | %.6f | %.2f%% | %.1f |\n' "$t" "$m" "$g" "$(field bits_per_weight "$q")" "$(field ppl "$r")" \
            "$(field kld "$r")" "$(awk -v a="$(field top1_agree "$r")" 'BEGIN{print 100*a}')" "$(field seconds "$q")"
    done
done
done
