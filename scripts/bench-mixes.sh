#!/usr/bin/env bash
# KL divergence against bits per weight for llama.cpp's mixes on stories-llama-7m
# (shared): llmq RTN and GPTQ at each mix, and llama.cpp's own file of the same
# mix made with its importance matrix from the same calibration text, and
# llmq --target-bpw (GPTQ, types chosen per tensor) at each mix's size
# (llama-quantize --imatrix, the shared imatrix.gguf; built by
# scripts/build-llamacpp-tools.sh, skipped when absent). Every file is scored by
# the same evaluator: `llmq ppl --protocol llamacpp --ctx 256 --kl-base MODEL`
# on the evaluation text. bpw = tensor bytes × 8 / parameters (llmq inspect).
#
# usage: bash scripts/bench-mixes.sh [BUILD_DIR]
#   MIXES="q2_k q3_k_m q4_k_s q4_k_m iq4_xs q5_k_m q6_k"   SAMPLES=128 (× 256 tokens)
#   AUTO_BPW="2.8 3.0 6.5 8.5"   further --target-bpw points, to span the curve
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
llmq=$build/llmq
lbin=${LLAMACPP_BIN:-$build/llamacpp-build/bin}
shared=${LLMQ_SHARED:-../shared}
model=$shared/models/stories-llama-7m
calib=$shared/data/tinystories/tinystories_calib.txt
eval=$shared/data/tinystories/tinystories_eval.txt
imatrix=$model/llamacpp/imatrix.gguf
mixes=${MIXES-"q2_k q3_k_m q4_k_s q4_k_m iq4_xs q5_k_m q6_k"}
auto_bpw=${AUTO_BPW-"2.8 3.0 6.5 8.5"}
samples=${SAMPLES:-128}
out=$build/bench-mixes
mkdir -p "$out"

[ -x "$llmq" ] || { echo "bench-mixes: build $llmq first" >&2; exit 2; }
[ -f "$model/model.safetensors" ] || { echo "bench-mixes: $model is absent" >&2; exit 2; }
have_llamacpp=0
[ -x "$lbin/llama-quantize" ] && [ -f "$imatrix" ] && have_llamacpp=1

# bpw and KL of one file: "bpw ppl kl top1"
score() {
    local bpw r
    bpw=$("$llmq" inspect "$1" --json | python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.3f" % (8 * j["tensor_bytes"] / j["parameters"]))')
    r=$("$llmq" ppl "$1" --text "$eval" --ctx 256 --protocol llamacpp --kl-base "$model" --json 2>/dev/null | tail -n1)
    python3 -c 'import json,sys; j=json.loads(sys.argv[2]); print(sys.argv[1], "%.4f" % j["ppl"], "%.6f" % j["kld"], "%.2f%%" % (100 * j["top1_agree"]))' "$bpw" "$r"
}

echo "stories-llama-7m, eval $(basename "$eval"), llama.cpp protocol ctx 256, KL against the bf16 original;"
echo "llmq calibration: $samples × 256 tokens of $(basename "$calib"); llama.cpp: llama-quantize --imatrix $(basename "$imatrix")"
echo
echo "| mix | file | bpw | ppl | KL | top-1 | KL / llama.cpp imatrix |"
echo "|---|---|---:|---:|---:|---:|---:|"
if [ $have_llamacpp = 1 ]; then
    "$llmq" quantize "$model" -o "$out/f32.gguf" --type f32 >/dev/null 2>&1
fi
for mix in $mixes; do
    ref_kl=""
    if [ $have_llamacpp = 1 ]; then
        lc=$(echo "$mix" | tr a-z A-Z)
        "$lbin/llama-quantize" --imatrix "$imatrix" "$out/f32.gguf" "$out/llamacpp-$mix.gguf" "$lc" >"$out/llamacpp-$mix.log" 2>&1
        set -- $(score "$out/llamacpp-$mix.gguf")
        ref_kl=$3
        echo "| $mix | llama.cpp imatrix | $1 | $2 | $3 | $4 | 1.00 |"
    fi
    for method in rtn gptq; do
        f=$out/llmq-$mix-$method.gguf
        "$llmq" quantize "$model" -o "$f" --type "$mix" --method "$method" --calib "$calib" --calib-samples "$samples" \
            --calib-seqlen 256 >"$out/llmq-$mix-$method.log" 2>&1
        set -- $(score "$f")
        bpw=$1
        ratio=$([ -n "$ref_kl" ] && python3 -c "print(f'{$3 / $ref_kl:.2f}')" || echo "—")
        echo "| $mix | llmq $method | $1 | $2 | $3 | $4 | $ratio |"
    done
    # the types chosen per tensor at the same size (the sensitivity table is measured once and reused)
    f=$out/llmq-$mix-auto.gguf
    [ -f "$out/sens.json" ] && cp "$out/sens.json" "$f.sens.json"
    "$llmq" quantize "$model" -o "$f" --target-bpw "$bpw" --method gptq --calib "$calib" --calib-samples "$samples" \
        --calib-seqlen 256 >"$out/llmq-$mix-auto.log" 2>&1
    [ -f "$out/sens.json" ] || cp "$f.sens.json" "$out/sens.json"
    set -- $(score "$f")
    ratio=$([ -n "$ref_kl" ] && python3 -c "print(f'{$3 / $ref_kl:.2f}')" || echo "—")
    echo "| $mix | llmq gptq --target-bpw $bpw | $1 | $2 | $3 | $4 | $ratio |"
done
for bpw in $auto_bpw; do
    f=$out/llmq-auto-$bpw.gguf
    [ -f "$out/sens.json" ] && cp "$out/sens.json" "$f.sens.json"
    "$llmq" quantize "$model" -o "$f" --target-bpw "$bpw" --method gptq --calib "$calib" --calib-samples "$samples" \
        --calib-seqlen 256 >"$out/llmq-auto-$bpw.log" 2>&1
    [ -f "$out/sens.json" ] || cp "$f.sens.json" "$out/sens.json"
    set -- $(score "$f")
    echo "| — | llmq gptq --target-bpw $bpw | $1 | $2 | $3 | $4 | — |"
done
