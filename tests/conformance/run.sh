#!/usr/bin/env bash
# Conformance with llama.cpp: every block format decodes to the same bits in
# ggml (ggml_blocks.c); llmq's GGUF files of stories-llama-7m at q4_0, q4_1,
# q4_k, q4_k_m, q8_0, q5_0, q5_1, q5_k_m, q5_k_s, q4_k_s, q3_k_m, q3_k_l, q2_k,
# iq4_xs and iq4_nl (RTN), and GPTQ / AWQ /
# AWQ+GPTQ files and one with types chosen per tensor (--target-bpw), and the
# demo model written as other architectures (llmq synth --arch qwen3, gemma2,
# gemma3, phi3 (also with LongRoPE and partial rotary), mixtral, qwen3moe, and
# Qwen3 and Gemma 3 with their real tokenizers: f32, q8_0, gptq q4_k, awq+gptq
# q4_k_m), are loaded by llama.cpp (the prebuilt binaries
# node-llama-cpp ships, installed from the npm registry), and the perplexity
# llama.cpp computes (llama-perplexity's protocol, llamacpp_ppl.mjs) must equal
# `llmq ppl --protocol llamacpp` on the same file within 0.5%.
#
# usage: tests/conformance/run.sh [LLMQ_BINARY]
# env:   LLMQ_SHARED (default ../shared), CONFORMANCE_CHUNKS (default 8 windows of 512),
#        CONFORMANCE_TYPES, CONFORMANCE_ARCHS (default qwen3 gemma2 gemma3 phi3 phi3-longrope mixtral qwen3moe
#        qwen3-tok gemma3-tok),
#        CONFORMANCE_ARCH_TYPES,
#        NODE_LLAMA_CPP_VERSION (default 3.22.1), CI=true (an install failure fails instead of skipping)
# Without node/npm the check is skipped with a message; under CI=true every
# other failure (missing model, npm install, load, mismatch) fails.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
llmq=${1:-$root/build/llmq}
shared=${LLMQ_SHARED:-$root/../shared}
model=$shared/models/stories-llama-7m
chunks=${CONFORMANCE_CHUNKS:-8}
version=${NODE_LLAMA_CPP_VERSION:-3.22.1}
work=$root/build/conformance
# TYPE or TYPE:METHOD (calibrated methods use 16 windows of the shared calibration text)
types=${CONFORMANCE_TYPES:-"q4_0 q4_1 q4_k q4_k_m q8_0 q5_0 q5_1 q5_k_m q5_k_s q4_k_s q3_k_m q3_k_l q2_k iq4_xs iq4_nl q4_k:gptq q4_0:awq q4_k:awq+gptq q5_k:gptq iq4_xs:gptq auto:gptq"}
calib=$shared/data/tinystories/tinystories_calib.txt
tolerance=0.005

skip_or_fail() {
    if [ "${CI:-}" = "true" ]; then echo "conformance: FAILED: $*"; exit 1; fi
    echo "conformance: skipped: $*"
    exit 0
}

. "$root/tests/conformance/install.sh"
if ! llamacpp_node_ok; then
    echo "conformance: skipped: $llamacpp_problem"
    exit 0
fi
[ -x "$llmq" ] || skip_or_fail "$llmq is not built"
[ -f "$model/model.safetensors" ] || skip_or_fail "$model is absent"

llamacpp_install "$work" "$version" || skip_or_fail "$llamacpp_problem"
cp "$root/tests/conformance/llamacpp_ppl.mjs" "$root/tests/conformance/llamacpp_logits.mjs" "$root/tests/conformance/llamacpp_tokenize.mjs" "$work/"

# Every block format decoded by ggml itself (the libggml-base.so node-llama-cpp
# ships): the same float bits as llmq's decoders (ggml_blocks.c).
status=0
ggml_base=$(find "$work/node_modules" -name libggml-base.so 2>/dev/null | head -1)
lib=$(dirname "$llmq")/libllmq.a
if [ -z "$ggml_base" ]; then
    echo "conformance: no libggml-base.so under $work/node_modules"; status=1
elif ! ${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -I"$root/include" "$root/tests/conformance/ggml_blocks.c" "$lib" -o "$work/ggml_blocks" \
        -ldl -lm -fopenmp >"$work/ggml_blocks.log" 2>&1; then
    cat "$work/ggml_blocks.log"; echo "conformance: ggml_blocks did not build"; status=1
else
    echo "conformance: block formats decoded by ggml ($ggml_base)"
    "$work/ggml_blocks" "$ggml_base" || { echo "conformance: block formats differ from ggml's"; status=1; }
fi

# The first `chunks` windows of the evaluation token ids.
node -e '
const fs = require("fs");
const ids = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
fs.writeFileSync(process.argv[2], JSON.stringify(ids.slice(0, Number(process.argv[3]) * 512)));
' "$model/eval_tokens.json" "$work/tokens.json" "$chunks" || skip_or_fail "cannot read $model/eval_tokens.json"

# compare MODEL TAG TOKENS CALIB SPEC [LLAMACPP_ARGS]: quantizes MODEL as SPEC (TYPE or
# TYPE:METHOD), scores the file with llmq and with llama.cpp on TOKENS, prints one row.
compare() {
    local model=$1 tag=$2 tokens=$3 calib=$4 spec=$5 extra=${6:-} name=()
    # llama.cpp gives a model whose general.name says phi3 Phi-3's special tokens; the demo has none
    [ "$tag" = stories-llama-7m ] || name=(--name llmq-demo)
    local t=${spec%%:*} method=rtn
    case "$spec" in *:*) method=${spec#*:} ;; esac
    local gguf=$work/$tag-$t-$method.gguf log=$work/$tag-$t-$method
    # auto: types chosen per tensor (--target-bpw 4.6, a small sensitivity measurement)
    local type_args=(--type "$t")
    [ "$t" = auto ] && type_args=(--target-bpw 4.6 --sens-samples 2 --sens-seqlen 128) && rm -f "$gguf.sens.json"
    if ! "$llmq" quantize "$model" -o "$gguf" "${type_args[@]}" "${name[@]}" --method "$method" --calib "$calib" --calib-samples 16 \
            --calib-seqlen 512 >"$log.quantize.log" 2>&1; then
        tail -3 "$log.quantize.log"; echo "  $spec: llmq quantize failed"; status=1; return
    fi
    local ours theirs line
    ours=$("$llmq" ppl "$gguf" --tokens "$tokens" --protocol llamacpp --ctx 512 --json 2>"$log.ppl.log" | tail -1)
    theirs=$(cd "$work" && node llamacpp_ppl.mjs "$gguf" "$tokens" --ctx 512 $extra 2>"$log.llamacpp.log" | tail -1)
    line=$(node -e '
let a, b;
try { a = JSON.parse(process.argv[1]); b = JSON.parse(process.argv[2]); } catch (e) { console.log("ERR"); process.exit(0); }
const d = Math.abs(a.ppl - b.ppl) / b.ppl;
const same = a.tokens_scored === b.tokens_scored;
console.log([a.ppl.toFixed(4), b.ppl.toFixed(4), (100 * d).toFixed(3) + "%", same && d <= Number(process.argv[3]) ? "ok" : "MISMATCH"].join(" "));
' "$ours" "$theirs" "$tolerance")
    if [ "$line" = "ERR" ]; then
        echo "  $spec: no result (llmq: $ours) (llama.cpp: $(tail -3 "$log.llamacpp.log"))"; status=1; return
    fi
    set -- $line
    printf "  %-16s %12s %12s %10s %s\n" "$spec" "$1" "$2" "$3" "$4"
    [ "$4" = ok ] || status=1
}

# converter_check ARCH DIR: the checkpoint converted by llama.cpp's own
# convert_hf_to_gguf.py (the source node-llama-cpp ships, run by Debian's
# python3-torch/-numpy through hf_convert.py) gives the same logits in
# llama.cpp as llmq's f32 file of it (1e-4 relative to the largest logit).
converter_check() {
    local arch=$1 dir=$2 ours=$work/$1-f32-rtn.gguf py=""
    for c in /usr/bin/python3 python3; do
        if "$c" -c 'import torch, numpy' 2>/dev/null; then py=$c; break; fi
    done
    if [ -z "$py" ]; then
        [ "${CI:-}" = "true" ] && { echo "  $arch: converter: FAILED: python3 with torch and numpy is missing (scripts/install-deps.sh)"; status=1; return; }
        echo "  $arch: converter check skipped: python3 with torch and numpy is missing (scripts/install-deps.sh installs them)"; return
    fi
    local bundle=$work/node_modules/node-llama-cpp/llama/gitRelease.bundle src=$work/llamacpp-src
    if [ ! -f "$src/convert_hf_to_gguf.py" ]; then
        rm -rf "$src"
        if [ ! -f "$bundle" ] || ! git clone -q "$bundle" "$src" 2>"$work/llamacpp-src.log"; then
            echo "  $arch: converter: FAILED: no llama.cpp source from $bundle"; status=1; return
        fi
    fi
    [ -f "$ours" ] || { echo "  $arch: converter: no f32 file of llmq's to compare with"; status=1; return; }
    if ! (cd "$work" && "$py" "$root/tests/conformance/hf_convert.py" "$src" "$dir" "$work/$arch-converted.gguf") >"$work/$arch-convert.log" 2>&1; then
        tail -3 "$work/$arch-convert.log"; echo "  $arch: convert_hf_to_gguf.py failed"; status=1; return
    fi
    local n=64 vocab
    vocab=$("$llmq" inspect "$ours" --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).config.vocab_size))')
    if ! (cd "$work" && node llamacpp_logits.mjs "$ours" "$dir/tokens.json" --n $n --vocab "$vocab" >"$work/$arch-logits-llmq.json" 2>"$work/$arch-logits.log" &&
            node llamacpp_logits.mjs "$work/$arch-converted.gguf" "$dir/tokens.json" --n $n --vocab "$vocab" >"$work/$arch-logits-converter.json" 2>>"$work/$arch-logits.log"); then
        tail -3 "$work/$arch-logits.log"; echo "  $arch: llama.cpp could not run one of the files"; status=1; return
    fi
    local line
    line=$(node -e '
const fs = require("fs");
const a = JSON.parse(fs.readFileSync(process.argv[1])), b = JSON.parse(fs.readFileSync(process.argv[2]));
let worst = 0, scale = 0;
for (let i = 0; i < a.n; i++) for (let j = 0; j < a.vocab; j++) {
    worst = Math.max(worst, Math.abs(a.logits[i][j] - b.logits[i][j]));
    scale = Math.max(scale, Math.abs(b.logits[i][j]));
}
const rel = worst / scale;
console.log(rel.toExponential(2) + " " + (a.n === b.n && rel <= 1e-4 ? "ok" : "MISMATCH"));
' "$work/$arch-logits-llmq.json" "$work/$arch-logits-converter.json")
    set -- $line
    printf "  %-16s %s (max logit difference / max logit, %d positions × %d, llama.cpp) %s\n" "convert_hf_to_gguf" "$1" $n "$vocab" "$2"
    [ "$2" = ok ] || status=1
}

printf "conformance: stories-llama-7m, %d windows of 512, llama.cpp protocol (node-llama-cpp %s)\n" "$chunks" "$version"
printf "  %-16s %12s %12s %10s %s\n" type llmq llama.cpp diff result
for spec in $types; do compare "$model" stories-llama-7m "$work/tokens.json" "$calib" "$spec"; done

# Architectures besides Llama: the project's demo model written as each one
# (llmq synth --arch; Gemma 3 with 6 layers, so one is global), scored on its
# own text. llama.cpp runs them in batches of 128 tokens: node-llama-cpp
# 3.22.1's build stops on GGML_ASSERT(buffer) for these small Gemma 3 files
# at batches of 256 and more (its own convert_hf_to_gguf.py file too).
# qwen3-tok and gemma3-tok are Qwen3's and Gemma 3's demo with the real
# tokenizer (llmq synth --tokenizer ../shared/tokenizers/NAME): llama.cpp must
# also tokenize the text as llmq does from the GGUF's tokenizer.ggml.* arrays.
# Their weights take the same paths as qwen3's and gemma3's, which the converter
# check covers, so it is not repeated at 151k/262k-token vocabularies.
tokenizer_check() {
    local arch=$1 dir=$2 gguf=$work/$1-f32-rtn.gguf
    if ! (cd "$work" && node llamacpp_tokenize.mjs "$gguf" "$dir/eval.txt" >"$work/$arch-tokens-llamacpp.json" 2>"$work/$arch-tokenize.log") ||
            ! "$llmq" tokenize "$gguf" --no-special --text "$dir/eval.txt" --json >"$work/$arch-tokens-llmq.json" 2>>"$work/$arch-tokenize.log"; then
        tail -3 "$work/$arch-tokenize.log"; echo "  $arch: tokenization failed"; status=1; return
    fi
    local n
    n=$(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).length' "$work/$arch-tokens-llmq.json")
    if cmp -s "$work/$arch-tokens-llamacpp.json" "$work/$arch-tokens-llmq.json"; then
        printf "  %-16s %s tokens of eval.txt, the same ids in llama.cpp ok\n" tokenizer "$n"
    else
        printf "  %-16s %s tokens of eval.txt: llama.cpp's ids differ MISMATCH\n" tokenizer "$n"; status=1
    fi
}

for arch in ${CONFORMANCE_ARCHS:-qwen3 gemma2 gemma3 phi3 phi3-longrope mixtral qwen3moe qwen3-tok gemma3-tok}; do
    dir=$work/synth-$arch
    base=${arch%-longrope}
    base=${base%-tok}
    layers=4 synth_args=()
    [ "$base" = gemma3 ] && layers=6
    [ "$arch" != "${arch%-tok}" ] && synth_args=(--tokenizer "$shared/tokenizers/$base")
    if ! "$llmq" synth --arch "$base" --layers $layers "${synth_args[@]}" "$dir" >"$work/synth-$arch.log" 2>&1 ||
            ! "$llmq" tokenize "$dir" --text "$dir/eval.txt" --json >"$dir/ids.json" 2>>"$work/synth-$arch.log"; then
        tail -3 "$work/synth-$arch.log"; echo "  $arch: llmq synth failed"; status=1; continue
    fi
    node -e 'const fs = require("fs"); fs.writeFileSync(process.argv[2], JSON.stringify(JSON.parse(fs.readFileSync(process.argv[1], "utf8")).slice(0, Number(process.argv[3]) * 512)));' \
        "$dir/ids.json" "$dir/tokens.json" "$chunks"
    if [ "$arch" = phi3-longrope ]; then
        # Phi-3.5 / Phi-4-mini: LongRoPE (an original context of 256, so windows of 512 take the long
        # factors) and half of each head turned
        node -e '
const fs = require("fs"), c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const half = c.hidden_size / c.num_attention_heads / 4;
c.rope_scaling = {type: "longrope", long_factor: Array.from({length: half}, (_, i) => 1 + 0.5 * i),
                  short_factor: Array.from({length: half}, (_, i) => 1 + 0.05 * i)};
c.original_max_position_embeddings = 256;
c.partial_rotary_factor = 0.5;
fs.writeFileSync(process.argv[1], JSON.stringify(c, null, 2));' "$dir/config.json"
    fi
    printf "conformance: %s (llmq synth --arch %s), %d windows of 512\n" "$arch" "$arch" "$chunks"
    for spec in ${CONFORMANCE_ARCH_TYPES:-f32 q8_0 q4_k:gptq q4_k_m:awq+gptq}; do
        compare "$dir" "$arch" "$dir/tokens.json" "$dir/calib.txt" "$spec" "--batch 128"
    done
    if [ ${#synth_args[@]} -gt 0 ]; then tokenizer_check "$arch" "$dir"; else converter_check "$arch" "$dir"; fi
done
if [ $status -ne 0 ]; then
    echo "conformance: FAILED (logs in $work)"
    exit 1
fi
echo "conformance: passed (every type within $(node -p "100 * $tolerance")%)"
