#!/usr/bin/env bash
# Calibrated quantization against llama.cpp's importance-matrix pipeline, on the
# same model and the same calibration tokens; the last part of `make bench`.
#
# For each shape, the checkpoint of scripts/bench-realsize.sh (`llmq synth --shape
# NAME --layers 1`: one decoder layer, embedding and head, in SHAPES_DIR) and its
# own calib.txt, CALIB_SAMPLES × CALIB_SEQLEN tokens on both sides:
#   llama.cpp: llama-imatrix -m X-bf16.gguf -f calib.txt --chunks CALIB_SAMPLES -c CALIB_SEQLEN -t THREADS
#              then llama-quantize --imatrix X.imatrix.gguf X-bf16.gguf X-q4km.gguf Q4_K_M THREADS,
#              X-bf16.gguf being `llmq quantize DIR --type bf16` (llama.cpp loads it
#              unchanged; made once per shape, not timed: llama.cpp's own pipeline
#              starts from convert_hf_to_gguf.py's file, llmq from the checkpoint)
#   llmq:      llmq quantize DIR --method gptq --type q4_k_m --calib calib.txt
#              --calib-samples CALIB_SAMPLES --calib-seqlen CALIB_SEQLEN --threads THREADS --json
# Each step is timed here (wall, and user+sys CPU seconds), llmq's time also split
# by its JSON (layers[].seconds: forward, Hessian, solver). llama-imatrix's log must
# say it processed CALIB_SAMPLES chunks of CALIB_SEQLEN tokens (it cuts the tokenized
# file into consecutive chunks, BOS first, 4 per batch at its default -b 2048, and
# also computes the head for every token and a perplexity), and llama-quantize's that
# it loaded that matrix, or the run fails. On a shared machine the wall times are
# noisy: the load average at the start is printed, and the CPU seconds beside them.
# The binaries come from scripts/build-llamacpp-tools.sh (llama.cpp's source as
# node-llama-cpp ships it on npm, built here with GGML_NATIVE).
#
# usage: bash scripts/bench-imatrix.sh [BUILD_DIR]
#   SHAPES="llama2-7b"                  shapes (llmq synth --list-shapes)
#   THREADS=$(nproc)                    thread counts, one row each
#   CALIB_SAMPLES=16 CALIB_SEQLEN=512   calibration of both sides
#   SHAPES_DIR=build/shapes             where the checkpoints are kept between runs
#   NODE_LLAMA_CPP_VERSION=3.22.1       the npm release whose llama.cpp is built
# Skips with a message (exit 0) when the llama.cpp tools cannot be built (no
# node/npm, cmake or bundle); exits 1 when a step fails.
# The environment is the user's: nothing here sets OMP_* or OPENBLAS_*.
set -euo pipefail
BUILD=${1:-build}
LLMQ="$BUILD/llmq"
SHAPES=${SHAPES:-llama2-7b}
THREADS=${THREADS:-$(nproc)}
CALIB_SAMPLES=${CALIB_SAMPLES:-16}
CALIB_SEQLEN=${CALIB_SEQLEN:-512}
SHAPES_DIR=${SHAPES_DIR:-build/shapes}
here=$(dirname "$0")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

echo
echo "## Calibrated quantization against llama.cpp's imatrix pipeline (scripts/bench-imatrix.sh)"
echo
[ -x "$LLMQ" ] || { echo "bench-imatrix: build $LLMQ first (make bench)" >&2; exit 2; }
. "$here/realsize-lib.sh"
bin=$(bash "$here/build-llamacpp-tools.sh" | tail -1)
if [ -z "$bin" ]; then
    echo "bench-imatrix: skipped (the llama.cpp tools could not be built; see the line above)"
    exit 0
fi
mkdir -p "$SHAPES_DIR"

fail() {
    echo "bench-imatrix: $1 failed:" >&2
    tail -15 "$OUT/$2.err" >&2
    exit 1
}

# timed NAME CMD...: runs CMD (stdout to $OUT/NAME.out, stderr to $OUT/NAME.err),
# sets T_WALL and T_CPU (user + sys of CMD and its children), in seconds.
timed() {
    local name=$1 TIMEFORMAT='%3R %3U %3S' wall user sys
    shift
    { time "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; } 2>"$OUT/$name.time" || fail "$name" "$name"
    read -r wall user sys <"$OUT/$name.time"
    T_WALL=$(python3 -c "print(f'{$wall:.1f}')")
    T_CPU=$(python3 -c "print(f'{$user + $sys:.1f}')")
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

tokens=$((CALIB_SAMPLES * CALIB_SEQLEN))
echo "$(cpu_line); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "llama.cpp $(git -C "$bin/../../llamacpp-src" log -1 --format=%h 2>/dev/null || echo '?') from node-llama-cpp@${NODE_LLAMA_CPP_VERSION:-3.22.1}; calibration $CALIB_SAMPLES × $CALIB_SEQLEN = $tokens tokens of each shape's calib.txt."
rows=()
proj=()
notes=()
for shape in $SHAPES; do
    dir=$(shape_checkpoint "$LLMQ" "$SHAPES_DIR" "$shape")
    layers=$(shape_layers "$shape")
    bf16="$OUT/$shape-bf16.gguf"
    timed bf16 "$LLMQ" quantize "$dir" -o "$bf16" --type bf16
    notes+=("$shape: the BF16 GGUF for llama.cpp took $T_WALL s (not counted).")
    # Weights per decoder layer, and of the embedding and the head (each vocab × hidden).
    read -r layer_w vd <<<"$(python3 -c "
import json
c = json.load(open('$dir/config.json'))
d, f, v = c['hidden_size'], c['intermediate_size'], c['vocab_size']
kv = c.get('head_dim', d // c['num_attention_heads']) * c.get('num_key_value_heads', c['num_attention_heads'])
print(2 * d * d + 2 * d * kv + 3 * d * f, v * d)")"
    for t in $THREADS; do
        timed imatrix "$bin/llama-imatrix" -m "$bf16" -f "$dir/calib.txt" -o "$OUT/$shape.imatrix.gguf" \
            --chunks "$CALIB_SAMPLES" -c "$CALIB_SEQLEN" -t "$t"
        im=$T_WALL im_cpu=$T_CPU
        seen=$(grep -oE 'computing over [0-9]+ chunks, n_ctx=[0-9]+' "$OUT/imatrix.err" || true)
        [ "$seen" = "computing over $CALIB_SAMPLES chunks, n_ctx=$CALIB_SEQLEN" ] || {
            echo "bench-imatrix: llama-imatrix did not process $CALIB_SAMPLES chunks of $CALIB_SEQLEN tokens (log: '${seen:-nothing}')" >&2
            exit 1
        }
        timed quantize "$bin/llama-quantize" --imatrix "$OUT/$shape.imatrix.gguf" "$bf16" "$OUT/$shape-q4km.gguf" Q4_K_M "$t"
        lq=$T_WALL lq_cpu=$T_CPU
        grep -qE "loaded [1-9][0-9]* importance matrix entries .* computed on $CALIB_SAMPLES chunks" \
            "$OUT/quantize.out" "$OUT/quantize.err" || {
            echo "bench-imatrix: llama-quantize did not report loading the importance matrix" >&2
            exit 1
        }
        rm -f "$OUT/$shape-q4km.gguf"

        timed llmq "$LLMQ" quantize "$dir" -o "$OUT/$shape-gptq.gguf" --method gptq --type q4_k_m \
            --calib "$dir/calib.txt" --calib-samples "$CALIB_SAMPLES" --calib-seqlen "$CALIB_SEQLEN" --threads "$t" --json
        rm -f "$OUT/$shape-gptq.gguf"
        read -r fwd hes sol <<<"$(json_get "' '.join(str(round(sum(l.get('seconds', {}).get(k, 0) for l in j.get('layers', [])), 1)) for k in ('forward', 'hessian', 'solver'))" <"$OUT/llmq.out")"

        read -r cpp cpp_cpu <<<"$(python3 -c "print(f'{$im + $lq:.1f} {$im_cpu + $lq_cpu:.1f}')")"
        rows+=("| $shape | $t | $tokens | $im | $lq | $cpp | $T_WALL ($fwd / $hes / $sol) | $(ratio "$T_WALL" "$cpp") | $cpp_cpu | $T_CPU | $(ratio "$T_CPU" "$cpp_cpu") |")
        # Whole model: llmq's per-layer time (its JSON) × layers + the rest once; llama.cpp
        # reports no per-layer time, so its times are scaled by the weights each pass
        # multiplies (llama-imatrix: the layer's and the head's, every token) or rounds
        # (llama-quantize: the layer's, embedding's and head's).
        read -r p_im p_lq p_cpp p_llmq <<<"$(python3 -c "
L, lw, vd = $layers, $layer_w, $vd
im = $im * (L * lw + vd) / (lw + vd)
lq = $lq * (L * lw + 2 * vd) / (lw + 2 * vd)
layer = $fwd + $hes + $sol
llmq = ($T_WALL - layer) + L * layer
print(*(f'{x / 60:.1f}' for x in (im, lq, im + lq, llmq)))")"
        proj+=("| $shape | $layers | $t | $p_im | $p_lq | $p_cpp | $p_llmq | $(ratio "$p_llmq" "$p_cpp") |")
    done
    rm -f "$bf16"
done

echo
echo "One decoder layer of each shape, embedding and head included; seconds (wall, then user+sys CPU):"
echo
echo "| shape | threads | tokens | llama-imatrix s | llama-quantize s | llama.cpp total s | llmq gptq s (forward / Hessian / solver) | llmq / llama.cpp | llama.cpp CPU s | llmq CPU s | llmq / llama.cpp CPU |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "Projected to the whole model, minutes:"
echo
echo "| shape | layers | threads | llama-imatrix | llama-quantize | llama.cpp total | llmq gptq | llmq / llama.cpp |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${proj[@]}"
echo
echo "Projection: llmq = (wall − Σ layers[].seconds) + layers × Σ layers[].seconds (its JSON's per-layer time);"
echo "llama.cpp, which reports no per-layer time: llama-imatrix's wall × (layers·W + V)/(W + V) (it multiplies every token"
echo "by the decoder weights W and the head V = vocab × hidden; attention and load left in the scaled part),"
echo "llama-quantize's wall × (layers·W + 2V)/(W + 2V) (it rounds the embedding and the head too)."
printf '%s\n' "${notes[@]}"
