// Perplexity of a GGUF file under llama.cpp (through node-llama-cpp's prebuilt
// binaries), with llama-perplexity's protocol (tools/perplexity/perplexity.cpp):
// the token stream is cut into n_ctx windows, the first token of each window is
// replaced by BOS when the vocabulary adds one, and only the second half of
// each window is scored (logits at positions n_ctx/2 .. n_ctx-2 predict the
// next token). Logits come from llama.cpp itself: for every scored position we
// ask for the target's logit, the top logit (includeTop: 1; includeMax is
// ignored by node-llama-cpp 3.22) and sum(exp(logit - max)), so
// nll = log(sum) - (logit[target] - max).
//
// usage: node llamacpp_ppl.mjs MODEL.gguf TOKENS.json [--ctx 512] [--max-chunks N] [--threads N] [--batch N]
// prints one JSON object: {"ppl", "nll", "tokens_scored", "chunks", "ctx", "seconds", "bos"}
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : dflt;
};
const [modelPath, tokensPath] = args;
if (!modelPath || !tokensPath) {
    console.error("usage: node llamacpp_ppl.mjs MODEL.gguf TOKENS.json [--ctx 512] [--max-chunks N] [--threads N]");
    process.exit(2);
}
const ctx = opt("--ctx", 512), maxChunks = opt("--max-chunks", 0), threads = opt("--threads", 2), batch = opt("--batch", ctx);
const tokens = JSON.parse(readFileSync(tokensPath, "utf8"));

const t0 = performance.now();
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const context = await model.createContext({contextSize: ctx, batchSize: batch, sequences: 1, threads, flashAttention: false});
const sequence = context.getSequence();
const bos = model.tokens.bos;
const addBos = model.tokens.shouldPrependBosToken;

let nChunks = Math.floor(tokens.length / ctx);
if (maxChunks > 0 && nChunks > maxChunks) nChunks = maxChunks;
const first = Math.floor(ctx / 2);
let nll = 0, nll2 = 0, scored = 0;
for (let c = 0; c < nChunks; c++) {
    const window = tokens.slice(c * ctx, (c + 1) * ctx);
    if (addBos && bos != null) window[0] = bos;
    await sequence.clearHistory();
    const input = window.map((tok, j) =>
        j >= first && j < ctx - 1
            ? [tok, {generateNext: {logits: {filter: {tokens: [window[j + 1]], includeTop: 1}}, totalLogitWeight: true}}]
            : tok);
    const out = await sequence.controlledEvaluate(input);
    for (let j = first; j < ctx - 1; j++) {
        const next = out[j].next;
        const target = window[j + 1];
        let max = -Infinity;
        for (const v of next.logits.values()) max = v > max ? v : max;
        const v = Math.log(next.totalLogitWeight) - (next.logits.get(target) - max);
        nll += v;
        nll2 += v * v;
        scored++;
    }
}
const mean = nll / scored;
console.log(JSON.stringify({
    ppl: Math.exp(mean), nll: mean, tokens_scored: scored, chunks: nChunks, ctx,
    seconds: (performance.now() - t0) / 1000, bos: addBos ? bos : null,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
