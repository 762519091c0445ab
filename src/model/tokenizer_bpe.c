/* The BPE model: one pre-token (word) -> ids. Follows HF tokenizers
 * (tokenizers/src/models/bpe/model.rs merge_word, word.rs merge_all): the word
 * starts as one symbol per char (per byte for byte-level models), chars missing
 * from the vocab become <0xXX> byte tokens (byte_fallback) or the unk token (fused
 * when fuse_unk) or are dropped; then merges are applied lowest rank first, ties
 * leftmost first, with a binary min-heap over adjacent pairs and a linked list of
 * symbols, so a word costs O(n log n). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmq/error.h"
#include "tokenizer_internal.h"

#define CACHE_MAX_WORD 256 /* longer words are not cached (HF: MAX_LENGTH 256) */

typedef struct {
    uint64_t key; /* rank << 32 | position: the heap orders by rank, then position */
    int32_t new_id;
} heap_item;

struct tk_word_cache {
    tk_strmap map;      /* word -> (offset, count) into ids */
    tk_buf ids;         /* int32 ids of cached words */
    int32_t *sym_id, *sym_prev, *sym_next;
    size_t sym_cap;
    heap_item *heap;
    size_t heap_cap;
};

tk_word_cache *tk_word_cache_new(void)
{
    tk_word_cache *c = calloc(1, sizeof *c);
    if (!c || tk_strmap_init(&c->map, 1024)) {
        free(c);
        llmq_error("tokenizer: out of memory");
        return NULL;
    }
    return c;
}

void tk_word_cache_free(tk_word_cache *c)
{
    if (!c) return;
    tk_strmap_free(&c->map);
    tk_buf_free(&c->ids);
    free(c->sym_id);
    free(c->sym_prev);
    free(c->sym_next);
    free(c->heap);
    free(c);
}

static int reserve_symbols(tk_word_cache *c, size_t n)
{
    if (n <= c->sym_cap) return LLMQ_OK;
    size_t cap = c->sym_cap ? c->sym_cap : 64;
    while (cap < n) cap *= 2;
    int32_t *a = realloc(c->sym_id, cap * sizeof *a);
    if (a) c->sym_id = a;
    int32_t *b = realloc(c->sym_prev, cap * sizeof *b);
    if (b) c->sym_prev = b;
    int32_t *d = realloc(c->sym_next, cap * sizeof *d);
    if (d) c->sym_next = d;
    heap_item *h = realloc(c->heap, cap * 2 * sizeof *h);
    if (h) c->heap = h;
    if (!a || !b || !d || !h) return llmq_error("tokenizer: out of memory");
    c->sym_cap = cap;
    c->heap_cap = cap * 2;
    return LLMQ_OK;
}

static void heap_push(heap_item *h, size_t *n, heap_item it)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent].key <= it.key) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = it;
}

static heap_item heap_pop(heap_item *h, size_t *n)
{
    heap_item top = h[0];
    heap_item last = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= m) break;
        size_t r = l + 1, s = (r < m && h[r].key < h[l].key) ? r : l;
        if (h[s].key >= last.key) break;
        h[i] = h[s];
        i = s;
    }
    if (m) h[i] = last;
    return top;
}

/* Pushes the merge of symbols at pos and next(pos) if the pair has one. */
static void push_pair(const llmq_tokenizer *tok, tk_word_cache *c, size_t *hn, int32_t pos)
{
    int32_t next = c->sym_next[pos];
    if (next < 0) return;
    long e = tk_pairmap_find(&tok->merges, c->sym_id[pos], c->sym_id[next]);
    if (e < 0) return;
    heap_item it = {((uint64_t)(uint32_t)tok->merges.rank[e] << 32) | (uint32_t)pos, tok->merges.new_id[e]};
    heap_push(c->heap, hn, it);
}

static int merge_word(const llmq_tokenizer *tok, const char *s, size_t n, tk_word_cache *c, tk_buf *out)
{
    if (reserve_symbols(c, n + 1)) return LLMQ_ERR;
    int32_t *id = c->sym_id;
    size_t ns = 0;
    int32_t unk = -1; /* pending unk symbol: HF adds it when the next known char comes */
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t clen;
        int32_t t;
        if (tok->byte_level) {
            clen = 1;
            t = tok->byte_token[u[i]];
        } else if (u[i] < 0x80) {
            clen = 1;
            t = tok->ascii_token[u[i]];
        } else {
            uint32_t cp;
            clen = tk_utf8_decode(u + i, n - i, &cp);
            const tk_strmap_slot *sl = tk_strmap_get(&tok->vocab, s + i, clen);
            t = sl ? sl->value : -1;
        }
        if (t >= 0) {
            if (unk >= 0) {
                id[ns++] = unk;
                unk = -1;
            }
            id[ns++] = t;
        } else {
            int fell_back = 0;
            if (tok->byte_fallback) {
                fell_back = 1;
                for (size_t k = 0; k < clen; k++)
                    if (tok->fallback_byte[u[i + k]] < 0) fell_back = 0;
                if (fell_back)
                    for (size_t k = 0; k < clen; k++) id[ns++] = tok->fallback_byte[u[i + k]];
            }
            if (!fell_back && tok->model_unk_id >= 0) {
                if (unk >= 0 && !tok->fuse_unk) id[ns++] = unk;
                unk = tok->model_unk_id;
            }
        }
        i += clen;
    }
    if (unk >= 0) id[ns++] = unk;
    for (size_t k = 0; k < ns; k++) {
        c->sym_prev[k] = (int32_t)k - 1;
        c->sym_next[k] = k + 1 < ns ? (int32_t)k + 1 : -1;
    }
    size_t hn = 0;
    for (size_t k = 0; k + 1 < ns; k++) push_pair(tok, c, &hn, (int32_t)k);
    while (hn) {
        heap_item top = heap_pop(c->heap, &hn);
        int32_t pos = (int32_t)(uint32_t)top.key;
        if (id[pos] < 0) continue; /* symbol merged away */
        int32_t next = c->sym_next[pos];
        if (next < 0) continue;
        /* a stale entry: the pair at pos changed since it was pushed */
        long e = tk_pairmap_find(&tok->merges, id[pos], id[next]);
        if (e < 0 || tok->merges.new_id[e] != top.new_id) continue;
        id[pos] = top.new_id;
        id[next] = -1;
        int32_t after = c->sym_next[next];
        c->sym_next[pos] = after;
        if (after >= 0) c->sym_prev[after] = pos;
        if (c->sym_prev[pos] >= 0) push_pair(tok, c, &hn, c->sym_prev[pos]);
        push_pair(tok, c, &hn, pos);
    }
    if (tk_buf_reserve(out, ns * sizeof(int32_t))) return LLMQ_ERR;
    for (int32_t k = ns ? 0 : -1; k >= 0; k = c->sym_next[k]) {
        memcpy(out->data + out->len, &id[k], sizeof(int32_t));
        out->len += sizeof(int32_t);
    }
    return LLMQ_OK;
}

static int encode_chunk(const llmq_tokenizer *tok, const char *s, size_t n, tk_word_cache *cache, tk_buf *out);

#define SPACE_MARK "\xe2\x96\x81"

/* Is a cut right before the U+2581 at s[p] safe (see spm_split)? */
static int spm_cut_ok(const llmq_tokenizer *tok, const char *s, size_t p)
{
    size_t b = p - 1;
    while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
    size_t cl = p - b;
    if (cl == 3 && !memcmp(s + b, SPACE_MARK, 3)) return 0;
    if (!tk_strmap_get(&tok->vocab, s + b, cl)) return 0; /* byte fallback / unk: keep it whole */
    return !tk_strmap_get(&tok->spm_unsafe, s + b, cl);
}

int tk_bpe_encode_word(const llmq_tokenizer *tok, const char *s, size_t n, tk_word_cache *cache, tk_buf *out)
{
    if (!tok->spm_split || n <= CACHE_MAX_WORD / 4) return encode_chunk(tok, s, n, cache, out);
    size_t start = 0;
    for (const char *m = s + 1; (m = memmem(m, n - (size_t)(m - s), SPACE_MARK, 3)); m += 3) {
        size_t p = (size_t)(m - s);
        if (!spm_cut_ok(tok, s, p)) continue;
        if (encode_chunk(tok, s + start, p - start, cache, out)) return LLMQ_ERR;
        start = p;
    }
    return encode_chunk(tok, s + start, n - start, cache, out);
}

static int encode_chunk(const llmq_tokenizer *tok, const char *s, size_t n, tk_word_cache *cache, tk_buf *out)
{
    if (n == 0) return LLMQ_OK;
    if (tok->ignore_merges) { /* Llama-3: a word that is a whole token is kept */
        const tk_strmap_slot *sl = tk_strmap_get(&tok->vocab, s, n);
        if (sl) return tk_buf_append(out, &sl->value, sizeof(int32_t));
    }
    if (n > CACHE_MAX_WORD) return merge_word(tok, s, n, cache, out);
    const tk_strmap_slot *hit = tk_strmap_get(&cache->map, s, n);
    if (hit)
        return tk_buf_append(out, cache->ids.data + (size_t)hit->value * sizeof(int32_t),
                             (size_t)hit->value2 * sizeof(int32_t));
    size_t before = out->len;
    if (merge_word(tok, s, n, cache, out)) return LLMQ_ERR;
    size_t count = (out->len - before) / sizeof(int32_t);
    size_t offset = cache->ids.len / sizeof(int32_t);
    if (offset > INT32_MAX - count) return LLMQ_OK; /* cache full: just don't cache */
    if (tk_buf_append(&cache->ids, out->data + before, count * sizeof(int32_t))) return LLMQ_ERR;
    return tk_strmap_put(&cache->map, s, n, (int32_t)offset, (int32_t)count);
}

int tk_bpe_set_merges(llmq_tokenizer *tok, const int32_t *pairs, size_t n, const char *name)
{
    if (n > INT32_MAX / 2) return llmq_error("%s: model.merges: too many merges (%zu)", name, n);
    if (tk_pairmap_init(&tok->merges, n ? n : 1)) return LLMQ_ERR;
    tok->merge_pairs = malloc((n ? n : 1) * 2 * sizeof(int32_t));
    if (!tok->merge_pairs) return llmq_error("tokenizer: out of memory");
    tk_buf joined = {0};
    for (size_t r = 0; r < n; r++) {
        int32_t a = pairs[2 * r], b = pairs[2 * r + 1];
        if (a < 0 || b < 0 || a >= tok->n_vocab || b >= tok->n_vocab || !tok->model_key[a] || !tok->model_key[b]) {
            tk_buf_free(&joined);
            return llmq_error("%s: model.merges[%zu]: names a token that is not in the vocab", name, r);
        }
        /* the merged token is the concatenation of the two parts */
        joined.len = 0;
        if (tk_buf_append(&joined, tok->model_key[a], tok->model_key_len[a]) ||
            tk_buf_append(&joined, tok->model_key[b], tok->model_key_len[b])) {
            tk_buf_free(&joined);
            return LLMQ_ERR;
        }
        const tk_strmap_slot *sl = tk_strmap_get(&tok->vocab, joined.data, joined.len);
        if (!sl) {
            int shown = joined.len > 60 ? 60 : (int)joined.len;
            llmq_error("%s: model.merges[%zu]: the merged token '%.*s' is not in the vocab", name, r, shown,
                       joined.data);
            tk_buf_free(&joined);
            return LLMQ_ERR;
        }
        if (tk_pairmap_put(&tok->merges, a, b, (int32_t)r, sl->value)) {
            tk_buf_free(&joined);
            return LLMQ_ERR;
        }
        tok->merge_pairs[2 * r] = a;
        tok->merge_pairs[2 * r + 1] = b;
    }
    tk_buf_free(&joined);
    tok->n_merges = (int32_t)n;
    return LLMQ_OK;
}

int tk_bpe_finish(llmq_tokenizer *tok)
{
    tok->spm_split = 0;
    if (!tok->byte_level && tk_strmap_get(&tok->vocab, SPACE_MARK, 3)) {
        if (tk_strmap_init(&tok->spm_unsafe, 16)) return LLMQ_ERR;
        for (int32_t id = 0; id < tok->n_vocab; id++) {
            const char *k = tok->model_key[id];
            size_t kl = tok->model_key_len[id];
            if (!k || kl < 4) continue;
            for (const char *m = k + 1; (m = memmem(m, kl - (size_t)(m - k), SPACE_MARK, 3)); m += 3) {
                size_t b = (size_t)(m - k) - 1;
                while (b > 0 && ((unsigned char)k[b] & 0xC0) == 0x80) b--;
                size_t cl = (size_t)(m - k) - b;
                if (cl == 3 && !memcmp(k + b, SPACE_MARK, 3)) continue;
                if (tk_strmap_put(&tok->spm_unsafe, k + b, cl, 1, 0)) return LLMQ_ERR;
            }
        }
        tok->spm_split = 1;
    }
    char c[2] = {0};
    for (int b = 0; b < 256; b++) {
        c[0] = (char)b;
        const tk_strmap_slot *sl = tk_strmap_get(&tok->vocab, c, 1);
        tok->byte_token[b] = sl ? sl->value : -1;
        if (b < 128) tok->ascii_token[b] = tok->byte_token[b];
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        sl = tk_strmap_get(&tok->vocab, name, 6);
        tok->fallback_byte[b] = sl ? sl->value : -1;
    }
    return LLMQ_OK;
}
