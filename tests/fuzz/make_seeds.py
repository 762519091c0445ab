#!/usr/bin/env python3
"""Writes the fuzz seed corpora under tests/fuzz/corpus/<target>/ from the small
real files in ../shared (cut down where they are large) and hand-made cases.
Run from the repository root: python3 tests/fuzz/make_seeds.py [SHARED_DIR]
Each seed stays below 64 KiB (scripts/fuzz.sh passes -max_len=65536)."""
import json
import os
import struct
import sys

SHARED = sys.argv[1] if len(sys.argv) > 1 else "../shared"
OUT = "tests/fuzz/corpus"
MAX = 65536


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    assert len(data) <= MAX, (target, name, len(data))
    os.makedirs(f"{OUT}/{target}", exist_ok=True)
    with open(f"{OUT}/{target}/{name}", "wb") as f:
        f.write(data)


def read(rel):
    with open(f"{SHARED}/{rel}", "rb") as f:
        return f.read()


# ---- config.json ---------------------------------------------------------------
for m in ["stories-llama-7m", "stories260K", "stories260K-untied"]:
    put("config", f"{m}.json", read(f"models/{m}/config.json"))
base = json.loads(read("models/stories260K/config.json"))
variants = {
    "mistral.json": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": 4096,
                     "num_key_value_heads": 2, "rope_theta": 1e6},
    "qwen2.json": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_bias": True,
                   "head_dim": 16, "eos_token_id": [2, 3], "bos_token_id": None},
    "llama3_rope.json": {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                         "tie_word_embeddings": True, "mlp_bias": False},
    "linear_rope.json": {"rope_scaling": {"type": "linear", "factor": 2.0}, "hidden_act": "silu"},
    "bad_heads.json": {"num_attention_heads": 7, "num_key_value_heads": 3},
    "unknown_arch.json": {"architectures": ["GPT2LMHeadModel"]},
}
for name, delta in variants.items():
    c = dict(base)
    c.update(delta)
    put("config", name, json.dumps(c, indent=1))


# ---- safetensors -------------------------------------------------------------------
def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape, bytes)] -> file bytes."""
    header, body = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(body), len(body) + len(data)]}
        body += data
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + body


def f32(*v):
    return struct.pack(f"<{len(v)}f", *v)


real = read("models/stories260K/model.safetensors")
hlen = struct.unpack("<Q", real[:8])[0]
real_header = json.loads(real[8:8 + hlen])
put("safetensors", "stories260K-header-only", real[:8 + hlen])  # the real header, data cut off
small = []
for i, (name, info) in enumerate(sorted((k, v) for k, v in real_header.items() if k != "__metadata__")):
    if i >= 6:
        break
    dtype = ["F32", "F16", "BF16"][i % 3]
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    shape = [2, 3] if len(info["shape"]) == 2 else [3]
    n = shape[0] * (shape[1] if len(shape) == 2 else 1)
    small.append((name, dtype, shape, bytes((j * 37 + i) % 256 & 0x3f for j in range(n * size))))
put("safetensors", "small-mixed-dtypes", safetensors(small, {"format": "pt"}))
put("safetensors", "scalar-and-empty", safetensors([("s", "F32", [], f32(1.5)), ("e", "F16", [0, 4], b"")]))
put("safetensors", "nan-inf", safetensors([("w", "F32", [4], f32(1.0, float("nan"), float("inf"), -2.0)),
                                           ("h", "F16", [2], b"\x00\x7c\x00\x3c")]))
put("safetensors", "unpadded", safetensors([("a", "F32", [2], f32(1, 2))], pad=False))
put("safetensors", "overlap", struct.pack("<Q", 102) + json.dumps(
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, separators=(",", ":")).encode().ljust(102) + f32(1, 2, 3))
put("safetensors", "unknown-dtype", safetensors([("q", "I8", [4], b"\x01\x02\x03\x04")]))

# ---- sharded index: index JSON, NUL, one shard (written as both shard names) ------------
shard = safetensors(small[:3])
weight_map = {t[0]: "model-00001-of-00002.safetensors" for t in small[:3]}
put("st_index", "one-shard", json.dumps({"metadata": {"total_size": 64}, "weight_map": weight_map}).encode() + b"\0" + shard)
wm2 = dict(weight_map)
wm2[small[0][0]] = "model-00002-of-00002.safetensors"
put("st_index", "two-shards", json.dumps({"weight_map": wm2}).encode() + b"\0" + shard)
put("st_index", "missing-tensor", json.dumps({"weight_map": {"nope": "model-00001-of-00002.safetensors"}}).encode() + b"\0" + shard)
put("st_index", "escaping-shard", json.dumps({"weight_map": {"a": "../model.safetensors"}}).encode() + b"\0")


# ---- tokenizer.json: the small real one, and the others cut to a few hundred tokens -----
def cut_tokenizer(rel, keep):
    j = json.loads(read(rel))
    model = j["model"]
    vocab = model["vocab"]
    singles = not model.get("byte_fallback")  # byte-level BPE needs its whole byte alphabet
    old_ids = sorted(i for t, i in vocab.items() if i < keep or (singles and len(t) == 1))
    remap = {o: n for n, o in enumerate(old_ids)}
    new_vocab = {t: remap[i] for t, i in vocab.items() if i in remap}
    model["vocab"] = new_vocab
    merges = []
    for m in model.get("merges", []):
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in new_vocab and b in new_vocab and a + b in new_vocab:
            merges.append(m)
    model["merges"] = merges
    added = []
    for k, t in enumerate(j.get("added_tokens", [])[:8]):
        remap[t["id"]] = len(new_vocab) + k
        t["id"] = remap[t["id"]]
        added.append(t)
    j["added_tokens"] = added

    def fix(x):
        if isinstance(x, dict):
            for key, v in x.items():
                if key == "ids" and isinstance(v, list):
                    x[key] = [remap.get(i, 0) for i in v]
                elif key == "id" and isinstance(v, int):
                    x[key] = remap.get(v, 0)
                else:
                    fix(v)
        elif isinstance(x, list):
            for v in x:
                fix(v)

    fix(j.get("post_processor"))
    return json.dumps(j, ensure_ascii=False, separators=(",", ":")).encode()


text = "Hello world! Numbers 1234567, café naïve, 日本語 \U0001F600 <s></s>".encode()
put("tokenizer", "stories260K", read("models/stories260K/tokenizer.json") + b"\0" + text + b"\0" +
    read("models/stories260K/tokenizer_config.json"))
for name, keep in [("gpt2", 300), ("llama3", 300), ("qwen3", 300), ("mistral-7b-v0.1", 400), ("tinyllama", 400),
                   ("smollm2", 300), ("gemma3", 400)]:
    data = cut_tokenizer(f"tokenizers/{name}/tokenizer.json", keep)
    cfg = f"{SHARED}/tokenizers/{name}/tokenizer_config.json"
    tail = b""
    if os.path.getsize(cfg) < 8192:
        tail = b"\0" + read(f"tokenizers/{name}/tokenizer_config.json")
    put("tokenizer", name, data + b"\0" + text + tail)


# ---- GGUF: hand-written files (an independent encoder) and a cut real vocab file -------
def gstr(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gval(t, v):
    if t == 8:
        return gstr(v)
    if t == 9:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


# ggml type id -> (block size, bytes per block)
GTYPES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 8: (32, 34), 12: (256, 144), 30: (1, 2)}


def gguf(kvs, tensors, version=3, alignment=32):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + gval(t, v)
    off, data = 0, b""
    for name, gt, ne in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", gt, off)
        bs, bb = GTYPES[gt]
        n = 1
        for d in ne:
            n *= d
        size = n // bs * bb
        blob = bytes((i * 7) % 251 for i in range(size))
        blob += b"\0" * (-len(blob) % alignment)
        data += blob
        off += len(blob)
    out += b"\0" * (-len(out) % alignment)
    return out + data


all_kinds = [("general.architecture", 8, "llama"), ("general.name", 8, "fuzz seed"),
             ("u8", 0, 200), ("i8", 1, -5), ("u16", 2, 60000), ("i16", 3, -300), ("u32", 4, 4000000000),
             ("i32", 5, -7), ("f32", 6, 0.5), ("bool", 7, True), ("u64", 10, 1 << 40), ("i64", 11, -(1 << 40)),
             ("f64", 12, 1e-300), ("llama.context_length", 4, 2048),
             ("arr.u8", 9, (0, [1, 2, 3])), ("arr.str", 9, (8, ["a", "", "b\0c"])), ("arr.f32", 9, (6, [1.0, -2.5])),
             ("arr.empty", 9, (5, [])), ("arr.bool", 9, (7, [True, False]))]
put("gguf", "all-kinds", gguf(all_kinds, [("token_embd.weight", 0, [4, 3]), ("output_norm.weight", 1, [8]),
                                          ("blk.0.attn_q.weight", 2, [64, 2]), ("blk.0.ffn_up.weight", 8, [32, 1]),
                                          ("blk.0.ffn_down.weight", 12, [256, 1]), ("bf16", 30, [2, 2, 2, 2])]))
put("gguf", "vocab-only", gguf([("general.architecture", 8, "llama"), ("tokenizer.ggml.model", 8, "llama"),
                                ("tokenizer.ggml.tokens", 9, (8, ["<unk>", "<s>", "</s>", "\u2581a", "b"])),
                                ("tokenizer.ggml.scores", 9, (6, [0.0, 0.0, 0.0, -1.0, -2.0])),
                                ("tokenizer.ggml.token_type", 9, (5, [2, 3, 3, 1, 1])),
                                ("tokenizer.ggml.bos_token_id", 4, 1)], []))
put("gguf", "v2-align64", gguf([("general.alignment", 4, 64)], [("a", 0, [16]), ("b", 0, [3])], version=2, alignment=64))
put("gguf", "empty", gguf([], []))
put("gguf", "llama-spm-vocab-head", read("tokenizers/llamacpp-vocab-tests/ggml-vocab-llama-spm.gguf")[:16384])

# ---- hub answers: /api/models/... and a shard index ------------------------------------------
sha = "0123456789abcdef0123456789abcdef01234567"
put("hub", "repo-info", json.dumps({
    "id": "org/name", "sha": sha, "siblings": [
        {"rfilename": "config.json", "size": 600, "blobId": "a" * 40},
        {"rfilename": "model.safetensors", "size": 1044992, "blobId": "b" * 40,
         "lfs": {"sha256": "c" * 64, "size": 1044992, "pointerSize": 135}},
        {"rfilename": "original/params.json", "blobId": "d" * 40},
        {"rfilename": "README.md"}]}, indent=1))
put("hub", "repo-info-hostile", json.dumps({"sha": sha, "siblings": [{"rfilename": "../../etc/passwd", "size": 1}]}))
put("hub", "index", json.dumps({"metadata": {"total_size": 10}, "weight_map": {
    "lm_head.weight": "model-00002-of-00002.safetensors", "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00002-of-00002.safetensors"}}, indent=1))
print("seeds written under", OUT)
