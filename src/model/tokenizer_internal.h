/* Internals shared by the tokenizer's source files (src/model/tokenizer*.c):
 * the private types they share, and each file's functions for the files above
 * it. Calls go one way, each file to the ones before it:
 *   tokenizer_util.c  (buffers, maps, UTF-8, regexes, tries)
 *   tokenizer_bpe.c   (the BPE model: one word -> ids)
 *   tokenizer.c       (the pipeline: encode, decode, the public accessors)
 *   tokenizer_load.c  (tokenizer.json -> a tokenizer)
 *   tokenizer_vocab.c (llama.cpp vocabularies in and out)
 * (scripts/check-deps.py fails on a call back). */
#ifndef LLMQ_TOKENIZER_INTERNAL_H
#define LLMQ_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "llmq/tokenizer.h"

/* ---- growable byte buffer ---- */
typedef struct {
    char *data;
    size_t len, cap;
} tk_buf;
int tk_buf_reserve(tk_buf *b, size_t extra);
int tk_buf_append(tk_buf *b, const void *p, size_t n);
void tk_buf_free(tk_buf *b);

/* ---- bump allocator: many small strings freed at once ---- */
typedef struct tk_arena_block tk_arena_block;
typedef struct {
    tk_arena_block *head;
} tk_arena;
void *tk_arena_alloc(tk_arena *a, size_t n);
char *tk_arena_strdup(tk_arena *a, const char *s, size_t n); /* NUL-terminated copy */
void tk_arena_free(tk_arena *a);

/* ---- string -> (int32, int32) open-addressing hash map; keys are not copied ---- */
typedef struct {
    const char *key;
    uint32_t len;
    uint32_t hash;
    int32_t value, value2;
} tk_strmap_slot;
typedef struct {
    tk_strmap_slot *slots; /* key == NULL: empty */
    size_t mask, count;
} tk_strmap;
uint64_t tk_hash_bytes(const void *p, size_t n);
int tk_strmap_init(tk_strmap *m, size_t expected);
void tk_strmap_free(tk_strmap *m);
/* Inserts or overwrites. LLMQ_ERR on allocation failure. */
int tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t value, int32_t value2);
/* The slot holding key, or NULL. */
const tk_strmap_slot *tk_strmap_get(const tk_strmap *m, const char *key, size_t len);

/* ---- (id, id) -> (rank, new id) map for BPE merges ---- */
typedef struct {
    uint64_t *keys; /* UINT64_MAX: empty */
    int32_t *rank, *new_id;
    size_t mask, count;
} tk_pairmap;
int tk_pairmap_init(tk_pairmap *m, size_t expected);
void tk_pairmap_free(tk_pairmap *m);
int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id);
/* Index of the entry or -1. */
static inline long tk_pairmap_find(const tk_pairmap *m, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 20) & m->mask;
    for (;;) {
        uint64_t k = m->keys[i];
        if (k == key) return (long)i;
        if (k == UINT64_MAX) return -1;
        i = (i + 1) & m->mask;
    }
}

/* ---- UTF-8 ---- */
/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
size_t tk_utf8_valid_len(const unsigned char *s, size_t n);
/* Decodes one char from valid UTF-8; returns its byte length. */
size_t tk_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
size_t tk_utf8_encode(uint32_t cp, char out[4]);
/* Replaces each maximal invalid subsequence by U+FFFD (Rust from_utf8_lossy).
 * Returns 1 if the input was valid (out untouched), 0 if *out was filled, -1 on OOM. */
int tk_utf8_sanitize(const char *s, size_t n, tk_buf *out);
int tk_is_white_space(uint32_t cp);   /* Unicode White_Space (Rust char::is_whitespace) */
int tk_is_numeric(uint32_t cp);       /* Rust char::is_numeric: Nd, Nl, No */

/* GPT-2 byte <-> unicode table (bytes_to_unicode in openai/gpt-2 encoder.py). */
uint32_t tk_byte_to_cp(unsigned char b);
int tk_cp_to_byte(uint32_t cp); /* -1 if cp is not one of the 256 */
/* Decodes a byte-level token string into raw bytes; 0 if a char is not byte-level. */
int tk_bytelevel_decode(const char *s, size_t n, tk_buf *out);

/* ---- regexes (PCRE2, UTF + UCP, JIT when available) ---- */
typedef struct {
    pcre2_code *code;
    char *source;         /* the pattern as given in tokenizer.json */
} tk_regex;
/* literal: the pattern is a plain string. \s and \S are rewritten to Unicode
 * White_Space, which is what Oniguruma (used by HF tokenizers) matches. */
int tk_regex_compile(tk_regex *re, const char *pattern, size_t len, int literal, const char *what);
void tk_regex_free(tk_regex *re);

/* ---- added-token trie (leftmost-longest matching) ---- */
typedef struct {
    int32_t *node_token; /* per node: index into added[] or -1 */
    size_t n_nodes, cap_nodes;
    uint64_t *edge_keys; /* (node << 8 | byte) + 1, 0 empty */
    int32_t *edge_child;
    size_t edge_mask, n_edges;
    uint8_t first[256];
} tk_trie;
int tk_trie_init(tk_trie *t);
int tk_trie_add(tk_trie *t, const char *s, size_t n, int32_t token_index);
/* Longest token starting at s: its index, length in *mlen; -1 if none. */
int32_t tk_trie_longest(const tk_trie *t, const char *s, size_t n, size_t *mlen);
void tk_trie_free(tk_trie *t);

/* ---- pipeline components ---- */
enum { NORM_PREPEND, NORM_REPLACE, NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_LOWERCASE };
typedef struct {
    int kind;
    char *text; /* Prepend: prepend; Replace: content */
    size_t text_len;
    char *pattern; /* Replace with a String pattern */
    size_t pattern_len;
    tk_regex re; /* Replace with a Regex pattern (re.code != NULL) */
} tk_normalizer;

enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE, PRE_DIGITS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct {
    int kind;
    tk_regex re;  /* Split pattern / ByteLevel GPT-2 regex */
    int behavior; /* Split */
    int invert;
    int add_prefix_space, use_regex; /* ByteLevel */
    char repl[8];                    /* Metaspace replacement (UTF-8) */
    size_t repl_len;
    int prepend_scheme, split; /* Metaspace */
    int individual_digits;     /* Digits */
} tk_pretok;

enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE, DEC_BYTELEVEL };
typedef struct {
    int kind;
    char *pattern, *content; /* Replace */
    size_t pattern_len, content_len;
    uint32_t strip_char;
    int start, stop;       /* Strip */
    char repl[8];          /* Metaspace */
    size_t repl_len;
    int prepend;           /* Metaspace: prepend_scheme != never */
} tk_decoder;

typedef struct {
    int32_t id;
    char *content;
    size_t len;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} tk_added;

/* Which known pre-tokenizer a byte-level tokenizer uses (for GGUF export). */
enum { PRE_NAME_NONE, PRE_NAME_GPT2, PRE_NAME_LLAMA3, PRE_NAME_QWEN2, PRE_NAME_SMOLLM };

struct llmq_tokenizer {
    tk_arena arena;
    int32_t n_vocab;        /* max id + 1 */
    const char **tok_text;  /* id -> text as in tokenizer.json (NULL: no token) */
    uint32_t *tok_len;
    uint8_t *tok_added;     /* 0: model token, 1: added, 2: added special */
    tk_strmap text_to_id;   /* tokenizer.json text -> id (model vocab + added) */

    /* BPE model */
    int byte_level;         /* model keys are raw bytes (a ByteLevel pre-tokenizer maps them) */
    tk_strmap vocab;        /* model key -> id */
    const char **model_key; /* id -> model key (raw bytes for byte-level), NULL if not a model token */
    uint32_t *model_key_len;
    int32_t byte_token[256]; /* byte_level: id of the single-byte key, -1 if none */
    int32_t ascii_token[128]; /* !byte_level: id of the one-char ASCII key, -1 if none */
    tk_pairmap merges;
    int32_t n_merges;
    int32_t *merge_pairs;   /* 2 * n_merges ids, rank order (export) */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t model_unk_id;
    int32_t fallback_byte[256]; /* id of "<0xXX>", -1 if none */
    /* SPM-style vocab: a word may be cut before a U+2581 preceded by char X when no
     * token contains "X\u2581" (then no merge can span the cut): exact, and it lets
     * the word cache work on text with no pre-tokenizer */
    int spm_split;
    tk_strmap spm_unsafe; /* the chars X that some token has right before a U+2581 */

    /* pipeline */
    tk_normalizer *norms;
    int n_norms;
    tk_pretok *pretoks;
    int n_pretoks;
    tk_decoder *decs;
    int n_decs, has_decoder;
    tk_added *added;
    int n_added;
    tk_trie trie_raw, trie_norm;
    int has_trie_raw, has_trie_norm;
    int32_t prefix[4], suffix[4];
    int n_prefix, n_suffix;

    int32_t bos_id, eos_id, unk_id, pad_id;
    char *chat_template;
    int pre_name;           /* PRE_NAME_* */
};

/* tokenizer_bpe.c */
typedef struct tk_word_cache tk_word_cache;
tk_word_cache *tk_word_cache_new(void);
void tk_word_cache_free(tk_word_cache *c);
/* Appends the ids of one pre-token to out. */
int tk_bpe_encode_word(const llmq_tokenizer *tok, const char *s, size_t n, tk_word_cache *cache, tk_buf *out);
/* Builds the merge table from (a, b) id pairs in rank order. Checks that a+b is a
 * model token. name/what for messages. */
int tk_bpe_set_merges(llmq_tokenizer *tok, const int32_t *pairs, size_t n, const char *name);
/* Fills byte_token / ascii_token / fallback_byte from the model vocab. */
int tk_bpe_finish(llmq_tokenizer *tok);

/* tokenizer.c */
llmq_tokenizer *tk_new(void);
int tk_finish(llmq_tokenizer *tok, const char *name); /* builds tries, maps */
extern const char TK_REGEX_GPT2[], TK_REGEX_LLAMA3[], TK_REGEX_QWEN2[];

/* tokenizer_load.c */
int tk_set_token(llmq_tokenizer *tok, int32_t id, const char *text, size_t len);
struct json_t;
/* A tokenizer from parsed tokenizer.json / tokenizer_config.json (cfg may be NULL). */
llmq_tokenizer *tk_load_objects(struct json_t *root, struct json_t *cfg, const char *name);

#endif
