/* The tokenizer in llama.cpp's terms (GGUF tokenizer.ggml.* keys) and back.
 *
 * Export: token types as llama.cpp's convert_hf_to_gguf.py assigns them (added
 * special -> CONTROL, the unk token -> UNKNOWN, other added -> USER_DEFINED,
 * <0xXX> -> BYTE, id gaps -> "[PAD<id>]" UNUSED). Scores: llama.cpp's LlamaHfVocab
 * writes a -1000 placeholder for every token of a tokenizer.json-only model, which
 * loses the merge order its SPM tokenizer needs; we write -(rank of the first
 * merge producing the token), 0 for tokens no merge produces, so that "higher
 * score merges first" equals HF's "lower rank merges first". Merges are exported
 * for both models, so a round trip is exact.
 *
 * Import builds a tokenizer.json document for the model/pre-tokenizer the names
 * stand for and loads it with the tokenizer.json loader, so both paths share one
 * implementation. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "llmq/error.h"
#include "tokenizer_internal.h"

void llmq_vocab_free(llmq_vocab *v)
{
    if (!v) return;
    for (size_t i = 0; v->tokens && i < v->n_tokens; i++) free(v->tokens[i]);
    for (size_t i = 0; v->merges && i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->token_lens);
    free(v->scores);
    free(v->token_types);
    free(v->merges);
    free(v->merge_lens);
    free(v->model);
    free(v->pre);
    free(v->chat_template);
    memset(v, 0, sizeof *v);
}

static char *dup_bytes(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static const char *pre_name_string(int pre)
{
    switch (pre) {
    case PRE_NAME_GPT2: return "gpt-2";
    case PRE_NAME_LLAMA3: return "llama-bpe";
    case PRE_NAME_QWEN2: return "qwen2";
    case PRE_NAME_SMOLLM: return "smollm";
    }
    return NULL;
}

/* Is the SPM-style pipeline one llama.cpp's "llama" tokenizer reproduces? Sets
 * *space_prefix from it. */
static int spm_pipeline(const llmq_tokenizer *tok, int *space_prefix)
{
    static const char SPACE_MARK[] = "\xe2\x96\x81"; /* U+2581 */
    const tk_normalizer *n = tok->norms;
    int replace_at = -1;
    *space_prefix = 0;
    if (tok->n_norms == 2 && n[0].kind == NORM_PREPEND && n[0].text_len == 3 && !memcmp(n[0].text, SPACE_MARK, 3)) {
        *space_prefix = 1;
        replace_at = 1;
    } else if (tok->n_norms == 1) {
        replace_at = 0;
    } else if (tok->n_norms != 0) {
        return llmq_error("tokenizer: export: this normalizer has no llama.cpp equivalent");
    }
    if (replace_at >= 0) {
        const tk_normalizer *r = &n[replace_at];
        if (r->kind != NORM_REPLACE || r->re.code || r->pattern_len != 1 || r->pattern[0] != ' ' || r->text_len != 3 ||
            memcmp(r->text, SPACE_MARK, 3))
            return llmq_error("tokenizer: export: this normalizer has no llama.cpp equivalent");
    }
    for (int i = 0; i < tok->n_pretoks; i++) {
        const tk_pretok *p = &tok->pretoks[i];
        if (p->kind == PRE_METASPACE && !p->split && tok->n_norms == 0) {
            *space_prefix = p->prepend_scheme != PREPEND_NEVER;
            continue;
        }
        /* Gemma 3: Split(" ") after the normalizer replaced every space: a no-op */
        if (p->kind == PRE_SPLIT && replace_at >= 0 && !strcmp(p->re.source, " ")) continue;
        return llmq_error("tokenizer: export: this pre_tokenizer has no llama.cpp equivalent");
    }
    return LLMQ_OK;
}

int llmq_tokenizer_export_vocab(const llmq_tokenizer *tok, llmq_vocab *out)
{
    memset(out, 0, sizeof *out);
    int space_prefix = 0;
    const char *pre = "default";
    if (tok->byte_level) {
        pre = pre_name_string(tok->pre_name);
        if (!pre) return llmq_error("tokenizer: export: this byte-level pre_tokenizer has no llama.cpp name");
    } else if (spm_pipeline(tok, &space_prefix)) {
        return LLMQ_ERR;
    }
    size_t n = (size_t)tok->n_vocab;
    out->model = strdup(tok->byte_level ? "gpt2" : "llama");
    out->pre = strdup(pre);
    out->n_tokens = n;
    out->tokens = calloc(n ? n : 1, sizeof *out->tokens);
    out->token_lens = calloc(n ? n : 1, sizeof *out->token_lens);
    out->scores = calloc(n ? n : 1, sizeof *out->scores);
    out->token_types = calloc(n ? n : 1, sizeof *out->token_types);
    out->n_merges = (size_t)tok->n_merges;
    out->merges = calloc(out->n_merges ? out->n_merges : 1, sizeof *out->merges);
    out->merge_lens = calloc(out->n_merges ? out->n_merges : 1, sizeof *out->merge_lens);
    if (!out->model || !out->pre || !out->tokens || !out->token_lens || !out->scores || !out->token_types ||
        !out->merges || !out->merge_lens)
        goto oom;
    for (size_t id = 0; id < n; id++) {
        const char *t = tok->tok_text[id];
        size_t len = tok->tok_len[id];
        char pad[32];
        int type = LLMQ_TOKEN_NORMAL;
        if (!t) {
            len = (size_t)snprintf(pad, sizeof pad, "[PAD%zu]", id);
            t = pad;
            type = LLMQ_TOKEN_UNUSED;
        } else if ((int32_t)id == tok->model_unk_id) {
            type = LLMQ_TOKEN_UNKNOWN;
        } else if (tok->tok_added[id] == 2) {
            type = LLMQ_TOKEN_CONTROL;
        } else if (tok->tok_added[id] == 1) {
            type = LLMQ_TOKEN_USER_DEFINED;
        } else if (!tok->byte_level && len == 6 && !memcmp(t, "<0x", 3) && t[5] == '>') {
            type = LLMQ_TOKEN_BYTE;
        }
        out->tokens[id] = dup_bytes(t, len);
        if (!out->tokens[id]) goto oom;
        out->token_lens[id] = len;
        out->token_types[id] = type;
    }
    for (int32_t r = tok->n_merges - 1; r >= 0; r--) { /* lowest rank last, so it wins */
        long e = tk_pairmap_find(&tok->merges, tok->merge_pairs[2 * r], tok->merge_pairs[2 * r + 1]);
        if (e >= 0) out->scores[tok->merges.new_id[e]] = -(float)r;
    }
    for (int32_t r = 0; r < tok->n_merges; r++) {
        int32_t a = tok->merge_pairs[2 * r], b = tok->merge_pairs[2 * r + 1];
        size_t la = tok->tok_len[a], lb = tok->tok_len[b];
        char *m = malloc(la + lb + 2);
        if (!m) goto oom;
        memcpy(m, tok->tok_text[a], la);
        m[la] = ' ';
        memcpy(m + la + 1, tok->tok_text[b], lb);
        m[la + lb + 1] = 0;
        out->merges[r] = m;
        out->merge_lens[r] = la + lb + 1;
    }
    out->bos_id = tok->bos_id;
    out->eos_id = tok->eos_id;
    out->unk_id = tok->unk_id;
    out->pad_id = tok->pad_id;
    out->add_bos = llmq_tokenizer_adds_bos(tok);
    out->add_eos = llmq_tokenizer_adds_eos(tok);
    out->add_space_prefix = space_prefix;
    if (tok->chat_template && !(out->chat_template = strdup(tok->chat_template))) goto oom;
    return LLMQ_OK;
oom:
    llmq_vocab_free(out);
    return llmq_error("tokenizer: out of memory");
}

/* ---------------- import ---------------- */

typedef struct {
    int32_t left, right;
    float score;
    uint32_t len_left, len_right;
    size_t order;
} gen_merge;

static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static int cmp_gen_merge(const void *pa, const void *pb)
{
    const gen_merge *a = pa, *b = pb;
    /* sorted(..., key=(score, len(l), len(r)), reverse=True), stable */
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->len_left != b->len_left) return a->len_left > b->len_left ? -1 : 1;
    if (a->len_right != b->len_right) return a->len_right > b->len_right ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

static int cmp_local(const void *pa, const void *pb)
{
    const gen_merge *a = pa, *b = pb;
    if (a->left != b->left) return a->left < b->left ? -1 : 1;
    return (a->right > b->right) - (a->right < b->right);
}

/* transformers' generate_merges(vocab, vocab_scores) (tokenization_utils_base.py):
 * every split of a token into two tokens is a merge, ordered by the token's
 * score (then longer left part, longer right part). */
static int generate_merges(const llmq_vocab *v, const tk_strmap *ids, int32_t **pairs, size_t *n_pairs)
{
    size_t cap = 1024, n = 0;
    gen_merge *all = malloc(cap * sizeof *all);
    gen_merge local[256];
    if (!all) return llmq_error("tokenizer: out of memory");
    for (size_t id = 0; id < v->n_tokens; id++) {
        if (v->token_types[id] == LLMQ_TOKEN_UNUSED) continue;
        const char *t = v->tokens[id];
        size_t len = v->token_lens[id], nl = 0;
        for (size_t i = 1; i < len && nl < 256; i++) {
            if (((unsigned char)t[i] & 0xC0) == 0x80) continue;
            const tk_strmap_slot *l = tk_strmap_get(ids, t, i), *r = tk_strmap_get(ids, t + i, len - i);
            if (!l || !r) continue;
            local[nl++] = (gen_merge){l->value, r->value, v->scores[id], (uint32_t)utf8_chars(t, i),
                                      (uint32_t)utf8_chars(t + i, len - i), 0};
        }
        qsort(local, nl, sizeof *local, cmp_local);
        for (size_t k = 0; k < nl; k++) {
            if (n == cap) {
                gen_merge *p = realloc(all, cap * 2 * sizeof *p);
                if (!p) {
                    free(all);
                    return llmq_error("tokenizer: out of memory");
                }
                all = p;
                cap *= 2;
            }
            local[k].order = n;
            all[n++] = local[k];
        }
    }
    qsort(all, n, sizeof *all, cmp_gen_merge);
    *pairs = malloc((n ? n : 1) * 2 * sizeof **pairs);
    if (!*pairs) {
        free(all);
        return llmq_error("tokenizer: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        (*pairs)[2 * i] = all[i].left;
        (*pairs)[2 * i + 1] = all[i].right;
    }
    *n_pairs = n;
    free(all);
    return LLMQ_OK;
}

static json_t *jstr(const char *s, size_t n) { return json_stringn(s, n); }

static int set_pipeline(json_t *root, const llmq_vocab *v, int byte_level)
{
    const char *norm = "null", *pre = "null", *dec;
    char pre_buf[1024];
    if (!byte_level) {
        norm = v->add_space_prefix
                   ? "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
                     "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]}"
                   : "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}";
        dec = v->add_space_prefix
                  ? "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},"
                    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
                    "\"content\":\" \",\"start\":1,\"stop\":0}]}"
                  : "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},"
                    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]}";
    } else {
        dec = "{\"type\":\"ByteLevel\"}";
        const char *regex = NULL;
        if (!strcmp(v->pre, "llama-bpe") || !strcmp(v->pre, "llama3")) regex = TK_REGEX_LLAMA3;
        else if (!strcmp(v->pre, "qwen2")) regex = TK_REGEX_QWEN2;
        if (regex) {
            json_t *re = json_string(regex);
            char *enc = json_dumps(re, JSON_ENCODE_ANY);
            json_decref(re);
            if (!enc) return llmq_error("tokenizer: out of memory");
            snprintf(pre_buf, sizeof pre_buf,
                     "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":%s},"
                     "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                     "\"use_regex\":false}]}",
                     enc);
            free(enc);
            pre = pre_buf;
            if (!strcmp(v->pre, "qwen2")) norm = "{\"type\":\"NFC\"}";
        } else if (!strcmp(v->pre, "smollm")) {
            pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
                  "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}]}";
        } else if (!strcmp(v->pre, "gpt-2") || !strcmp(v->pre, "default")) {
            pre = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}";
        } else {
            return llmq_error("tokenizer: unsupported tokenizer.ggml.pre '%s'", v->pre);
        }
    }
    json_error_t e;
    json_object_set_new(root, "normalizer", json_loads(norm, JSON_DECODE_ANY, &e));
    json_object_set_new(root, "pre_tokenizer", json_loads(pre, JSON_DECODE_ANY, &e));
    json_object_set_new(root, "decoder", json_loads(dec, JSON_DECODE_ANY, &e));
    return LLMQ_OK;
}

llmq_tokenizer *llmq_tokenizer_from_vocab(const llmq_vocab *v)
{
    const char *name = "vocab";
    if (!v->model || !v->tokens || !v->token_types || !v->token_lens) {
        llmq_error("%s: tokens, token types and model are required", name);
        return NULL;
    }
    int byte_level;
    if (!strcmp(v->model, "llama")) byte_level = 0;
    else if (!strcmp(v->model, "gpt2")) byte_level = 1;
    else {
        llmq_error("%s: unsupported tokenizer type %s", name, v->model);
        return NULL;
    }
    if (!byte_level && !v->scores && !v->n_merges) {
        llmq_error("%s: a \"llama\" vocab needs merges or scores", name);
        return NULL;
    }
    llmq_tokenizer *tok = NULL;
    int32_t *pairs = NULL;
    size_t n_pairs = 0;
    tk_strmap ids = {0};
    json_t *root = json_object(), *cfg = json_object(), *model = json_object(), *vocab = json_object(),
           *merges = json_array(), *added = json_array();
    if (!root || !cfg || !model || !vocab || !merges || !added || tk_strmap_init(&ids, v->n_tokens)) {
        llmq_error("tokenizer: out of memory");
        goto done;
    }
    for (size_t id = 0; id < v->n_tokens; id++) {
        int type = v->token_types[id];
        if (type < LLMQ_TOKEN_NORMAL || type > LLMQ_TOKEN_BYTE) {
            llmq_error("%s: token_type[%zu] = %d is not a llama.cpp token type", name, id, type);
            goto done;
        }
        if (type == LLMQ_TOKEN_UNUSED) continue;
        if (tk_strmap_get(&ids, v->tokens[id], v->token_lens[id])) continue; /* a duplicate: the first id wins */
        if (tk_strmap_put(&ids, v->tokens[id], v->token_lens[id], (int32_t)id, 0)) goto done;
        json_object_setn_new(vocab, v->tokens[id], v->token_lens[id], json_integer((json_int_t)id));
        if (type == LLMQ_TOKEN_CONTROL || type == LLMQ_TOKEN_UNKNOWN || type == LLMQ_TOKEN_USER_DEFINED) {
            json_t *a = json_object();
            json_object_set_new(a, "id", json_integer((json_int_t)id));
            json_object_set_new(a, "content", jstr(v->tokens[id], v->token_lens[id]));
            json_object_set_new(a, "special", json_boolean(type != LLMQ_TOKEN_USER_DEFINED));
            json_object_set_new(a, "normalized", json_false());
            json_array_append_new(added, a);
        }
    }
    if (v->n_merges) {
        for (size_t i = 0; i < v->n_merges; i++) {
            const char *m = v->merges[i];
            size_t len = v->merge_lens ? v->merge_lens[i] : strlen(m);
            /* split at the first space after the first byte, as llama.cpp's vocab loader */
            const char *sp = len > 1 ? memchr(m + 1, ' ', len - 1) : NULL;
            if (!sp) {
                llmq_error("%s: merges[%zu]: expected \"a b\"", name, i);
                goto done;
            }
            json_t *pair = json_array();
            json_array_append_new(pair, jstr(m, (size_t)(sp - m)));
            json_array_append_new(pair, jstr(sp + 1, len - (size_t)(sp - m) - 1));
            json_array_append_new(merges, pair);
        }
    } else if (!byte_level) {
        if (generate_merges(v, &ids, &pairs, &n_pairs)) goto done;
        for (size_t i = 0; i < n_pairs; i++) {
            json_t *pair = json_array();
            json_array_append_new(pair, jstr(v->tokens[pairs[2 * i]], v->token_lens[pairs[2 * i]]));
            json_array_append_new(pair, jstr(v->tokens[pairs[2 * i + 1]], v->token_lens[pairs[2 * i + 1]]));
            json_array_append_new(merges, pair);
        }
    }
    json_object_set_new(model, "type", json_string("BPE"));
    if (!byte_level && v->unk_id >= 0 && (size_t)v->unk_id < v->n_tokens)
        json_object_set_new(model, "unk_token", jstr(v->tokens[v->unk_id], v->token_lens[v->unk_id]));
    json_object_set_new(model, "fuse_unk", json_boolean(!byte_level));
    json_object_set_new(model, "byte_fallback", json_boolean(!byte_level));
    json_object_set_new(model, "ignore_merges", json_boolean(byte_level && !strcmp(v->pre ? v->pre : "", "llama-bpe")));
    json_object_set(model, "vocab", vocab);
    json_object_set(model, "merges", merges);
    json_object_set(root, "model", model);
    json_object_set(root, "added_tokens", added);
    if (set_pipeline(root, v, byte_level)) goto done;
    /* special tokens and add_bos/eos through the tokenizer_config.json path */
    struct {
        const char *key;
        int32_t id;
    } specials[] = {{"bos_token", v->bos_id}, {"eos_token", v->eos_id}, {"pad_token", v->pad_id}, {"unk_token", v->unk_id}};
    for (size_t i = 0; i < 4; i++)
        if (specials[i].id >= 0 && (size_t)specials[i].id < v->n_tokens)
            json_object_set_new(cfg, specials[i].key, jstr(v->tokens[specials[i].id], v->token_lens[specials[i].id]));
    json_object_set_new(cfg, "add_bos_token", json_boolean(v->add_bos));
    json_object_set_new(cfg, "add_eos_token", json_boolean(v->add_eos));
    if (v->chat_template) json_object_set_new(cfg, "chat_template", json_string(v->chat_template));
    tok = tk_load_objects(root, cfg, name);
done:
    free(pairs);
    tk_strmap_free(&ids);
    json_decref(root);
    json_decref(cfg);
    json_decref(model);
    json_decref(vocab);
    json_decref(merges);
    json_decref(added);
    return tok;
}
