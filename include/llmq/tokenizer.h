/* Tokenizers from Hugging Face tokenizer.json: SentencePiece-style BPE with byte
 * fallback (Llama-2, Mistral, Gemma 3, TinyLlama) and byte-level BPE (GPT-2,
 * Llama-3, Qwen2/3, SmolLM). encode/decode reproduce the Hugging Face
 * `tokenizers` library (encode(add_special_tokens), decode(skip_special_tokens=False)
 * without clean-up). The vocabulary can be exported in llama.cpp's GGUF terms
 * (tokenizer.ggml.*) and a tokenizer rebuilt from those arrays. */
#ifndef LLMQ_TOKENIZER_H
#define LLMQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct llmq_tokenizer llmq_tokenizer;

/* path: a directory holding tokenizer.json (+ optional tokenizer_config.json), or a
 * tokenizer.json file (a tokenizer_config.json beside it is read too).
 * NULL + llmq_error on failure. */
llmq_tokenizer *llmq_tokenizer_load(const char *path);
/* The same from in-memory JSON text (config_json may be NULL). name is used in messages. */
llmq_tokenizer *llmq_tokenizer_load_json(const char *json, size_t json_len, const char *config_json,
                                         size_t config_len, const char *name);
void llmq_tokenizer_free(llmq_tokenizer *tok);

/* add_special: apply the post_processor / add_bos_token (BOS etc.) as HF
 * encode(add_special_tokens=True) does. Special-token text inside `text` is always
 * parsed into its id (HF's default). Invalid UTF-8 in `text` is first replaced by
 * U+FFFD (one per maximal invalid subsequence, as Python's errors="replace").
 * *ids is malloc'd (may be NULL when *n_ids == 0). Returns LLMQ_OK / LLMQ_ERR. */
int llmq_tokenizer_encode(const llmq_tokenizer *tok, const char *text, size_t len, int add_special,
                          int32_t **ids, size_t *n_ids);

/* Returns malloc'd bytes (NUL-terminated, but may contain NULs; *len set), as HF
 * decode(skip_special_tokens=False) without clean-up. Ids outside [0, vocab_size)
 * are an error (NULL). */
char *llmq_tokenizer_decode(const llmq_tokenizer *tok, const int32_t *ids, size_t n, size_t *len);

int llmq_tokenizer_vocab_size(const llmq_tokenizer *tok); /* max id + 1, added tokens included */
int llmq_tokenizer_bos_id(const llmq_tokenizer *tok);     /* -1 when none */
int llmq_tokenizer_eos_id(const llmq_tokenizer *tok);
int llmq_tokenizer_unk_id(const llmq_tokenizer *tok);
int llmq_tokenizer_pad_id(const llmq_tokenizer *tok);
int llmq_tokenizer_adds_bos(const llmq_tokenizer *tok);   /* does encode(add_special=1) prepend BOS */
int llmq_tokenizer_adds_eos(const llmq_tokenizer *tok);   /* does encode(add_special=1) append EOS */

/* The token's text as written in tokenizer.json (byte-level tokens in their
 * GPT-2 unicode form); NULL for an id with no token. */
const char *llmq_tokenizer_token_text(const llmq_tokenizer *tok, int32_t id, size_t *len);
/* Id of a token given its tokenizer.json text (added tokens first), -1 if none. */
int32_t llmq_tokenizer_token_id(const llmq_tokenizer *tok, const char *text, size_t len);

/* ---- llama.cpp vocabulary terms (GGUF tokenizer.ggml.* keys) ---- */
enum llmq_token_type {
    LLMQ_TOKEN_NORMAL = 1,
    LLMQ_TOKEN_UNKNOWN = 2,
    LLMQ_TOKEN_CONTROL = 3,
    LLMQ_TOKEN_USER_DEFINED = 4,
    LLMQ_TOKEN_UNUSED = 5,
    LLMQ_TOKEN_BYTE = 6,
};

/* Everything a GGUF file stores about a tokenizer. All memory is owned by the
 * struct (llmq_vocab_free). Strings carry lengths: tokens may contain NUL. */
typedef struct {
    char *model;          /* tokenizer.ggml.model: "llama" (SPM-style BPE, byte fallback) or "gpt2" (byte-level BPE) */
    char *pre;            /* tokenizer.ggml.pre: "default", "llama-bpe", "qwen2", "smollm", "gpt-2" */
    size_t n_tokens;
    char **tokens;        /* tokenizer.ggml.tokens, by id (NUL-terminated copies) */
    size_t *token_lens;
    float *scores;        /* tokenizer.ggml.scores: -(rank of the merge producing the token), 0 otherwise */
    int32_t *token_types; /* tokenizer.ggml.token_type: enum llmq_token_type */
    size_t n_merges;
    char **merges;        /* tokenizer.ggml.merges: "a b", in rank order */
    size_t *merge_lens;
    int32_t bos_id, eos_id, unk_id, pad_id; /* -1: none */
    int add_bos, add_eos;
    int add_space_prefix; /* "llama" model: the normalizer prepends U+2581 (tokenizer.ggml.add_space_prefix) */
    char *chat_template;  /* tokenizer.chat_template or NULL */
} llmq_vocab;

/* Fills *out (zeroed first). LLMQ_ERR when the tokenizer's pipeline has no
 * llama.cpp equivalent (the message says which part). */
int llmq_tokenizer_export_vocab(const llmq_tokenizer *tok, llmq_vocab *out);
/* Builds a tokenizer from llama.cpp terms. When v->n_merges == 0 and the model is
 * "llama", merges are derived from the scores (transformers' generate_merges). */
llmq_tokenizer *llmq_tokenizer_from_vocab(const llmq_vocab *v);
void llmq_vocab_free(llmq_vocab *v);

#endif
