#!/usr/bin/env bash
# make demo: the main job on the project's own default model (or MODEL=dir|hub-id TEXT=file):
# perplexity of the original, then, for each quantization method the build has,
# quantize and report size, bits per weight, perplexity, KL divergence and time.
set -euo pipefail
cd "$(dirname "$0")/.."
llmq=build/llmq
model=${1:-models/llmq-demo}
text=${2:-}
ctx=${DEMO_CTX:-256}
if [ "$model" = "models/llmq-demo" ] && [ ! -f "$model/model.safetensors" ]; then
    echo "demo: writing the project's default model to $model"
    $llmq synth "$model"
fi
if [ -z "$text" ]; then
    if [ -f "$model/eval.txt" ]; then text="$model/eval.txt"
    else echo "demo: give TEXT=<file> for $model" >&2; exit 2; fi
fi
out=build/demo-out
mkdir -p "$out"
calib="$model/calib.txt"
[ -f "$calib" ] || calib="$text"

json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[2])[sys.argv[1]])' "$1" "$2"; }

echo "demo: model $model, text $text, ctx $ctx"
base=$($llmq ppl "$model" --text "$text" --ctx "$ctx" --json | tail -n1)
printf '\n| %-18s | %10s | %6s | %9s | %10s | %7s |\n' method size bpw ppl "KL" seconds
printf '|%s|%s|%s|%s|%s|%s|\n' "--------------------" "------------" "--------" "-----------" "------------" "---------"
src_bytes=$(du -bc "$model"/*.safetensors | tail -n1 | cut -f1)
printf '| %-18s | %10s | %6s | %9.4f | %10s | %7s |\n' "original" "$src_bytes" "-" "$(json_field ppl "$base")" "-" "-"

if $llmq quantize --help >/dev/null 2>&1; then
    for spec in "rtn q4_0" "rtn q4_k" "gptq q4_k" "awq q4_k" "awq+gptq q4_k"; do
        set -- $spec
        method=$1 type=$2
        file="$out/demo-$method-$type.gguf"
        start=$(date +%s.%N)
        if ! q=$($llmq quantize "$model" -o "$file" --method "$method" --type "$type" --calib "$calib" --calib-samples 32 --json 2>"$out/quantize.err" | tail -n1); then
            printf '| %-18s | %s\n' "$method $type" "skipped: $(tail -n1 "$out/quantize.err")"
            continue
        fi
        secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
        r=$($llmq ppl "$file" --text "$text" --ctx "$ctx" --kl-base "$model" --json | tail -n1)
        printf '| %-18s | %10s | %6.2f | %9.4f | %10.6f | %7.1f |\n' "$method $type" "$(stat -c %s "$file")" \
            "$(json_field bits_per_weight "$q")" "$(json_field ppl "$r")" "$(json_field kld "$r")" "$secs"
    done
else
    echo
    echo "(this build has no 'llmq quantize' yet: only the original is measured)"
fi
