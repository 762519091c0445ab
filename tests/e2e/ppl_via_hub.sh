#!/usr/bin/env bash
# End to end: `llmq ppl ORG/NAME` against the mock hub downloads the checkpoint
# into a fresh cache, then evaluates it; prints the hub run's and the local
# run's JSON lines. Usage: ppl_via_hub.sh LLMQ WORKDIR
set -euo pipefail
llmq=$1 work=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$work" && mkdir -p "$work"
"$llmq" synth "$work/model" >/dev/null
commit=0123456789abcdef0123456789abcdef01234567
cat >"$work/cfg.json" <<JSON
{"repos": {"llmq/demo": {"commit": "$commit", "refs": {"main": "$commit"}, "dir": "$work/model", "lfs": ["*.safetensors"]}}}
JSON
python3 "$root/scripts/mock-hub" --config "$work/cfg.json" --port-file "$work/port" --lifetime 120 &
mock=$!
trap 'kill $mock 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
HF_ENDPOINT="http://127.0.0.1:$port" HF_HOME="$work/hf" LLMQ_HUB_RETRY_BASE_MS=10 \
    "$llmq" ppl llmq/demo --text "$work/model/eval.txt" --ctx 128 --max-chunks 6 --json | tail -n1
"$llmq" ppl "$work/model" --text "$work/model/eval.txt" --ctx 128 --max-chunks 6 --json | tail -n1
test -f "$work/hf/hub/models--llmq--demo/snapshots/$commit/model.safetensors"
