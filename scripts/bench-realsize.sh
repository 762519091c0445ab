#!/usr/bin/env bash
# Real-size benchmark: one decoder layer (plus embedding and head) of real
# model shapes, written by `llmq synth --shape`, through the forward, ppl and
# quantize at 1 and 2 threads (or THREADS), with the time split per stage and
# projections to the whole model. Prints markdown; BENCHMARKS.md keeps the
# results with the command, machine and date.
#
# usage: bash scripts/bench-realsize.sh [BUILD_DIR]
#   SHAPES="llama2-7b llama3-8b"   shapes (llmq synth --list-shapes)
#   THREADS="1 2"                  thread counts
#   CALIB_SAMPLES=16 CALIB_SEQLEN=512   calibration of the measured GPTQ/AWQ runs
#   METHODS="rtn gptq awq"         quantize methods timed (gptq-act = gptq --act-order, awq+gptq, gptaq)
#   (the RSS bound column: 1.2 × (a layer's weights in fp32 + the calibration
#   activations in and out + two Hessians of the widest input), the issue's)
#   SHAPES_DIR=build/shapes        where the checkpoints are kept between runs
# The environment is the user's: nothing here sets OMP_* or OPENBLAS_*.
set -euo pipefail
BUILD=${1:-build}
LLMQ="$BUILD/llmq"
FWD="$BUILD/bench/bench_forward"
SHAPES=${SHAPES:-"llama2-7b llama3-8b"}
THREADS=${THREADS:-"1 2"}
CALIB_SAMPLES=${CALIB_SAMPLES:-16}
CALIB_SEQLEN=${CALIB_SEQLEN:-512}
METHODS=${METHODS:-"rtn gptq awq"}
SHAPES_DIR=${SHAPES_DIR:-build/shapes}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

[ -x "$LLMQ" ] && [ -x "$FWD" ] || { echo "bench-realsize: build $LLMQ and $FWD first (make bench)" >&2; exit 2; }
mkdir -p "$SHAPES_DIR"
. "$(dirname "$0")/realsize-lib.sh"

echo "## Real size ($(cpu_line))"
echo
echo "One decoder layer of each shape (random BF16 weights, \`llmq synth --shape NAME --layers 1\`), embedding and head included."
echo "Calibration for the timed quantizations: $CALIB_SAMPLES × $CALIB_SEQLEN tokens."
for shape in $SHAPES; do
    dir=$(shape_checkpoint "$LLMQ" "$SHAPES_DIR" "$shape")
    layers_full=$(shape_layers "$shape")
    echo
    echo "### $shape (1 of $layers_full layers)"
    echo
    echo "Forward at ctx 512 (\`bench_forward\`, BF16 weights decoded to fp32 panels) against OpenBLAS sgemm on the same linear shapes:"
    echo
    echo "| threads | forward s | forward GFLOP/s | sgemm GFLOP/s | share |"
    echo "|---:|---:|---:|---:|---:|"
    for t in $THREADS; do
        "$FWD" "$dir" --threads "$t" --reps 3 > "$OUT/fwd" 2>&1 || { echo "bench_forward failed:"; cat "$OUT/fwd"; exit 1; }
        f=$(grep 'llmq forward' "$OUT/fwd" | awk -F'|' '{print $3, $5}')
        g=$(grep 'OpenBLAS sgemm' "$OUT/fwd" | awk -F'|' '{print $5}')
        share=$(grep 'share of sgemm' "$OUT/fwd" | grep -oE '[0-9]+%')
        echo "| $t | $(echo $f | cut -d' ' -f1) | $(echo $f | cut -d' ' -f2) | $g | $share |"
    done

    echo
    echo "Quantize (\`llmq quantize $dir ... --json\`), seconds:"
    echo
    # The issue's memory bound: 1.2 × (one layer's weights in fp32 + the calibration
    # activations in and out + the two Hessian buffers of the widest input).
    bound=$(python3 -c "
import json
c = json.load(open('$dir/config.json'))
d, f = c['hidden_size'], c['intermediate_size']
hd = c.get('head_dim') or d // c['num_attention_heads']
qd, kv = c['num_attention_heads'] * hd, c.get('num_key_value_heads', c['num_attention_heads']) * hd
layer = 2 * qd * d + 2 * kv * d + 3 * d * f
n = $CALIB_SAMPLES * $CALIB_SEQLEN
wide = max(d, qd, f)
print(round(1.2 * 4 * (layer + n * d + n * max(d, qd) + 2 * wide * wide) / 2**20))")
    echo "| method | type | threads | wall | forward | Hessian | solver | AWQ search | peak RSS MiB | RSS bound MiB | projected whole model, this calibration | projected 128×2048 (gptq) / 128×512 (awq) |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for method in $METHODS; do
        case $method in
            rtn) args=(--method rtn --type q4_0); label=q4_0 ;;
            gptq) args=(--method gptq --type q4_k); label=q4_k ;;
            gptq-act) args=(--method gptq --act-order --type q4_k); label=q4_k ;;
            awq) args=(--method awq --type q4_k); label=q4_k ;;
            awq+gptq) args=(--method awq+gptq --type q4_k); label=q4_k ;;
            gptaq) args=(--method gptaq --type q4_k); label=q4_k ;;
            *) echo "unknown method $method" >&2; exit 2 ;;
        esac
        [ "$method" = rtn ] || args+=(--calib "$dir/calib.txt" --calib-samples "$CALIB_SAMPLES" --calib-seqlen "$CALIB_SEQLEN")
        for t in $THREADS; do
            start=$(date +%s.%N)
            "$LLMQ" quantize "$dir" -o "$OUT/q.gguf" "${args[@]}" --threads "$t" --json > "$OUT/q.json" 2> "$OUT/q.err" ||
                { echo "quantize failed:"; tail -5 "$OUT/q.err"; exit 1; }
            wall=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
            read -r fwd hes sol awq rss <<<"$(json_get "' '.join(str(x) for x in [round(sum(l.get('seconds',{}).get(k,0) for l in j.get('layers',[])),1) for k in ('forward','hessian','solver','awq')] + [j.get('peak_rss_bytes',0)//2**20])" < "$OUT/q.json")"
            # Whole model: the layer's time × layers + the rest (embedding, head, I/O) once;
            # RTN reports no per-layer time: its wall time scaled by the weights it rounds.
            layer_s=$(python3 -c "print($fwd + $hes + $sol + $awq)")
            if [ "$method" = rtn ]; then
                proj=$(python3 -c "
import json
c = json.load(open('$dir/config.json'))
d, f, v = c['hidden_size'], c['intermediate_size'], c['vocab_size']
kv = d // c['num_attention_heads'] * c.get('num_key_value_heads', c['num_attention_heads'])
layer = 2 * d * d + 2 * d * kv + 3 * d * f
print(f'{$wall * (2 * v * d + $layers_full * layer) / (2 * v * d + layer) / 60:.1f} min')")
            else
                proj=$(python3 -c "print(f'{(($wall - $layer_s) + $layer_s * $layers_full) / 60:.1f} min')")
            fi
            if [ "$method" = rtn ]; then big="—"; else
                tok=$((CALIB_SAMPLES * CALIB_SEQLEN))
                case $method in awq*) want=$((128 * 512)) ;; *) want=$((128 * 2048)) ;; esac
                big=$(python3 -c "
s = ($fwd + $hes + $awq) * $want / $tok + $sol
print(f'{(($wall - $layer_s) + s * $layers_full) / 3600:.1f} h')")
            fi
            echo "| $method | $label | $t | $wall | $fwd | $hes | $sol | $awq | $rss | $([ "$method" = rtn ] && echo "—" || echo "$bound") | $proj | $big |"
        done
    done

    echo
    echo "Perplexity of the RTN q4_0 file (\`llmq ppl --ctx 512 --max-chunks 2 --protocol llamacpp\`, load included):"
    echo
    "$LLMQ" quantize "$dir" -o "$OUT/rtn.gguf" --method rtn --type q4_0 >/dev/null 2>&1
    echo "| threads | tok/s | wall s |"
    echo "|---:|---:|---:|"
    for t in $THREADS; do
        start=$(date +%s.%N)
        "$LLMQ" ppl "$OUT/rtn.gguf" --text "$dir/eval.txt" --ctx 512 --max-chunks 2 --protocol llamacpp --threads "$t" --json > "$OUT/p.json" 2>/dev/null
        wall=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
        echo "| $t | $(json_get "round(j['tokens_per_second'])" < "$OUT/p.json") | $wall |"
    done
done
