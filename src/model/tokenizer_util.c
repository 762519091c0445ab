/* Building blocks of the tokenizer: buffers, an arena, hash maps, UTF-8 helpers,
 * the GPT-2 byte<->unicode table, PCRE2 regexes and the added-token trie. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "llmq/error.h"

/* ---------------- buffers ---------------- */

int tk_buf_reserve(tk_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return LLMQ_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return llmq_error("tokenizer: out of memory (%zu bytes)", cap);
    b->data = p;
    b->cap = cap;
    return LLMQ_OK;
}

int tk_buf_append(tk_buf *b, const void *p, size_t n)
{
    if (tk_buf_reserve(b, n)) return LLMQ_ERR;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return LLMQ_OK;
}

void tk_buf_free(tk_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---------------- arena ---------------- */

struct tk_arena_block {
    tk_arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *tk_arena_alloc(tk_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    tk_arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > (1u << 20) ? n : (1u << 20);
        b = malloc(sizeof *b + cap);
        if (!b) {
            llmq_error("tokenizer: out of memory");
            return NULL;
        }
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

char *tk_arena_strdup(tk_arena *a, const char *s, size_t n)
{
    char *p = tk_arena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void tk_arena_free(tk_arena *a)
{
    tk_arena_block *b = a->head;
    while (b) {
        tk_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---------------- string map ---------------- */

uint64_t tk_hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        h = (h ^ k) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t k = 0;
    memcpy(&k, s, n);
    h = (h ^ k) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

int tk_strmap_init(tk_strmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2) cap *= 2;
    m->slots = calloc(cap, sizeof *m->slots);
    if (!m->slots) return llmq_error("tokenizer: out of memory");
    m->mask = cap - 1;
    m->count = 0;
    return LLMQ_OK;
}

void tk_strmap_free(tk_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = m->count = 0;
}

static int strmap_grow(tk_strmap *m)
{
    tk_strmap bigger;
    size_t cap = (m->mask + 1) * 2;
    bigger.slots = calloc(cap, sizeof *bigger.slots);
    if (!bigger.slots) return llmq_error("tokenizer: out of memory");
    bigger.mask = cap - 1;
    bigger.count = m->count;
    for (size_t i = 0; i <= m->mask; i++) {
        tk_strmap_slot *s = &m->slots[i];
        if (!s->key) continue;
        size_t j = s->hash & bigger.mask;
        while (bigger.slots[j].key) j = (j + 1) & bigger.mask;
        bigger.slots[j] = *s;
    }
    free(m->slots);
    *m = bigger;
    return LLMQ_OK;
}

int tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t value, int32_t value2)
{
    if ((m->count + 1) * 2 > m->mask + 1 && strmap_grow(m)) return LLMQ_ERR;
    uint32_t h = (uint32_t)tk_hash_bytes(key, len);
    size_t i = h & m->mask;
    for (;;) {
        tk_strmap_slot *s = &m->slots[i];
        if (!s->key) {
            s->key = key ? key : "";
            s->len = (uint32_t)len;
            s->hash = h;
            s->value = value;
            s->value2 = value2;
            m->count++;
            return LLMQ_OK;
        }
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) {
            s->value = value;
            s->value2 = value2;
            return LLMQ_OK;
        }
        i = (i + 1) & m->mask;
    }
}

const tk_strmap_slot *tk_strmap_get(const tk_strmap *m, const char *key, size_t len)
{
    if (!m->slots) return NULL;
    uint32_t h = (uint32_t)tk_hash_bytes(key, len);
    size_t i = h & m->mask;
    for (;;) {
        const tk_strmap_slot *s = &m->slots[i];
        if (!s->key) return NULL;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) return s;
        i = (i + 1) & m->mask;
    }
}

/* ---------------- pair map ---------------- */

int tk_pairmap_init(tk_pairmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2) cap *= 2;
    m->keys = malloc(cap * sizeof *m->keys);
    m->rank = malloc(cap * sizeof *m->rank);
    m->new_id = malloc(cap * sizeof *m->new_id);
    if (!m->keys || !m->rank || !m->new_id) {
        tk_pairmap_free(m);
        return llmq_error("tokenizer: out of memory");
    }
    memset(m->keys, 0xff, cap * sizeof *m->keys);
    m->mask = cap - 1;
    m->count = 0;
    return LLMQ_OK;
}

void tk_pairmap_free(tk_pairmap *m)
{
    free(m->keys);
    free(m->rank);
    free(m->new_id);
    m->keys = NULL;
    m->rank = m->new_id = NULL;
}

/* Capacity is fixed at init (expected = number of merges), so no growth. A later
 * duplicate pair overwrites the earlier one, as HF's HashMap collect does. */
int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id)
{
    if ((m->count + 1) * 2 > m->mask + 1) return llmq_error("tokenizer: merge table full");
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 20) & m->mask;
    while (m->keys[i] != UINT64_MAX && m->keys[i] != key) i = (i + 1) & m->mask;
    if (m->keys[i] == UINT64_MAX) m->count++;
    m->keys[i] = key;
    m->rank[i] = rank;
    m->new_id[i] = new_id;
    return LLMQ_OK;
}

/* ---------------- UTF-8 ---------------- */

/* The length a lead byte announces (0: not a lead byte, or an ASCII byte)
 * and the range its second byte must fall in (Unicode Table 3-7, which
 * excludes overlongs, surrogates and code points past U+10FFFF). */
static size_t utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80, *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c == 0xE0) { *lo = 0xA0; return 3; }
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return 3;
    if (c == 0xED) { *hi = 0x9F; return 3; }
    if (c == 0xF0) { *lo = 0x90; return 4; }
    if (c >= 0xF1 && c <= 0xF3) return 4;
    if (c == 0xF4) { *hi = 0x8F; return 4; }
    return 0;
}

size_t tk_utf8_valid_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) return 1;
    unsigned char lo, hi;
    const size_t len = utf8_lead(s[0], &lo, &hi);
    if (len == 0 || n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

size_t tk_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80 || n < 2) { *cp = c; return 1; }
    if (c < 0xE0) { *cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
    if (c < 0xF0 || n < 4) {
        if (n < 3) { *cp = c; return 1; }
        *cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
          (s[3] & 0x3F);
    return 4;
}

size_t tk_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the maximal prefix of a valid sequence at s (>= 1): the bytes one
 * U+FFFD replaces (Unicode "substitution of maximal subparts"). */
static size_t utf8_invalid_span(const unsigned char *s, size_t n)
{
    unsigned char lo, hi;
    const size_t len = utf8_lead(s[0], &lo, &hi);
    if (len == 0) return 1;
    size_t i = 1;
    if (i < n && i < len && s[i] >= lo && s[i] <= hi) {
        i++;
        while (i < n && i < len && (s[i] & 0xC0) == 0x80) i++;
    }
    return i;
}

int tk_utf8_sanitize(const char *s, size_t n, tk_buf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        size_t l = tk_utf8_valid_len(u + i, n - i);
        if (!l) break;
        i += l;
    }
    if (i == n) return 1;
    out->len = 0;
    if (tk_buf_append(out, s, i)) return -1;
    while (i < n) {
        size_t l = u[i] < 0x80 ? 1 : tk_utf8_valid_len(u + i, n - i);
        if (l) {
            if (tk_buf_append(out, s + i, l)) return -1;
            i += l;
        } else {
            if (tk_buf_append(out, "\xEF\xBF\xBD", 3)) return -1;
            i += utf8_invalid_span(u + i, n - i);
        }
    }
    return 0;
}

int tk_is_white_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

int tk_is_numeric(uint32_t cp)
{
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

/* ---------------- GPT-2 byte-level table ---------------- */

/* Bytes that are printable Latin-1 map to themselves; the other 68 map to
 * U+0100.. in byte order (bytes_to_unicode in openai/gpt-2 src/encoder.py). */
static int byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tk_byte_to_cp(unsigned char b)
{
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++)
        if (!byte_is_printable(i)) n++;
    return 256 + n;
}

int tk_cp_to_byte(uint32_t cp)
{
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t n = cp - 256;
    for (unsigned b = 0; b < 256; b++)
        if (!byte_is_printable(b) && n-- == 0) return (int)b;
    return -1;
}

int tk_bytelevel_decode(const char *s, size_t n, tk_buf *out)
{
    static int16_t table[324];
    static int ready;
    if (!ready) { /* idempotent, so a race only repeats the same stores */
        for (uint32_t cp = 0; cp < 324; cp++) table[cp] = (int16_t)tk_cp_to_byte(cp);
        ready = 1;
    }
    out->len = 0;
    if (tk_buf_reserve(out, n)) return -1;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = tk_utf8_decode(u + i, n - i, &cp);
        if (cp >= 324 || table[cp] < 0) return 0;
        out->data[out->len++] = (char)table[cp];
        i += l;
    }
    out->data[out->len] = 0;
    return 1;
}

/* ---------------- regexes ---------------- */

/* Unicode White_Space, as a class body. */
static const char WS_CLASS[] = "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
                               "\\x{202F}\\x{205F}\\x{3000}";

static int translate_pattern(const char *p, size_t n, tk_buf *out)
{
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[i + 1];
            i++;
            if (e == 's') {
                if (in_class) {
                    if (tk_buf_append(out, WS_CLASS, sizeof WS_CLASS - 1)) return LLMQ_ERR;
                } else {
                    if (tk_buf_append(out, "[", 1) || tk_buf_append(out, WS_CLASS, sizeof WS_CLASS - 1) ||
                        tk_buf_append(out, "]", 1))
                        return LLMQ_ERR;
                }
                continue;
            }
            if (e == 'S' && !in_class) {
                if (tk_buf_append(out, "[^", 2) || tk_buf_append(out, WS_CLASS, sizeof WS_CLASS - 1) ||
                    tk_buf_append(out, "]", 1))
                    return LLMQ_ERR;
                continue;
            }
            char esc[2] = {'\\', e};
            if (tk_buf_append(out, esc, 2)) return LLMQ_ERR;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            if (tk_buf_append(out, "[", 1)) return LLMQ_ERR;
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < n && p[i + 1] == '^') {
                if (tk_buf_append(out, "^", 1)) return LLMQ_ERR;
                i++;
            }
            if (i + 1 < n && p[i + 1] == ']') {
                if (tk_buf_append(out, "\\]", 2)) return LLMQ_ERR;
                i++;
            }
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        if (tk_buf_append(out, &c, 1)) return LLMQ_ERR;
    }
    return LLMQ_OK;
}

int tk_regex_compile(tk_regex *re, const char *pattern, size_t len, int literal, const char *what)
{
    memset(re, 0, sizeof *re);
    tk_buf src = {0};
    if (literal) {
        if (tk_buf_append(&src, pattern, len)) return LLMQ_ERR;
    } else if (translate_pattern(pattern, len, &src)) {
        tk_buf_free(&src);
        return LLMQ_ERR;
    }
    int errcode;
    PCRE2_SIZE erroff;
    uint32_t opts = PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    re->code = pcre2_compile((PCRE2_SPTR)(src.data ? src.data : ""), src.len, opts, &errcode, &erroff, NULL);
    tk_buf_free(&src);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        return llmq_error("%s: regex '%.*s': %s", what, (int)(len > 200 ? 200 : len), pattern, (char *)msg);
    }
    (void)pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    re->source = malloc(len + 1);
    if (!re->source) {
        tk_regex_free(re);
        return llmq_error("tokenizer: out of memory");
    }
    memcpy(re->source, pattern, len);
    re->source[len] = 0;
    return LLMQ_OK;
}

void tk_regex_free(tk_regex *re)
{
    if (re->code) pcre2_code_free(re->code);
    free(re->source);
    memset(re, 0, sizeof *re);
}

/* ---------------- trie ---------------- */

int tk_trie_init(tk_trie *t)
{
    memset(t, 0, sizeof *t);
    t->cap_nodes = 64;
    t->node_token = malloc(t->cap_nodes * sizeof *t->node_token);
    t->edge_mask = 127;
    t->edge_keys = calloc(t->edge_mask + 1, sizeof *t->edge_keys);
    t->edge_child = malloc((t->edge_mask + 1) * sizeof *t->edge_child);
    if (!t->node_token || !t->edge_keys || !t->edge_child) {
        tk_trie_free(t);
        return llmq_error("tokenizer: out of memory");
    }
    t->n_nodes = 1;
    t->node_token[0] = -1;
    return LLMQ_OK;
}

static size_t edge_slot(const tk_trie *t, uint64_t key)
{
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 24) & t->edge_mask;
    while (t->edge_keys[i] && t->edge_keys[i] != key) i = (i + 1) & t->edge_mask;
    return i;
}

static int trie_grow_edges(tk_trie *t)
{
    size_t old = t->edge_mask + 1;
    uint64_t *keys = t->edge_keys;
    int32_t *child = t->edge_child;
    t->edge_mask = old * 2 - 1;
    t->edge_keys = calloc(old * 2, sizeof *t->edge_keys);
    t->edge_child = malloc(old * 2 * sizeof *t->edge_child);
    if (!t->edge_keys || !t->edge_child) {
        free(keys);
        free(child);
        return llmq_error("tokenizer: out of memory");
    }
    for (size_t i = 0; i < old; i++) {
        if (!keys[i]) continue;
        size_t j = edge_slot(t, keys[i]);
        t->edge_keys[j] = keys[i];
        t->edge_child[j] = child[i];
    }
    free(keys);
    free(child);
    return LLMQ_OK;
}

int tk_trie_add(tk_trie *t, const char *s, size_t n, int32_t token_index)
{
    if (n == 0) return LLMQ_OK; /* an empty added token never matches */
    size_t node = 0;
    t->first[(unsigned char)s[0]] = 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = ((uint64_t)node << 8 | (unsigned char)s[i]) + 1;
        size_t slot = edge_slot(t, key);
        if (t->edge_keys[slot]) {
            node = (size_t)t->edge_child[slot];
            continue;
        }
        if ((t->n_edges + 1) * 2 > t->edge_mask + 1) {
            if (trie_grow_edges(t)) return LLMQ_ERR;
            slot = edge_slot(t, key);
        }
        if (t->n_nodes == t->cap_nodes) {
            int32_t *p = realloc(t->node_token, t->cap_nodes * 2 * sizeof *p);
            if (!p) return llmq_error("tokenizer: out of memory");
            t->node_token = p;
            t->cap_nodes *= 2;
        }
        t->node_token[t->n_nodes] = -1;
        t->edge_keys[slot] = key;
        t->edge_child[slot] = (int32_t)t->n_nodes;
        t->n_edges++;
        node = t->n_nodes++;
    }
    /* the first token given for a text wins, as in HF's added vocabulary */
    if (t->node_token[node] < 0) t->node_token[node] = token_index;
    return LLMQ_OK;
}

int32_t tk_trie_longest(const tk_trie *t, const char *s, size_t n, size_t *mlen)
{
    if (!n || !t->first[(unsigned char)s[0]]) return -1;
    size_t node = 0;
    int32_t best = -1;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = ((uint64_t)node << 8 | (unsigned char)s[i]) + 1;
        size_t slot = edge_slot(t, key);
        if (!t->edge_keys[slot]) break;
        node = (size_t)t->edge_child[slot];
        if (t->node_token[node] >= 0) {
            best = t->node_token[node];
            *mlen = i + 1;
        }
    }
    return best;
}

void tk_trie_free(tk_trie *t)
{
    free(t->node_token);
    free(t->edge_keys);
    free(t->edge_child);
    memset(t, 0, sizeof *t);
}
