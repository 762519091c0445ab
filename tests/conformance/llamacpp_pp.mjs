// Prompt-processing speed of a GGUF file under llama.cpp (node-llama-cpp's
// prebuilt binaries, CPU only): the first `ctx` token ids of TOKENS.json are
// evaluated as one batch into an empty sequence, best of `reps` runs after one
// warm-up run. Like llama-bench's pp test, no logits are requested for the
// prompt (evaluateWithoutGeneratingNewTokens), so llama.cpp skips the output
// head; llmq's forward computes it for every position (scripts/bench-llamacpp.sh).
//
// node-llama-cpp ships one libggml-cpu-<variant>.so per x86 micro-architecture
// (haswell, skylakex, icelake, zen4 with AVX-512 VNNI, ...) and ggml loads the
// best one the CPU supports; the variant actually mapped into this process is
// reported as "cpu_variant" (read from /proc/self/maps; null elsewhere).
//
// usage: node llamacpp_pp.mjs MODEL.gguf TOKENS.json [--ctx 512] [--threads N] [--reps 7]
// prints one JSON line: {"tok_s", "ms", "ctx", "threads", "reps", "cpu_variant"}
import {readFileSync} from "node:fs";
import {availableParallelism} from "node:os";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : dflt;
};
const [modelPath, tokensPath] = args;
if (!modelPath || !tokensPath) {
    console.error("usage: node llamacpp_pp.mjs MODEL.gguf TOKENS.json [--ctx 512] [--threads N] [--reps 7]");
    process.exit(2);
}
const ctx = opt("--ctx", 512), threads = opt("--threads", availableParallelism()), reps = opt("--reps", 7);
const tokens = JSON.parse(readFileSync(tokensPath, "utf8")).slice(0, ctx);
if (tokens.length < ctx) {
    console.error(`${tokensPath}: ${tokens.length} token ids, --ctx ${ctx} needs ${ctx}`);
    process.exit(1);
}

const cpuVariant = () => {
    try {
        const m = readFileSync("/proc/self/maps", "utf8").match(/libggml-cpu-([\w-]+)\.so/);
        return m ? m[1] : null;
    } catch (e) {
        return null;
    }
};

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const context = await model.createContext({contextSize: ctx, batchSize: ctx, sequences: 1, threads, flashAttention: false});
const sequence = context.getSequence();
let best = Infinity;
for (let r = -1; r < reps; r++) { // r = -1: warm-up (pages in the weights, sizes the compute buffers)
    await sequence.clearHistory();
    const t0 = performance.now();
    await sequence.evaluateWithoutGeneratingNewTokens(tokens);
    const seconds = (performance.now() - t0) / 1000;
    if (r >= 0 && seconds < best) best = seconds;
}
console.log(JSON.stringify({tok_s: ctx / best, ms: best * 1000, ctx, threads: context.currentThreads ?? threads, reps, cpu_variant: cpuVariant()}));
await context.dispose();
await model.dispose();
await llama.dispose();
