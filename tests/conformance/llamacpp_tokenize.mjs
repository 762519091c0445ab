// llama.cpp's own tokenization of a text with a GGUF file's vocabulary (through
// node-llama-cpp's prebuilt binaries): no BOS/EOS added, special-token text
// parsed, as `llmq tokenize --no-special` does.
//
// usage: node llamacpp_tokenize.mjs MODEL.gguf TEXT_FILE
// prints one JSON array of ids
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, textPath] = process.argv.slice(2);
if (!modelPath || !textPath) {
    console.error("usage: node llamacpp_tokenize.mjs MODEL.gguf TEXT_FILE");
    process.exit(2);
}
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, gpuLayers: 0, vocabOnly: true});
console.log(JSON.stringify(Array.from(model.tokenize(readFileSync(textPath, "utf8"), true))));
await model.dispose();
await llama.dispose();
