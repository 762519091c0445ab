/* Tokenizer pipeline, as Hugging Face tokenizers runs it (tokenizers/src/tokenizer/mod.rs
 * encode_single_sequence, added_vocabulary.rs extract_and_normalize):
 *   1. split the raw text on added tokens with normalized=false (leftmost-longest);
 *   2. normalize each remaining piece, then split it on added tokens with normalized=true;
 *   3. run the pre-tokenizers on the remaining pieces;
 *   4. run the BPE model on each pre-token;
 *   5. with add_special, wrap the ids in the post-processor's template (BOS...).
 * Pieces are views into the input or into per-call scratch memory. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "llmq/error.h"
#include "tokenizer_internal.h"

const char TK_REGEX_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char TK_REGEX_LLAMA3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char TK_REGEX_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                              "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ---------------- construction ---------------- */

llmq_tokenizer *tk_new(void)
{
    llmq_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        llmq_error("tokenizer: out of memory");
        return NULL;
    }
    tok->bos_id = tok->eos_id = tok->unk_id = tok->pad_id = -1;
    tok->model_unk_id = -1;
    return tok;
}

void llmq_tokenizer_free(llmq_tokenizer *tok)
{
    if (!tok) return;
    free(tok->tok_text);
    free(tok->tok_len);
    free(tok->tok_added);
    tk_strmap_free(&tok->text_to_id);
    tk_strmap_free(&tok->vocab);
    tk_strmap_free(&tok->spm_unsafe);
    free(tok->model_key);
    free(tok->model_key_len);
    tk_pairmap_free(&tok->merges);
    free(tok->merge_pairs);
    for (int i = 0; i < tok->n_norms; i++) tk_regex_free(&tok->norms[i].re);
    free(tok->norms);
    for (int i = 0; i < tok->n_pretoks; i++) tk_regex_free(&tok->pretoks[i].re);
    free(tok->pretoks);
    free(tok->decs);
    free(tok->added);
    if (tok->has_trie_raw) tk_trie_free(&tok->trie_raw);
    if (tok->has_trie_norm) tk_trie_free(&tok->trie_norm);
    free(tok->chat_template);
    tk_arena_free(&tok->arena);
    free(tok);
}

/* Builds the text -> id map and the added-token tries once the vocab, added
 * tokens and model are set. */
int tk_finish(llmq_tokenizer *tok, const char *name)
{
    (void)name;
    if (tk_strmap_init(&tok->text_to_id, (size_t)tok->n_vocab)) return LLMQ_ERR;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (tok->tok_text[id] && !tok->tok_added[id])
            if (tk_strmap_put(&tok->text_to_id, tok->tok_text[id], tok->tok_len[id], id, 0)) return LLMQ_ERR;
    for (int i = tok->n_added - 1; i >= 0; i--) /* the first added token of a text wins */
        if (tk_strmap_put(&tok->text_to_id, tok->added[i].content, tok->added[i].len, tok->added[i].id, 0))
            return LLMQ_ERR;
    for (int i = 0; i < tok->n_added; i++) {
        tk_added *a = &tok->added[i];
        tk_trie *t = a->normalized ? &tok->trie_norm : &tok->trie_raw;
        int *has = a->normalized ? &tok->has_trie_norm : &tok->has_trie_raw;
        if (!*has) {
            if (tk_trie_init(t)) return LLMQ_ERR;
            *has = 1;
        }
        if (tk_trie_add(t, a->content, a->len, i)) return LLMQ_ERR;
    }
    return tk_bpe_finish(tok);
}

/* ---------------- accessors ---------------- */

int llmq_tokenizer_vocab_size(const llmq_tokenizer *tok) { return tok->n_vocab; }
int llmq_tokenizer_bos_id(const llmq_tokenizer *tok) { return tok->bos_id; }
int llmq_tokenizer_eos_id(const llmq_tokenizer *tok) { return tok->eos_id; }
int llmq_tokenizer_unk_id(const llmq_tokenizer *tok) { return tok->unk_id; }
int llmq_tokenizer_pad_id(const llmq_tokenizer *tok) { return tok->pad_id; }

int llmq_tokenizer_adds_bos(const llmq_tokenizer *tok)
{
    return tok->n_prefix > 0 && tok->bos_id >= 0 && tok->prefix[0] == tok->bos_id;
}

int llmq_tokenizer_adds_eos(const llmq_tokenizer *tok)
{
    return tok->n_suffix > 0 && tok->eos_id >= 0 && tok->suffix[tok->n_suffix - 1] == tok->eos_id;
}

const char *llmq_tokenizer_token_text(const llmq_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n_vocab || !tok->tok_text[id]) return NULL;
    if (len) *len = tok->tok_len[id];
    return tok->tok_text[id];
}

int32_t llmq_tokenizer_token_id(const llmq_tokenizer *tok, const char *text, size_t len)
{
    const tk_strmap_slot *s = tk_strmap_get(&tok->text_to_id, text, len);
    return s ? s->value : -1;
}

/* ---------------- per-call state ---------------- */

typedef struct {
    const char *s;
    size_t n;
    int32_t id; /* >= 0: an added token already resolved */
    uint8_t at_start; /* starts at offset 0 of the original text (Metaspace "first") */
} piece;

typedef struct {
    piece *v;
    size_t n, cap;
} piece_list;

typedef struct {
    tk_arena arena;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
} call_ctx;

static int push_piece(piece_list *l, const char *s, size_t n, int32_t id, int at_start)
{
    if (n == 0 && id < 0) return LLMQ_OK; /* HF drops empty splits */
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        piece *v = realloc(l->v, cap * sizeof *v);
        if (!v) return llmq_error("tokenizer: out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (piece){s, n, id, (uint8_t)at_start};
    return LLMQ_OK;
}

/* ---------------- added tokens ---------------- */

static int is_word_char(uint32_t cp)
{
    if (cp == '_') return 1;
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || ((cp | 32) >= 'a' && (cp | 32) <= 'z');
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) || c == UTF8PROC_CATEGORY_ND ||
           c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO || c == UTF8PROC_CATEGORY_MN ||
           c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_PC;
}

/* Start of the char that ends at s[end] (exclusive). */
static size_t char_before(const char *s, size_t end)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return i;
}

/* added_vocabulary.rs find_matches: non-overlapping leftmost-longest matches,
 * honouring single_word / lstrip / rstrip. */
static int split_added(const llmq_tokenizer *tok, const tk_trie *trie, const piece *p, piece_list *out)
{
    const char *s = p->s;
    size_t n = p->n, start_offset = 0, i = 0;
    while (i < n) {
        size_t mlen = 0;
        int32_t k = tk_trie_longest(trie, s + i, n - i, &mlen);
        if (k < 0) {
            i++;
            continue;
        }
        const tk_added *a = &tok->added[k];
        size_t start = i, stop = i + mlen;
        i = stop;
        if (a->single_word) {
            uint32_t cp;
            int start_ok = start == 0, stop_ok = stop == n;
            if (!start_ok) {
                size_t b = char_before(s, start);
                tk_utf8_decode((const unsigned char *)s + b, start - b, &cp);
                start_ok = !is_word_char(cp);
            }
            if (!stop_ok) {
                tk_utf8_decode((const unsigned char *)s + stop, n - stop, &cp);
                stop_ok = !is_word_char(cp);
            }
            if (!start_ok || !stop_ok) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t b = char_before(s, ns);
                uint32_t cp;
                tk_utf8_decode((const unsigned char *)s + b, ns - b, &cp);
                if (!tk_is_white_space(cp)) break;
                ns = b;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                uint32_t cp;
                size_t l = tk_utf8_decode((const unsigned char *)s + stop, n - stop, &cp);
                if (!tk_is_white_space(cp)) break;
                stop += l;
            }
            i = stop;
        }
        if (start_offset < start && push_piece(out, s + start_offset, start - start_offset, -1,
                                               p->at_start && start_offset == 0))
            return LLMQ_ERR;
        if (push_piece(out, s + start, stop - start, a->id, 0)) return LLMQ_ERR;
        start_offset = stop;
    }
    if (start_offset < n && push_piece(out, s + start_offset, n - start_offset, -1, p->at_start && start_offset == 0))
        return LLMQ_ERR;
    return LLMQ_OK;
}

/* ---------------- normalizers ---------------- */

static int replace_all(call_ctx *cx, const char *s, size_t n, const char *pat, size_t pn, const char *rep,
                       size_t rn, const char **out, size_t *out_n)
{
    if (pn == 0 || n < pn || !memmem(s, n, pat, pn)) {
        *out = s;
        *out_n = n;
        return LLMQ_OK;
    }
    size_t count = 0;
    for (const char *q = s; (q = memmem(q, n - (size_t)(q - s), pat, pn)); q += pn) count++;
    size_t total = n - count * pn + count * rn;
    char *d = tk_arena_alloc(&cx->arena, total + 1);
    if (!d) return LLMQ_ERR;
    size_t o = 0;
    const char *q = s;
    for (const char *m; (m = memmem(q, n - (size_t)(q - s), pat, pn)); q = m + pn) {
        memcpy(d + o, q, (size_t)(m - q));
        o += (size_t)(m - q);
        memcpy(d + o, rep, rn);
        o += rn;
    }
    memcpy(d + o, q, n - (size_t)(q - s));
    o += n - (size_t)(q - s);
    *out = d;
    *out_n = o;
    return LLMQ_OK;
}

static int regex_next(call_ctx *cx, const tk_regex *re, const char *s, size_t n, size_t from, size_t *ms,
                      size_t *me)
{
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, cx->md, cx->mctx);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return llmq_error("tokenizer: regex '%.60s': %s", re->source, (char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(cx->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

static int regex_replace(call_ctx *cx, const tk_regex *re, const char *s, size_t n, const char *rep, size_t rn,
                         const char **out, size_t *out_n)
{
    tk_buf b = {0};
    size_t from = 0, copied = 0;
    int any = 0;
    while (from <= n) {
        size_t ms, me;
        int r = regex_next(cx, re, s, n, from, &ms, &me);
        if (r < 0) goto fail;
        if (!r) break;
        any = 1;
        if (tk_buf_append(&b, s + copied, ms - copied) || tk_buf_append(&b, rep, rn)) goto fail;
        copied = me;
        if (me == ms) {
            if (me >= n) break;
            uint32_t cp;
            from = me + tk_utf8_decode((const unsigned char *)s + me, n - me, &cp);
        } else {
            from = me;
        }
    }
    if (!any) {
        *out = s;
        *out_n = n;
        return LLMQ_OK;
    }
    if (tk_buf_append(&b, s + copied, n - copied)) goto fail;
    char *d = tk_arena_strdup(&cx->arena, b.data, b.len);
    if (!d) goto fail;
    *out = d;
    *out_n = b.len;
    tk_buf_free(&b);
    return LLMQ_OK;
fail:
    tk_buf_free(&b);
    return LLMQ_ERR;
}

static int normalize(const llmq_tokenizer *tok, call_ctx *cx, const char *s, size_t n, const char **out,
                     size_t *out_n)
{
    for (int i = 0; i < tok->n_norms; i++) {
        const tk_normalizer *nm = &tok->norms[i];
        switch (nm->kind) {
        case NORM_PREPEND:
            if (n > 0) {
                char *d = tk_arena_alloc(&cx->arena, n + nm->text_len + 1);
                if (!d) return LLMQ_ERR;
                memcpy(d, nm->text, nm->text_len);
                memcpy(d + nm->text_len, s, n);
                s = d;
                n += nm->text_len;
            }
            break;
        case NORM_REPLACE:
            if (nm->re.code) {
                if (regex_replace(cx, &nm->re, s, n, nm->text, nm->text_len, &s, &n)) return LLMQ_ERR;
            } else if (replace_all(cx, s, n, nm->pattern, nm->pattern_len, nm->text, nm->text_len, &s, &n)) {
                return LLMQ_ERR;
            }
            break;
        case NORM_NFC:
        case NORM_NFD:
        case NORM_NFKC:
        case NORM_NFKD:
        case NORM_LOWERCASE: {
            size_t k = 0;
            while (k < n && (unsigned char)s[k] < 0x80) k++;
            if (k == n && nm->kind != NORM_LOWERCASE) break; /* ASCII is invariant under NF* */
            int opts = UTF8PROC_STABLE;
            if (nm->kind == NORM_NFC) opts |= UTF8PROC_COMPOSE;
            if (nm->kind == NORM_NFD) opts |= UTF8PROC_DECOMPOSE;
            if (nm->kind == NORM_NFKC) opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
            if (nm->kind == NORM_NFKD) opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
            if (nm->kind == NORM_LOWERCASE) { /* per char, like Rust's to_lowercase (no special casing) */
                char *d = tk_arena_alloc(&cx->arena, n * 2 + 4);
                if (!d) return LLMQ_ERR;
                size_t o = 0, j = 0;
                while (j < n) {
                    uint32_t cp;
                    size_t l = tk_utf8_decode((const unsigned char *)s + j, n - j, &cp);
                    cp = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
                    char e[4];
                    size_t el = tk_utf8_encode(cp, e);
                    if (o + el > n * 2 + 4) break;
                    memcpy(d + o, e, el);
                    o += el;
                    j += l;
                }
                s = d;
                n = o;
                break;
            }
            utf8proc_uint8_t *res = NULL;
            utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &res,
                                               (utf8proc_option_t)opts);
            if (rl < 0) return llmq_error("tokenizer: normalization failed: %s", utf8proc_errmsg(rl));
            char *d = tk_arena_strdup(&cx->arena, (const char *)res, (size_t)rl);
            free(res);
            if (!d) return LLMQ_ERR;
            s = d;
            n = (size_t)rl;
            break;
        }
        }
    }
    *out = s;
    *out_n = n;
    return LLMQ_OK;
}

/* ---------------- pre-tokenizers ---------------- */

typedef struct {
    size_t start, end;
    int is_match;
} segment;

typedef struct {
    segment *v;
    size_t n, cap;
} segment_list;

static int push_segment(segment_list *l, size_t start, size_t end, int is_match)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        segment *v = realloc(l->v, cap * sizeof *v);
        if (!v) return llmq_error("tokenizer: out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (segment){start, end, is_match};
    return LLMQ_OK;
}

/* pattern.rs find_matches for a regex: alternating non-match / match segments. */
static int regex_segments(call_ctx *cx, const tk_regex *re, const char *s, size_t n, segment_list *segs)
{
    size_t prev = 0, from = 0;
    while (from < n) {
        size_t ms, me;
        int r = regex_next(cx, re, s, n, from, &ms, &me);
        if (r < 0) return LLMQ_ERR;
        if (!r) break;
        if (me == ms) { /* empty match: skip one char */
            uint32_t cp;
            from = ms + (ms < n ? tk_utf8_decode((const unsigned char *)s + ms, n - ms, &cp) : 1);
            continue;
        }
        if (prev != ms && push_segment(segs, prev, ms, 0)) return LLMQ_ERR;
        if (push_segment(segs, ms, me, 1)) return LLMQ_ERR;
        prev = from = me;
    }
    if (prev != n && push_segment(segs, prev, n, 0)) return LLMQ_ERR;
    return LLMQ_OK;
}

/* Each char for which pred holds is its own match (pattern.rs, Fn(char) -> bool). */
static int char_segments(const char *s, size_t n, int (*pred)(uint32_t), segment_list *segs)
{
    size_t i = 0, prev = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = tk_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (pred(cp)) {
            if (prev != i && push_segment(segs, prev, i, 0)) return LLMQ_ERR;
            if (push_segment(segs, i, i + l, 1)) return LLMQ_ERR;
            prev = i + l;
        }
        i += l;
    }
    if (prev != n && push_segment(segs, prev, n, 0)) return LLMQ_ERR;
    return LLMQ_OK;
}

/* normalizer.rs NormalizedString::split: applies a SplitDelimiterBehavior. */
static int apply_behavior(segment_list *segs, int behavior, int invert)
{
    if (invert)
        for (size_t i = 0; i < segs->n; i++) segs->v[i].is_match = !segs->v[i].is_match;
    size_t o = 0;
    int prev_match = 0;
    switch (behavior) {
    case SPLIT_ISOLATED:
        return LLMQ_OK;
    case SPLIT_REMOVED:
        for (size_t i = 0; i < segs->n; i++)
            if (!segs->v[i].is_match) segs->v[o++] = segs->v[i];
        break;
    case SPLIT_MERGED_PREV:
        for (size_t i = 0; i < segs->n; i++) {
            segment sg = segs->v[i];
            if (sg.is_match && !prev_match && o > 0) segs->v[o - 1].end = sg.end;
            else segs->v[o++] = sg;
            prev_match = sg.is_match;
        }
        break;
    case SPLIT_MERGED_NEXT: {
        /* walk backwards, then restore order */
        size_t n = segs->n;
        segment *tmp = malloc((n ? n : 1) * sizeof *tmp);
        if (!tmp) return llmq_error("tokenizer: out of memory");
        size_t t = 0;
        for (size_t k = n; k-- > 0;) {
            segment sg = segs->v[k];
            if (sg.is_match && !prev_match && t > 0) tmp[t - 1].start = sg.start;
            else tmp[t++] = sg;
            prev_match = sg.is_match;
        }
        for (size_t k = 0; k < t; k++) segs->v[k] = tmp[t - 1 - k];
        free(tmp);
        o = t;
        break;
    }
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < segs->n; i++) {
            segment sg = segs->v[i];
            if (sg.is_match == prev_match && o > 0) segs->v[o - 1].end = sg.end;
            else segs->v[o++] = sg;
            prev_match = sg.is_match;
        }
        break;
    }
    segs->n = o;
    return LLMQ_OK;
}

static int emit_segments(const piece *p, const segment_list *segs, piece_list *out)
{
    for (size_t i = 0; i < segs->n; i++)
        if (push_piece(out, p->s + segs->v[i].start, segs->v[i].end - segs->v[i].start, -1,
                       p->at_start && segs->v[i].start == 0))
            return LLMQ_ERR;
    return LLMQ_OK;
}

static int pretokenize_piece(const tk_pretok *pt, call_ctx *cx, const tk_regex *gpt2, piece p, segment_list *segs,
                             piece_list *out)
{
    segs->n = 0;
    switch (pt->kind) {
    case PRE_SPLIT:
        if (regex_segments(cx, &pt->re, p.s, p.n, segs) || apply_behavior(segs, pt->behavior, pt->invert))
            return LLMQ_ERR;
        return emit_segments(&p, segs, out);
    case PRE_BYTELEVEL:
        if (pt->add_prefix_space && (p.n == 0 || p.s[0] != ' ')) {
            char *d = tk_arena_alloc(&cx->arena, p.n + 1);
            if (!d) return LLMQ_ERR;
            d[0] = ' ';
            memcpy(d + 1, p.s, p.n);
            p.s = d;
            p.n++;
        }
        if (!pt->use_regex) return push_piece(out, p.s, p.n, -1, p.at_start);
        if (regex_segments(cx, gpt2, p.s, p.n, segs)) return LLMQ_ERR;
        return emit_segments(&p, segs, out);
    case PRE_METASPACE: {
        const char *s;
        size_t n;
        if (replace_all(cx, p.s, p.n, " ", 1, pt->repl, pt->repl_len, &s, &n)) return LLMQ_ERR;
        int starts = n >= pt->repl_len && memcmp(s, pt->repl, pt->repl_len) == 0;
        if (!starts && (pt->prepend_scheme == PREPEND_ALWAYS || (pt->prepend_scheme == PREPEND_FIRST && p.at_start))) {
            char *d = tk_arena_alloc(&cx->arena, n + pt->repl_len + 1);
            if (!d) return LLMQ_ERR;
            memcpy(d, pt->repl, pt->repl_len);
            memcpy(d + pt->repl_len, s, n);
            s = d;
            n += pt->repl_len;
        }
        piece q = {s, n, -1, p.at_start};
        if (!pt->split) return push_piece(out, s, n, -1, p.at_start);
        /* split on the replacement char, each piece starting with it (MergedWithNext) */
        size_t prev = 0, i = 0;
        while (i + pt->repl_len <= n) {
            if (memcmp(s + i, pt->repl, pt->repl_len) == 0) {
                if (prev != i && push_segment(segs, prev, i, 0)) return LLMQ_ERR;
                if (push_segment(segs, i, i + pt->repl_len, 1)) return LLMQ_ERR;
                i += pt->repl_len;
                prev = i;
            } else {
                i++;
            }
        }
        if (prev != n && push_segment(segs, prev, n, 0)) return LLMQ_ERR;
        if (apply_behavior(segs, SPLIT_MERGED_NEXT, 0)) return LLMQ_ERR;
        return emit_segments(&q, segs, out);
    }
    case PRE_DIGITS:
        if (char_segments(p.s, p.n, tk_is_numeric, segs) ||
            apply_behavior(segs, pt->individual_digits ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, 0))
            return LLMQ_ERR;
        return emit_segments(&p, segs, out);
    }
    return LLMQ_OK;
}

/* ---------------- encode ---------------- */

static tk_regex gpt2_regex;
static int gpt2_regex_state; /* 0 not compiled, 1 ok, -1 failed */

static const tk_regex *get_gpt2_regex(void)
{
    /* compiled once per process; OpenMP critical keeps concurrent first calls safe */
#pragma omp critical(llmq_tokenizer_gpt2_regex)
    {
        if (gpt2_regex_state == 0)
            gpt2_regex_state = tk_regex_compile(&gpt2_regex, TK_REGEX_GPT2, strlen(TK_REGEX_GPT2), 0, "ByteLevel") ? -1 : 1;
    }
    return gpt2_regex_state == 1 ? &gpt2_regex : NULL;
}

int llmq_tokenizer_encode(const llmq_tokenizer *tok, const char *text, size_t len, int add_special, int32_t **ids,
                          size_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    int rc = LLMQ_ERR;
    call_ctx cx = {0};
    piece_list a = {0}, b = {0};
    segment_list segs = {0};
    tk_buf out = {0}, clean = {0};
    tk_word_cache *cache = NULL;
    const tk_regex *gpt2 = NULL;

    for (int i = 0; i < tok->n_pretoks; i++)
        if (tok->pretoks[i].kind == PRE_BYTELEVEL && tok->pretoks[i].use_regex && !(gpt2 = get_gpt2_regex()))
            return LLMQ_ERR;
    if (!text) text = "";
    int valid = tk_utf8_sanitize(text, len, &clean);
    if (valid < 0) goto done;
    if (valid == 0) {
        text = clean.data;
        len = clean.len;
    }
    cx.md = pcre2_match_data_create(4, NULL);
    cx.mctx = pcre2_match_context_create(NULL);
    cx.jit = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    cache = tk_word_cache_new();
    if (!cx.md || !cx.mctx || !cx.jit || !cache) {
        llmq_error("tokenizer: out of memory");
        goto done;
    }
    pcre2_jit_stack_assign(cx.mctx, NULL, cx.jit);

    for (int k = 0; k < tok->n_prefix && add_special; k++)
        if (tk_buf_append(&out, &tok->prefix[k], sizeof(int32_t))) goto done;

    /* 1. added tokens on the raw text */
    piece whole = {text, len, -1, 1};
    if (tok->has_trie_raw) {
        if (split_added(tok, &tok->trie_raw, &whole, &a)) goto done;
    } else if (push_piece(&a, text, len, -1, 1)) {
        goto done;
    }
    /* 2. normalize, then added tokens on the normalized text */
    for (size_t i = 0; i < a.n; i++) {
        piece p = a.v[i];
        if (p.id >= 0) {
            if (push_piece(&b, p.s, p.n, p.id, 0)) goto done;
            continue;
        }
        if (normalize(tok, &cx, p.s, p.n, &p.s, &p.n)) goto done;
        if (tok->has_trie_norm) {
            if (split_added(tok, &tok->trie_norm, &p, &b)) goto done;
        } else if (push_piece(&b, p.s, p.n, -1, p.at_start)) {
            goto done;
        }
    }
    /* 3. pre-tokenizers, in sequence */
    for (int t = 0; t < tok->n_pretoks; t++) {
        a.n = 0;
        for (size_t i = 0; i < b.n; i++) {
            if (b.v[i].id >= 0) {
                if (push_piece(&a, b.v[i].s, b.v[i].n, b.v[i].id, 0)) goto done;
            } else if (pretokenize_piece(&tok->pretoks[t], &cx, gpt2, b.v[i], &segs, &a)) {
                goto done;
            }
        }
        piece_list sw = a;
        a = b;
        b = sw;
    }
    /* 4. the model */
    for (size_t i = 0; i < b.n; i++) {
        if (b.v[i].id >= 0) {
            if (tk_buf_append(&out, &b.v[i].id, sizeof(int32_t))) goto done;
        } else if (tk_bpe_encode_word(tok, b.v[i].s, b.v[i].n, cache, &out)) {
            goto done;
        }
    }
    /* 5. post-processor */
    for (int k = 0; k < tok->n_suffix && add_special; k++)
        if (tk_buf_append(&out, &tok->suffix[k], sizeof(int32_t))) goto done;

    *n_ids = out.len / sizeof(int32_t);
    *ids = (int32_t *)out.data;
    out.data = NULL;
    rc = LLMQ_OK;
done:
    tk_buf_free(&out);
    tk_buf_free(&clean);
    free(a.v);
    free(b.v);
    free(segs.v);
    tk_word_cache_free(cache);
    if (cx.md) pcre2_match_data_free(cx.md);
    if (cx.mctx) pcre2_match_context_free(cx.mctx);
    if (cx.jit) pcre2_jit_stack_free(cx.jit);
    tk_arena_free(&cx.arena);
    return rc;
}

/* ---------------- decode ---------------- */

typedef struct {
    tk_buf *v;
    size_t n, cap;
} str_list;

static int str_push(str_list *l, const char *s, size_t n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        tk_buf *v = realloc(l->v, cap * sizeof *v);
        if (!v) return llmq_error("tokenizer: out of memory");
        l->v = v;
        l->cap = cap;
    }
    tk_buf b = {0};
    if (tk_buf_append(&b, s, n)) return LLMQ_ERR;
    l->v[l->n++] = b;
    return LLMQ_OK;
}

static void str_list_free(str_list *l)
{
    for (size_t i = 0; i < l->n; i++) tk_buf_free(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int byte_fallback_value(const tk_buf *t)
{
    if (t->len != 6 || memcmp(t->data, "<0x", 3) != 0 || t->data[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = t->data[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* flushes pending <0xXX> bytes: one string if valid UTF-8, else one U+FFFD per byte
 * (decoders/byte_fallback.rs) */
static int flush_bytes(str_list *out, tk_buf *bytes)
{
    if (!bytes->len) return LLMQ_OK;
    tk_buf tmp = {0};
    int valid = tk_utf8_sanitize(bytes->data, bytes->len, &tmp);
    tk_buf_free(&tmp);
    if (valid < 0) return LLMQ_ERR;
    if (valid) {
        if (str_push(out, bytes->data, bytes->len)) return LLMQ_ERR;
    } else {
        for (size_t i = 0; i < bytes->len; i++)
            if (str_push(out, "\xEF\xBF\xBD", 3)) return LLMQ_ERR;
    }
    bytes->len = 0;
    return LLMQ_OK;
}

static int run_decoder(const tk_decoder *d, str_list *l)
{
    str_list out = {0};
    tk_buf acc = {0};
    int rc = LLMQ_ERR;
    switch (d->kind) {
    case DEC_REPLACE:
        for (size_t i = 0; i < l->n; i++) {
            tk_buf *t = &l->v[i];
            tk_buf r = {0};
            size_t j = 0;
            if (tk_buf_reserve(&r, t->len)) goto done;
            while (j < t->len) {
                if (d->pattern_len && j + d->pattern_len <= t->len && memcmp(t->data + j, d->pattern, d->pattern_len) == 0) {
                    if (tk_buf_append(&r, d->content, d->content_len)) { tk_buf_free(&r); goto done; }
                    j += d->pattern_len;
                } else {
                    if (tk_buf_append(&r, t->data + j, 1)) { tk_buf_free(&r); goto done; }
                    j++;
                }
            }
            tk_buf_free(t);
            *t = r;
        }
        return LLMQ_OK;
    case DEC_BYTEFALLBACK:
        for (size_t i = 0; i < l->n; i++) {
            int v = byte_fallback_value(&l->v[i]);
            if (v >= 0) {
                unsigned char c = (unsigned char)v;
                if (tk_buf_append(&acc, &c, 1)) goto done;
            } else {
                if (flush_bytes(&out, &acc) || str_push(&out, l->v[i].data, l->v[i].len)) goto done;
            }
        }
        if (flush_bytes(&out, &acc)) goto done;
        break;
    case DEC_FUSE:
        for (size_t i = 0; i < l->n; i++)
            if (tk_buf_append(&acc, l->v[i].data, l->v[i].len)) goto done;
        if (str_push(&out, acc.data ? acc.data : "", acc.len)) goto done;
        break;
    case DEC_STRIP:
        for (size_t i = 0; i < l->n; i++) {
            tk_buf *t = &l->v[i];
            char e[4];
            size_t el = tk_utf8_encode(d->strip_char, e);
            size_t a = 0, z = t->len;
            for (int k = 0; k < d->start && a + el <= z && memcmp(t->data + a, e, el) == 0; k++) a += el;
            for (int k = 0; k < d->stop && z >= a + el && memcmp(t->data + z - el, e, el) == 0; k++) z -= el;
            if (str_push(&out, t->data + a, z - a)) goto done;
        }
        break;
    case DEC_METASPACE:
        for (size_t i = 0; i < l->n; i++) {
            tk_buf *t = &l->v[i];
            acc.len = 0;
            size_t j = 0;
            while (j < t->len) {
                if (j + d->repl_len <= t->len && memcmp(t->data + j, d->repl, d->repl_len) == 0) {
                    if (!(i == 0 && d->prepend) && tk_buf_append(&acc, " ", 1)) goto done;
                    j += d->repl_len;
                } else {
                    if (tk_buf_append(&acc, t->data + j, 1)) goto done;
                    j++;
                }
            }
            if (str_push(&out, acc.data ? acc.data : "", acc.len)) goto done;
        }
        break;
    case DEC_BYTELEVEL: {
        tk_buf bytes = {0};
        for (size_t i = 0; i < l->n; i++) {
            int ok = tk_bytelevel_decode(l->v[i].data, l->v[i].len, &bytes);
            if (ok < 0) { tk_buf_free(&bytes); goto done; }
            if (ok ? tk_buf_append(&acc, bytes.data, bytes.len) : tk_buf_append(&acc, l->v[i].data, l->v[i].len)) {
                tk_buf_free(&bytes);
                goto done;
            }
        }
        tk_buf_free(&bytes);
        tk_buf lossy = {0};
        int valid = tk_utf8_sanitize(acc.data ? acc.data : "", acc.len, &lossy);
        if (valid < 0) goto done;
        int pr = valid ? str_push(&out, acc.data ? acc.data : "", acc.len) : str_push(&out, lossy.data, lossy.len);
        tk_buf_free(&lossy);
        if (pr) goto done;
        break;
    }
    }
    str_list_free(l);
    *l = out;
    memset(&out, 0, sizeof out);
    rc = LLMQ_OK;
done:
    tk_buf_free(&acc);
    str_list_free(&out);
    return rc;
}

char *llmq_tokenizer_decode(const llmq_tokenizer *tok, const int32_t *ids, size_t n, size_t *len)
{
    str_list l = {0};
    tk_buf res = {0};
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_vocab) {
            llmq_error("tokenizer: decode: id %d at position %zu is outside the vocabulary (0..%d)", (int)id, i,
                       tok->n_vocab - 1);
            goto fail;
        }
        if (!tok->tok_text[id]) continue; /* HF skips ids with no token */
        if (str_push(&l, tok->tok_text[id], tok->tok_len[id])) goto fail;
    }
    if (tok->has_decoder) {
        for (int d = 0; d < tok->n_decs; d++)
            if (run_decoder(&tok->decs[d], &l)) goto fail;
        for (size_t i = 0; i < l.n; i++)
            if (tk_buf_append(&res, l.v[i].data, l.v[i].len)) goto fail;
    } else {
        for (size_t i = 0; i < l.n; i++)
            if ((i && tk_buf_append(&res, " ", 1)) || tk_buf_append(&res, l.v[i].data, l.v[i].len)) goto fail;
    }
    if (tk_buf_reserve(&res, 0)) goto fail;
    res.data[res.len] = 0;
    str_list_free(&l);
    if (len) *len = res.len;
    return res.data;
fail:
    str_list_free(&l);
    tk_buf_free(&res);
    return NULL;
}
