/* Llama-class models in GGUF, in llama.cpp's terms: architecture keys,
 * tensor names, the q/k row order, and the tokenizer.ggml.* vocabulary.
 *
 * Export side (used by the quantize driver): the metadata a llama.cpp build
 * needs to load the file (src/llama-model.cpp load_hparams, llama-vocab.cpp),
 * written as convert_hf_to_gguf.py writes it. Import side: a GGUF written by
 * llmq or by llama.cpp's converter/quantizer loads as an llmq_model whose
 * weights are typed views into the map.
 *
 * Row order. Hugging Face Llama checkpoints rotate pairs (i, i + head_dim/2)
 * (rotate_half); llama.cpp's converter permutes the rows of q_proj and k_proj
 * (LlamaModel.permute) so that pairs are adjacent (2i, 2i+1). The permutation
 * acts on output rows only, so a row of quantized blocks moves as a unit and
 * quantization groups (along the input dimension) are unaffected. Qwen2
 * ("qwen2" in llama.cpp) keeps the Hugging Face order (NEOX rope). Export
 * permutes; import undoes it (copies of attn_q/attn_k rows and biases that
 * the model owns), so a loaded GGUF model is in Hugging Face order and runs
 * the same forward as the safetensors checkpoint: an f32 GGUF gives the same
 * logits bit for bit. */
#ifndef LLMQ_GGUF_MODEL_H
#define LLMQ_GGUF_MODEL_H

#include "llmq/config.h"
#include "llmq/gguf.h"
#include "llmq/model.h"
#include "llmq/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* llama.cpp's LlamaFileType (general.file_type). */
enum {
    LLMQ_FTYPE_ALL_F32 = 0,
    LLMQ_FTYPE_MOSTLY_F16 = 1,
    LLMQ_FTYPE_MOSTLY_Q4_0 = 2,
    LLMQ_FTYPE_MOSTLY_Q4_1 = 3,
    LLMQ_FTYPE_MOSTLY_Q8_0 = 7,
    LLMQ_FTYPE_MOSTLY_Q5_0 = 8,
    LLMQ_FTYPE_MOSTLY_Q5_1 = 9,
    LLMQ_FTYPE_MOSTLY_Q2_K = 10,
    LLMQ_FTYPE_MOSTLY_Q3_K_S = 11,
    LLMQ_FTYPE_MOSTLY_Q3_K_M = 12,
    LLMQ_FTYPE_MOSTLY_Q3_K_L = 13,
    LLMQ_FTYPE_MOSTLY_Q4_K_S = 14,
    LLMQ_FTYPE_MOSTLY_Q4_K_M = 15,
    LLMQ_FTYPE_MOSTLY_Q5_K_S = 16,
    LLMQ_FTYPE_MOSTLY_Q5_K_M = 17,
    LLMQ_FTYPE_MOSTLY_Q6_K = 18,
    LLMQ_FTYPE_MOSTLY_IQ4_NL = 25,
    LLMQ_FTYPE_MOSTLY_IQ4_XS = 30,
    LLMQ_FTYPE_MOSTLY_BF16 = 32,
};

/* True when path names a GGUF file (it starts with the "GGUF" magic). */
bool llmq_is_gguf_file(const char *path);

/* ---- names and row order ---- */

/* llama.cpp architecture for a checkpoint's config: "llama" (Llama, Mistral)
 * or "qwen2"; NULL with a message for anything else. */
const char *llmq_gguf_arch(const llmq_config *cfg);
/* "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down". */
const char *llmq_gguf_linear_name(llmq_linear which);
/* Writes "blk.<layer>.<linear>.<suffix>" (suffix "weight" or "bias") into buf. */
void llmq_gguf_layer_tensor_name(char *buf, size_t cap, int layer, const char *what, const char *suffix);

/* LlamaModel.permute as a row map: for a matrix of `rows` rows holding n_head
 * heads, dst row r is src row src_of_dst[r]. Within head h (d = rows/n_head
 * rows): dst h·d + 2i + s  <-  src h·d + s·d/2 + i,  s ∈ {0,1}, i < d/2. */
int llmq_gguf_qk_row_map(int rows, int n_head, int32_t *src_of_dst);
/* Permutes whole rows of row_bytes bytes (any element type, packed blocks
 * included) from src into dst (distinct buffers): dst[r] = src[src_of_dst[r]]. */
void llmq_gguf_permute_rows(void *dst, const void *src, int rows, size_t row_bytes, const int32_t *src_of_dst);

/* ---- export ---- */

/* Model metadata: general.architecture/name/file_type/quantization_version and
 * the <arch>.* hyperparameters (context, embedding, blocks, feed-forward,
 * heads, kv heads, key/value length, rms eps, rope base, rope dimension,
 * vocab size, linear rope scaling). Llama-3 rope scaling is carried by the
 * rope_freqs tensor instead (llmq_gguf_rope_freqs). */
int llmq_gguf_write_model_kv(llmq_gguf_writer *w, const llmq_config *cfg, const char *name, int file_type);

/* The rope_freqs.weight factors the converter writes for Llama-3 rope
 * scaling (head_dim/2 floats into out). LLMQ_GGUF_ABSENT when the config has
 * no Llama-3 scaling. */
int llmq_gguf_rope_freqs(const llmq_config *cfg, float *out);

/* tokenizer.ggml.* from a vocabulary in llama.cpp terms. The token list is
 * padded with "[PAD<id>]" UNUSED tokens up to n_vocab (the embedding rows),
 * as the converter pads it; a vocabulary longer than n_vocab is an error. */
int llmq_gguf_write_vocab_kv(llmq_gguf_writer *w, const llmq_vocab *v, int n_vocab);

/* ---- import ---- */

/* Hyperparameters from <arch>.* keys and tensor shapes. *qk_permuted is
 * true for "llama" (q/k rows in the converter's order), false for "qwen2". */
int llmq_gguf_read_config(const llmq_gguf *g, llmq_config *cfg, bool *qk_permuted);
/* tokenizer.ggml.* into *out (zeroed first; llmq_vocab_free releases it).
 * Missing optional keys take llama.cpp's defaults. */
int llmq_gguf_read_vocab(const llmq_gguf *g, llmq_vocab *out);
/* A tokenizer from the file's vocabulary (NULL + message on error). */
llmq_tokenizer *llmq_gguf_tokenizer(const llmq_gguf *g);
llmq_tokenizer *llmq_tokenizer_load_gguf(const char *path);

/* Loads a GGUF model: weights are typed views into the map (ggml ne[0] is the
 * row length, so a tensor of ne {cols, rows} is a rows × cols matrix), norms
 * and biases as f32 copies; for "llama" files attn_q/attn_k (and their
 * biases) are copies with the converter's permutation undone, and
 * rope_interleaved is false. llmq_model_load() calls this for .gguf paths. */
llmq_model *llmq_model_load_gguf(const char *path);

#endif
