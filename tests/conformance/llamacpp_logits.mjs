// Logits of a GGUF file under llama.cpp (node-llama-cpp's prebuilt binaries):
// the first N tokens of TOKENS.json evaluated as one sequence (no BOS added),
// every vocabulary entry's logit at every position.
//
// usage: node llamacpp_logits.mjs MODEL.gguf TOKENS.json [--n 64] [--vocab V] [--threads N]
// prints one JSON object: {"n", "vocab", "logits": [[...], ...]}
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : dflt;
};
const [modelPath, tokensPath] = args;
if (!modelPath || !tokensPath) {
    console.error("usage: node llamacpp_logits.mjs MODEL.gguf TOKENS.json [--n 64] [--vocab V] [--threads N]");
    process.exit(2);
}
const n = opt("--n", 64), threads = opt("--threads", 2);
const tokens = JSON.parse(readFileSync(tokensPath, "utf8")).slice(0, n);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const embd = (model.fileInfo.tensorInfo ?? []).find((t) => t.name === "token_embd.weight");
const vocab = opt("--vocab", embd ? Number(embd.dimensions[1]) : NaN);
if (!(vocab > 0)) {
    console.error("llamacpp_logits: cannot tell the vocabulary size; pass --vocab V");
    process.exit(2);
}
const all = Array.from({length: Number(vocab)}, (_, i) => i);
const context = await model.createContext({contextSize: Math.max(n, 64), batchSize: Math.max(n, 64), sequences: 1, threads, flashAttention: false});
const sequence = context.getSequence();
const out = await sequence.controlledEvaluate(tokens.map((tok) => [tok, {generateNext: {logits: {filter: {tokens: all}}}}]));
const logits = out.map((o) => all.map((id) => o.next.logits.get(id)));
console.log(JSON.stringify({n: tokens.length, vocab: Number(vocab), logits}));
await context.dispose();
await model.dispose();
await llama.dispose();
