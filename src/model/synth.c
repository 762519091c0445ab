#include "llmq/synth.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/safetensors.h"
#include "llmq/tokenizer.h"
#include "llmq/types.h"

#include <errno.h>
#include <unistd.h>
#include <jansson.h>
#include <lapacke.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int llmq_synth_outlier_channel(int k, int hidden) { return (37 + 61 * k) % (hidden - 1); }

void llmq_synth_defaults(llmq_synth_opts *o)
{
    *o = (llmq_synth_opts){
        .hidden = 256, .intermediate = 768, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2, .vocab = 512,
        .seed = 20261125, .n_outliers = 4, .outlier_scale = 50.0f, .calib_bytes = 400000, .eval_bytes = 120000,
    };
}

/* ------------------------------------------------------------ random numbers */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s) { return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0); }

static double normal(uint64_t *s)
{
    double u = uniform(s), v = uniform(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2 * M_PI * v);
}

static const char *pick(uint64_t *s, const char *const *list, size_t n) { return list[splitmix(s) % n]; }
#define PICK(s, arr) pick((s), (arr), sizeof(arr) / sizeof((arr)[0]))

/* ------------------------------------------------------------------ the text */

static const char *const names[] = {"tom", "mia", "ben", "lily", "sam", "zoe", "max", "anna", "leo", "ruby"};
static const char *const animals[] = {"cat", "dog", "bird", "fox", "frog", "duck", "bear", "fish", "horse", "mouse"};
static const char *const things[] = {"ball", "box", "kite", "cake", "hat", "boat", "book", "tree", "car", "cup", "drum", "bell"};
static const char *const adjectives[] = {"big", "small", "red", "blue", "happy", "sad", "green", "old", "new", "shiny", "soft", "little"};
static const char *const verbs[] = {"saw", "found", "liked", "took", "gave", "made", "wanted", "lost", "painted", "carried"};
static const char *const places[] = {"park", "garden", "house", "river", "forest", "school", "beach", "farm"};
static const char *const feelings[] = {"happy", "sad", "tired", "excited", "scared", "proud", "hungry", "calm"};

static void append(char **buf, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = realloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n + 1);
    *len += n;
}

char *llmq_synth_text(uint64_t seed, size_t bytes)
{
    uint64_t s = seed;
    size_t len = 0, cap = bytes + 256;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    buf[0] = '\0';
    char sentence[256];
    while (len < bytes) {
        int sentences = 3 + (int)(splitmix(&s) % 4);
        const char *who = PICK(&s, names), *pet = PICK(&s, animals);
        for (int k = 0; k < sentences; k++) {
            switch (splitmix(&s) % 6) {
            case 0: snprintf(sentence, sizeof sentence, "%s had a %s %s.", who, PICK(&s, adjectives), pet); break;
            case 1: snprintf(sentence, sizeof sentence, "the %s %s a %s %s in the %s.", pet, PICK(&s, verbs), PICK(&s, adjectives), PICK(&s, things), PICK(&s, places)); break;
            case 2: snprintf(sentence, sizeof sentence, "%s %s the %s and felt %s.", who, PICK(&s, verbs), PICK(&s, things), PICK(&s, feelings)); break;
            case 3: snprintf(sentence, sizeof sentence, "one day %s went to the %s with the %s.", who, PICK(&s, places), pet); break;
            case 4: snprintf(sentence, sizeof sentence, "\"look at the %s %s!\" said %s.", PICK(&s, adjectives), PICK(&s, things), who); break;
            default: snprintf(sentence, sizeof sentence, "they played with the %s until the sun went down.", PICK(&s, things)); break;
            }
            if (k) append(&buf, &len, &cap, " ");
            append(&buf, &len, &cap, sentence);
        }
        append(&buf, &len, &cap, "\n");
    }
    return buf;
}

/* ------------------------------------------------------- tokenizer training */

#define MAX_SYMBOLS 4096
#define MAX_WORD 64

typedef struct {
    int sym[MAX_WORD];
    int n;
    long count;
} word_type;

typedef struct {
    char *text[MAX_SYMBOLS];
    int n;
} symbol_table;

static int symbol_id(symbol_table *t, const char *s, size_t len)
{
    for (int i = 0; i < t->n; i++)
        if (strlen(t->text[i]) == len && !memcmp(t->text[i], s, len)) return i;
    if (t->n == MAX_SYMBOLS) return -1;
    t->text[t->n] = strndup(s, len);
    return t->n++;
}

static size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4; }

/* SentencePiece-style BPE training on whitespace-delimited words ("▁word"),
 * most frequent adjacent pair first (ties: lowest symbol ids), until the
 * vocabulary (3 specials + 256 byte tokens + alphabet + merges) is full.
 * Newlines stay outside the alphabet: they encode as the byte token <0x0A>. */
static int train_bpe(const char *text, int vocab, symbol_table *syms, int (*merges)[2], int *n_merges)
{
    word_type *types = NULL;
    int n_types = 0, cap_types = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\n') p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\n') e++;
        word_type w = {.n = 0, .count = 1};
        w.sym[w.n++] = symbol_id(syms, "\xe2\x96\x81", 3); /* ▁ */
        for (const char *c = p; c < e && w.n < MAX_WORD; c += utf8_len((unsigned char)*c)) w.sym[w.n++] = symbol_id(syms, c, utf8_len((unsigned char)*c));
        int found = -1;
        for (int i = 0; i < n_types && found < 0; i++)
            if (types[i].n == w.n && !memcmp(types[i].sym, w.sym, sizeof(int) * (size_t)w.n)) found = i;
        if (found >= 0) {
            types[found].count++;
        } else {
            if (n_types == cap_types) {
                cap_types = cap_types ? cap_types * 2 : 256;
                types = realloc(types, (size_t)cap_types * sizeof *types);
            }
            types[n_types++] = w;
        }
        p = e;
    }
    int budget = vocab - 3 - 256;
    *n_merges = 0;
    long *pairs = malloc(sizeof(long) * MAX_SYMBOLS * 64);
    while (syms->n < budget) {
        /* Pair counts over the current symbols (n is small: a dense table). */
        int n = syms->n;
        long *cnt = calloc((size_t)n * n, sizeof(long));
        for (int i = 0; i < n_types; i++)
            for (int j = 0; j + 1 < types[i].n; j++) cnt[(size_t)types[i].sym[j] * n + types[i].sym[j + 1]] += types[i].count;
        long best = 1;
        int a = -1, b = -1;
        for (int x = 0; x < n; x++)
            for (int y = 0; y < n; y++)
                if (cnt[(size_t)x * n + y] > best) {
                    best = cnt[(size_t)x * n + y];
                    a = x;
                    b = y;
                }
        free(cnt);
        if (a < 0) break;
        char joined[256];
        snprintf(joined, sizeof joined, "%s%s", syms->text[a], syms->text[b]);
        int m = symbol_id(syms, joined, strlen(joined));
        merges[*n_merges][0] = a;
        merges[*n_merges][1] = b;
        (*n_merges)++;
        for (int i = 0; i < n_types; i++) {
            word_type *w = &types[i];
            int k = 0;
            for (int j = 0; j < w->n; j++) {
                if (j + 1 < w->n && w->sym[j] == a && w->sym[j + 1] == b) {
                    w->sym[k++] = m;
                    j++;
                } else {
                    w->sym[k++] = w->sym[j];
                }
            }
            w->n = k;
        }
    }
    free(pairs);
    free(types);
    return syms->n == budget ? LLMQ_OK : llmq_error("synth: the text supports only %d of %d tokenizer symbols", syms->n, budget);
}

static json_t *added_token(int id, const char *content)
{
    return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content, "single_word", 0, "lstrip", 0,
                     "rstrip", 0, "normalized", 0, "special", 1);
}

static int write_json(const char *dir, const char *name, json_t *j)
{
    char *path = llmq_path_join(dir, name);
    char *text = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(j);
    llmq_atomic_file af;
    int rc = llmq_atomic_open(&af, path);
    if (rc == LLMQ_OK) {
        fputs(text, af.fp);
        fputc('\n', af.fp);
        rc = llmq_atomic_commit(&af);
    }
    free(text);
    free(path);
    return rc;
}

/* tokenizer.json in the layout of Llama-2's (BPE with byte fallback,
 * Prepend("▁") + Replace(" " -> "▁") normalizer, BOS template). */
static int write_tokenizer(const char *dir, const symbol_table *syms, int (*merges)[2], int n_merges)
{
    json_t *vocab = json_object(), *mlist = json_array();
    json_object_set_new(vocab, "<unk>", json_integer(0));
    json_object_set_new(vocab, "<s>", json_integer(1));
    json_object_set_new(vocab, "</s>", json_integer(2));
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        json_object_set_new(vocab, name, json_integer(3 + b));
    }
    for (int i = 0; i < syms->n; i++) json_object_set_new(vocab, syms->text[i], json_integer(259 + i));
    for (int i = 0; i < n_merges; i++) {
        char m[300];
        snprintf(m, sizeof m, "%s %s", syms->text[merges[i][0]], syms->text[merges[i][1]]);
        json_array_append_new(mlist, json_string(m));
    }
    json_t *root = json_pack(
        "{s:s, s:n, s:n, s:[o,o,o],"
        " s:{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]},"
        " s:n,"
        " s:{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}},"
        " s:{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]},"
        " s:{s:s, s:n, s:s, s:n, s:n, s:b, s:b, s:o, s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>"),
        "normalizer", "type", "Sequence", "normalizers", "type", "Prepend", "prepend", "\xe2\x96\x81", "type", "Replace", "pattern", "String", " ",
        "content", "\xe2\x96\x81",
        "pre_tokenizer",
        "post_processor", "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>", "type_id", 0, "Sequence", "id", "A", "type_id", 0,
        "pair", "SpecialToken", "id", "<s>", "type_id", 0, "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", "<s>", "type_id", 1,
        "Sequence", "id", "B", "type_id", 1, "special_tokens", "<s>", "id", "<s>", "ids", 1, "tokens", "<s>",
        "decoder", "type", "Sequence", "decoders", "type", "Replace", "pattern", "String", "\xe2\x96\x81", "content", " ", "type", "ByteFallback",
        "type", "Fuse", "type", "Strip", "content", " ", "start", 1, "stop", 0,
        "model", "type", "BPE", "dropout", "unk_token", "<unk>", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 1,
        "byte_fallback", 1, "vocab", vocab, "merges", mlist);
    if (!root) return llmq_error("synth: cannot build tokenizer.json");
    if (write_json(dir, "tokenizer.json", root) != LLMQ_OK) return LLMQ_ERR;
    json_t *cfg = json_pack("{s:b, s:b, s:s, s:s, s:s, s:b, s:s, s:i}", "add_bos_token", 1, "add_eos_token", 0, "bos_token", "<s>",
                            "eos_token", "</s>", "unk_token", "<unk>", "clean_up_tokenization_spaces", 0, "tokenizer_class",
                            "LlamaTokenizer", "model_max_length", 512);
    return write_json(dir, "tokenizer_config.json", cfg);
}

/* dir/name holding len bytes of data, written atomically. */
static int write_bytes(const char *dir, const char *name, const char *data, size_t len)
{
    char *path = llmq_path_join(dir, name);
    llmq_atomic_file af;
    int rc = path ? llmq_atomic_open(&af, path) : llmq_error("synth: out of memory");
    free(path);
    if (rc != LLMQ_OK) return rc;
    if (fwrite(data, 1, len, af.fp) != len) {
        llmq_atomic_abort(&af);
        return llmq_error("%s/%s: write failed", dir, name);
    }
    return llmq_atomic_commit(&af);
}

static int write_texts(const char *dir, const char *calib, const char *eval)
{
    if (write_bytes(dir, "calib.txt", calib, strlen(calib)) != LLMQ_OK) return LLMQ_ERR;
    return write_bytes(dir, "eval.txt", eval, strlen(eval));
}

/* A real tokenizer: tokenizer.json (from the directory `from`, or the file itself) and the
 * tokenizer_config.json beside it, when there is one, copied into dir. */
static int copy_tokenizer(const char *dir, const char *from)
{
    int rc = LLMQ_ERR;
    char *json_path = llmq_is_dir(from) ? llmq_path_join(from, "tokenizer.json") : strdup(from);
    char *slash = json_path ? strrchr(json_path, '/') : NULL;
    char *cfg_path = NULL, *json = NULL, *cfg = NULL;
    size_t json_len = 0, cfg_len = 0;
    if (!json_path) return llmq_error("synth: out of memory");
    if (slash) {
        *slash = 0;
        cfg_path = llmq_path_join(json_path, "tokenizer_config.json");
        *slash = '/';
    } else {
        cfg_path = strdup("tokenizer_config.json");
    }
    if (!(json = llmq_read_file(json_path, (size_t)1 << 30, &json_len))) goto done;
    if (write_bytes(dir, "tokenizer.json", json, json_len) != LLMQ_OK) goto done;
    if (cfg_path && llmq_file_exists(cfg_path)) {
        if (!(cfg = llmq_read_file(cfg_path, (size_t)1 << 28, &cfg_len))) goto done;
        if (write_bytes(dir, "tokenizer_config.json", cfg, cfg_len) != LLMQ_OK) goto done;
    } else {
        /* none beside it: no earlier run's config may speak for this tokenizer */
        char *stale = llmq_path_join(dir, "tokenizer_config.json");
        if (!stale || (unlink(stale) != 0 && errno != ENOENT)) {
            llmq_error("%s/tokenizer_config.json: cannot remove: %s", dir, stale ? strerror(errno) : "out of memory");
            free(stale);
            goto done;
        }
        free(stale);
    }
    rc = LLMQ_OK;
done:
    free(json_path); free(cfg_path); free(json); free(cfg);
    return rc;
}

/* calib.txt, eval.txt, and the BPE tokenizer (vocab tokens) trained on calib. */
static int write_text_and_tokenizer(const char *dir, const char *calib, const char *eval, int vocab)
{
    if (write_texts(dir, calib, eval) != LLMQ_OK) return LLMQ_ERR;
    symbol_table syms = {0};
    int (*merges)[2] = malloc(sizeof(int[2]) * MAX_SYMBOLS), n_merges = 0;
    int rc = merges ? train_bpe(calib, vocab, &syms, merges, &n_merges) : llmq_error("synth: out of memory");
    if (rc == LLMQ_OK) rc = write_tokenizer(dir, &syms, merges, n_merges);
    for (int i = 0; i < syms.n; i++) free(syms.text[i]);
    free(merges);
    return rc;
}

/* ------------------------------------------------------------------ weights */

typedef struct {
    llmq_st_tensor *t;
    size_t n, cap;
} tensor_list;

static uint16_t *add_tensor(tensor_list *l, const char *name, int rows, int cols)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->t = realloc(l->t, l->cap * sizeof *l->t);
    }
    size_t count = (size_t)rows * (cols ? cols : 1);
    uint16_t *data = malloc(count * 2);
    llmq_st_tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->type = LLMQ_TYPE_BF16;
    t->n_dims = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->n_elements = (int64_t)count;
    t->n_bytes = count * 2;
    t->data = data;
    return data;
}

static void fill_normal(uint16_t *w, size_t n, double std, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) w[i] = llmq_f32_to_bf16((float)(normal(s) * std));
}

/* Embedding and head from the bigram log-probabilities B (vocab × vocab, rows
 * centred): B ≈ U S Vᵀ. Rank hidden-1 goes into U√S (embedding) and V√S
 * (head); the last hidden channel pads every embedding row to one norm, so
 * the final RMSNorm divides all rows by the same constant (folded into the head).
 * other_logit < 0: B covers only the tokens the text uses, and the head gets one
 * more row (index vocab) for every other token of a real tokenizer's vocabulary:
 * rank hidden-2, the last channel a constant of every embedding row, and that
 * row reads only it, so every other token has logit other_logit. */
static int factor_bigrams(const double *B, int vocab, int hidden, float *embed, float *head, double other_logit)
{
    double *a = malloc(sizeof(double) * (size_t)vocab * vocab), *u = malloc(sizeof(double) * (size_t)vocab * vocab);
    double *vt = malloc(sizeof(double) * (size_t)vocab * vocab), *sv = malloc(sizeof(double) * (size_t)vocab), *sup = malloc(sizeof(double) * (size_t)vocab);
    memcpy(a, B, sizeof(double) * (size_t)vocab * vocab);
    int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'A', 'A', vocab, vocab, a, vocab, sv, u, vocab, vt, vocab, sup);
    int rc = info == 0 ? LLMQ_OK : llmq_error("synth: SVD of the bigram matrix failed (info %d)", info);
    if (rc == LLMQ_OK) {
        const int other = other_logit < 0, r = hidden - 1 - other;
        double max_norm = 0;
        for (int t = 0; t < vocab; t++) {
            double nn = 0;
            for (int k = 0; k < r; k++) {
                double e = k < vocab ? u[(size_t)t * vocab + k] * sqrt(sv[k]) : 0.0;
                embed[(size_t)t * hidden + k] = (float)e;
                nn += e * e;
            }
            embed[(size_t)t * hidden + r] = (float)nn; /* squared norm for now */
            max_norm = nn > max_norm ? nn : max_norm;
        }
        /* the constant channel: as large as an average one */
        const double c = other ? sqrt(max_norm / r) : 0.0;
        /* rms of every padded row = sqrt((max_norm + c²) / hidden); scale rows to rms 1. */
        double rms = sqrt((max_norm + c * c) / hidden);
        for (int t = 0; t < vocab; t++) {
            float *row = embed + (size_t)t * hidden;
            double pad = max_norm - row[r];
            row[r] = (float)sqrt(pad > 0 ? pad : 0);
            if (other) row[hidden - 1] = (float)c;
            for (int k = 0; k < hidden; k++) row[k] = (float)(row[k] / rms);
        }
        for (int t = 0; t < vocab + other; t++)
            for (int k = 0; k < hidden; k++)
                head[(size_t)t * hidden + k] = t < vocab && k < r && k < vocab ? (float)(vt[(size_t)k * vocab + t] * sqrt(sv[k]) * rms) : 0.0f;
        if (other) head[(size_t)vocab * hidden + hidden - 1] = (float)(other_logit * rms / c);
    }
    free(a); free(u); free(vt); free(sv); free(sup);
    return rc;
}

/* For a tied head (Gemma 2, whose llama.cpp loader reads no other): the
 * symmetric part S = (B + Bᵀ)/2 of the bigram matrix, S ≈ E·diag(g)·Eᵀ from
 * its eigenvectors of largest |λ| (E = Q·√|λ|, g = sign λ), rows padded to
 * one norm and scaled to rms 1 as factor_bigrams does. The final norm's gains
 * g carry the signs: logits = E·(g ⊙ x/rms(x)) with x ∝ E_t give S's row t. */
static int factor_bigrams_tied(const double *B, int vocab, int hidden, float *embed, float *gain)
{
    double *a = malloc(sizeof(double) * (size_t)vocab * vocab), *w = malloc(sizeof(double) * (size_t)vocab);
    int *order = malloc(sizeof(int) * (size_t)vocab);
    if (!a || !w || !order) {
        free(a); free(w); free(order);
        return llmq_error("synth: out of memory");
    }
    for (int i = 0; i < vocab; i++)
        for (int j = 0; j < vocab; j++) a[(size_t)i * vocab + j] = 0.5 * (B[(size_t)i * vocab + j] + B[(size_t)j * vocab + i]);
    int info = LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'U', vocab, a, vocab, w); /* eigenvectors in the columns of a */
    int rc = info == 0 ? LLMQ_OK : llmq_error("synth: eigendecomposition of the bigram matrix failed (info %d)", info);
    if (rc == LLMQ_OK) {
        for (int i = 0; i < vocab; i++) order[i] = i;
        for (int i = 1; i < vocab; i++) /* by |λ|, largest first */
            for (int k = i; k > 0 && fabs(w[order[k]]) > fabs(w[order[k - 1]]); k--) {
                int t = order[k];
                order[k] = order[k - 1];
                order[k - 1] = t;
            }
        int r = hidden - 1;
        double max_norm = 0;
        for (int t = 0; t < vocab; t++) {
            double nn = 0;
            for (int k = 0; k < r; k++) {
                double e = a[(size_t)t * vocab + order[k]] * sqrt(fabs(w[order[k]]));
                embed[(size_t)t * hidden + k] = (float)e;
                nn += e * e;
            }
            embed[(size_t)t * hidden + r] = (float)nn;
            max_norm = nn > max_norm ? nn : max_norm;
        }
        double rms2 = max_norm / hidden;
        for (int t = 0; t < vocab; t++) {
            float *row = embed + (size_t)t * hidden;
            double pad = max_norm - row[r];
            row[r] = (float)sqrt(pad > 0 ? pad : 0);
            for (int k = 0; k < hidden; k++) row[k] = (float)(row[k] / sqrt(rms2));
        }
        for (int k = 0; k < r; k++) gain[k] = (float)(rms2 * (w[order[k]] < 0 ? -1.0 : 1.0));
        gain[r] = 0.0f;
    }
    free(a); free(w); free(order);
    return rc;
}

/* Rotates embedding and head by one random orthogonal matrix Q (QR of a
 * Gaussian matrix): logits are unchanged (L Q (E Q)ᵀ = L Eᵀ), row norms are
 * kept, and the energy that the SVD put into the first channels is spread
 * evenly, so that only the planted channels stand out. */
static int rotate(float *embed, int n_embed, float *head, int n_head, int hidden, uint64_t *s)
{
    double *q = malloc(sizeof(double) * (size_t)hidden * hidden), *tau = malloc(sizeof(double) * (size_t)hidden);
    double *row = malloc(sizeof(double) * (size_t)hidden);
    for (size_t i = 0; i < (size_t)hidden * hidden; i++) q[i] = normal(s);
    int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, hidden, hidden, q, hidden, tau);
    if (info == 0) info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, hidden, hidden, hidden, q, hidden, tau);
    if (info == 0) {
        float *mats[2] = {embed, head};
        const int rows[2] = {n_embed, n_head};
        for (int m = 0; m < 2; m++)
            for (int t = 0; t < rows[m]; t++) {
                float *r = mats[m] + (size_t)t * hidden;
                for (int j = 0; j < hidden; j++) {
                    double acc = 0;
                    for (int k = 0; k < hidden; k++) acc += (double)r[k] * q[(size_t)k * hidden + j];
                    row[j] = acc;
                }
                for (int j = 0; j < hidden; j++) r[j] = (float)row[j];
            }
    }
    free(q); free(tau); free(row);
    return info == 0 ? LLMQ_OK : llmq_error("synth: QR of the rotation failed (info %d)", info);
}

int llmq_synth_write(const char *dir, const llmq_synth_opts *o)
{
    const char *arch = o->arch ? o->arch : "llama";
    const int qwen3 = !strcmp(arch, "qwen3"), gemma = !strcmp(arch, "gemma2") ? 2 : !strcmp(arch, "gemma3") ? 3 : 0;
    const int mixtral = !strcmp(arch, "mixtral"), qwen3moe = !strcmp(arch, "qwen3moe"), moe = mixtral || qwen3moe;
    const int qk_norm = qwen3 || qwen3moe || gemma == 3, phi3 = !strcmp(arch, "phi3");
    if (!qwen3 && !gemma && !phi3 && !moe && strcmp(arch, "llama"))
        return llmq_error("synth: unknown architecture '%s' (llama, qwen3, gemma2, gemma3, phi3, mixtral, qwen3moe)", arch);
    /* the mixtures: 4 experts, 2 per token; Qwen3-MoE's experts narrower than its (unused) dense FFN */
    const int n_exp = 4, n_used = 2, exp_ffn = qwen3moe ? o->intermediate * 2 / 3 : o->intermediate;
    if (o->hidden % o->n_heads || o->n_heads % o->n_kv_heads || o->vocab < 300 || o->head_dim < 0 || o->head_dim % 2)
        return llmq_error("synth: inconsistent shape (hidden %d, heads %d, kv heads %d, head_dim %d, vocab %d)", o->hidden, o->n_heads,
                          o->n_kv_heads, o->head_dim, o->vocab);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return llmq_error("%s: cannot create: %s", dir, strerror(errno));
    int rc = LLMQ_ERR;
    char *calib = llmq_synth_text(o->seed, o->calib_bytes), *eval = llmq_synth_text(o->seed ^ 0x5eed, o->eval_bytes);
    tensor_list tl = {0};
    llmq_tokenizer *tok = NULL;
    int32_t *ids = NULL, *eval_ids = NULL;
    int *slot = NULL;
    double *B = NULL;
    float *embed = NULL, *head = NULL;
    if (!calib || !eval) {
        llmq_error("synth: out of memory");
        goto done;
    }
    /* Gemma 2's head is the embedding (llama.cpp reads no other) */
    const int tied = gemma == 2;
    if (tied && o->tokenizer) {
        llmq_error("synth: --tokenizer: a tied head (gemma2) needs the demo's own tokenizer");
        goto done;
    }
    /* 1. text and tokenizer */
    if ((rc = o->tokenizer ? write_texts(dir, calib, eval) : write_text_and_tokenizer(dir, calib, eval, o->vocab)) != LLMQ_OK)
        goto done;
    if (o->tokenizer && (rc = copy_tokenizer(dir, o->tokenizer)) != LLMQ_OK) goto done;
    rc = LLMQ_ERR;
    if (!(tok = llmq_tokenizer_load(dir))) goto done;

    /* 2. bigram statistics of the calibration text, add-0.1 smoothing, rows centred. With a real
     * tokenizer they cover only the tokens that the text (calibration or evaluation) and the
     * specials use, numbered in id order: slot[id] (-1 for the rest). */
    size_t n_ids, n_eval_ids = 0;
    if (llmq_tokenizer_encode(tok, calib, strlen(calib), 1, &ids, &n_ids) != LLMQ_OK) goto done;
    const int V = o->tokenizer ? llmq_tokenizer_vocab_size(tok) : o->vocab, d = o->hidden;
    if (!(slot = malloc(sizeof(int) * (size_t)V))) {
        llmq_error("synth: out of memory");
        goto done;
    }
    for (int t = 0; t < V; t++) slot[t] = o->tokenizer ? -1 : t;
    int Vu = V;
    if (o->tokenizer) {
        if (llmq_tokenizer_encode(tok, eval, strlen(eval), 1, &eval_ids, &n_eval_ids) != LLMQ_OK) goto done;
        for (size_t i = 0; i < n_ids; i++) slot[ids[i]] = 0;
        for (size_t i = 0; i < n_eval_ids; i++) slot[eval_ids[i]] = 0;
        const int special[2] = {llmq_tokenizer_bos_id(tok), llmq_tokenizer_eos_id(tok)};
        for (int k = 0; k < 2; k++)
            if (special[k] >= 0 && special[k] < V) slot[special[k]] = 0;
        Vu = 0;
        for (int t = 0; t < V; t++)
            if (slot[t] == 0) slot[t] = Vu++;
        if (Vu > 8192 || Vu < 2) {
            llmq_error("synth: the text uses %d distinct tokens of this tokenizer (2 to 8192 supported)", Vu);
            goto done;
        }
    }
    const int other = Vu < V; /* one more head row: every token the text does not use */
    B = calloc((size_t)Vu * Vu, sizeof *B);
    embed = malloc((size_t)V * d * sizeof(float));
    head = malloc((size_t)(V + other) * d * sizeof(float));
    if (!B || !embed || !head) {
        llmq_error("synth: out of memory");
        goto done;
    }
    for (size_t i = 0; i + 1 < n_ids; i++) B[(size_t)slot[ids[i]] * Vu + slot[ids[i + 1]]] += 1;
    for (int a = 0; a < Vu; a++) {
        double total = 0, mean = 0;
        for (int b = 0; b < Vu; b++) total += B[(size_t)a * Vu + b] + 0.1;
        for (int b = 0; b < Vu; b++) {
            B[(size_t)a * Vu + b] = log((B[(size_t)a * Vu + b] + 0.1) / total);
            mean += B[(size_t)a * Vu + b] / Vu;
        }
        for (int b = 0; b < Vu; b++) B[(size_t)a * Vu + b] -= mean;
    }
    uint64_t s = o->seed * 7919 + 17;
    /* Gemma 2: the symmetric part of the bigrams, signs in the final norm, unrotated (the gains
     * must stay on their channels) */
    float *gain = NULL;
    if (tied) {
        if (!(gain = malloc(sizeof(float) * (size_t)d)) || factor_bigrams_tied(B, V, d, embed, gain) != LLMQ_OK) {
            if (!gain) llmq_error("synth: out of memory");
            free(gain);
            goto done;
        }
    } else if (factor_bigrams(B, Vu, d, embed, head, other ? -20.0 : 0.0) != LLMQ_OK || rotate(embed, Vu, head, Vu + other, d, &s) != LLMQ_OK) {
        goto done;
    }
    if (other) {
        /* the used rows to their ids (from the top: slot[t] <= t, so none is overwritten before it
         * moves); the unused ones: embeddings of rms 1 that the text never reads, and the shared
         * head row (rotated at index Vu, kept aside first) */
        float *rest = malloc(sizeof(float) * (size_t)d);
        if (!rest) {
            llmq_error("synth: out of memory");
            goto done;
        }
        memcpy(rest, head + (size_t)Vu * d, sizeof(float) * (size_t)d);
        for (int t = V - 1; t >= 0; t--) {
            float *e = embed + (size_t)t * d, *h = head + (size_t)t * d;
            if (slot[t] >= 0) {
                memmove(e, embed + (size_t)slot[t] * d, sizeof(float) * (size_t)d);
                memmove(h, head + (size_t)slot[t] * d, sizeof(float) * (size_t)d);
            }
        }
        for (int t = 0; t < V; t++)
            if (slot[t] < 0) {
                for (int k = 0; k < d; k++) embed[(size_t)t * d + k] = (float)normal(&s);
                memcpy(head + (size_t)t * d, rest, sizeof(float) * (size_t)d);
            }
        free(rest);
    }

    /* 3. tensors (BF16), in the order Hugging Face writes them */
    int hd = o->head_dim ? o->head_dim : qwen3 || qwen3moe || gemma ? 2 * d / o->n_heads : d / o->n_heads, qd = o->n_heads * hd,
        kvd = o->n_kv_heads * hd, f = o->intermediate;
    /* Gemma stores a norm's weight as w and applies 1 + w; its embeddings enter ×√hidden and each
     * half's output is RMS-normed before the residual add: those post-norms get 5% of the
     * residual stream's RMS, so the layers stay perturbations of the bigram model. */
    const float norm_shift = gemma ? 1.0f : 0.0f;
    double post_gain = 0;
    if (gemma) {
        double ss = 0;
        for (size_t i = 0; i < (size_t)V * d; i++) ss += (double)embed[i] * embed[i];
        post_gain = 0.05 * sqrt((double)d) * sqrt(ss / ((double)V * d));
    }
    uint16_t *w = add_tensor(&tl, "model.embed_tokens.weight", V, d);
    for (size_t i = 0; i < (size_t)V * d; i++) w[i] = llmq_f32_to_bf16(embed[i]);
    /* The outlier channels: fixed, spread over the hidden dimension. */
    int outlier[16];
    for (int k = 0; k < o->n_outliers && k < 16; k++) outlier[k] = llmq_synth_outlier_channel(k, d);
    for (int l = 0; l < o->n_layers; l++) {
        char name[128];
        const double resid_std = 0.02 / sqrt(2.0 * o->n_layers);
        /* the two norms in front of the halves carry the planted channels (Gemma's MLP one is
         * pre_feedforward_layernorm; its post_attention_layernorm is a post-norm) */
        for (int norm = 0; norm < 2; norm++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l,
                     !norm ? "input_layernorm" : gemma ? "pre_feedforward_layernorm" : "post_attention_layernorm");
            w = add_tensor(&tl, name, d, 0);
            for (int i = 0; i < d; i++) w[i] = llmq_f32_to_bf16(1.0f - norm_shift);
            for (int k = 0; k < o->n_outliers && k < 16; k++) w[outlier[k]] = llmq_f32_to_bf16(o->outlier_scale - norm_shift);
        }
        for (int norm = 0; gemma && norm < 2; norm++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, norm ? "post_feedforward_layernorm" : "post_attention_layernorm");
            w = add_tensor(&tl, name, d, 0);
            for (int i = 0; i < d; i++) w[i] = llmq_f32_to_bf16((float)(post_gain * (1.0 + 0.1 * normal(&s))) - norm_shift);
        }
        for (int h = 0; qk_norm && h < 2; h++) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.weight", l, h ? "k_norm" : "q_norm");
            w = add_tensor(&tl, name, hd, 0);
            for (int i = 0; i < hd; i++) w[i] = llmq_f32_to_bf16((float)(1.0 + 0.1 * normal(&s)) - norm_shift);
        }
        const struct { const char *name; int rows, cols; double std; } lin[] = {
            {"self_attn.q_proj", qd, d, 0.02}, {"self_attn.k_proj", kvd, d, 0.02}, {"self_attn.v_proj", kvd, d, 0.02},
            {"self_attn.o_proj", d, qd, resid_std}, {"mlp.gate_proj", f, d, 0.02}, {"mlp.up_proj", f, d, 0.02},
            {"mlp.down_proj", d, f, resid_std},
        };
        uint16_t *stack = NULL; /* Phi-3: qkv_proj and gate_up_proj hold these rows stacked */
        for (size_t k = 0; k < sizeof lin / sizeof lin[0]; k++) {
            if (moe && k == 4) {
                /* the router (its outlier columns damped as every reader's), then each expert's gate, up, down */
                static const char *const mx[3] = {"w1", "w3", "w2"}, *const qw[3] = {"gate_proj", "up_proj", "down_proj"};
                const char *block = mixtral ? "block_sparse_moe" : "mlp";
                snprintf(name, sizeof name, "model.layers.%d.%s.gate.weight", l, block);
                w = add_tensor(&tl, name, n_exp, d);
                for (int r = 0; r < n_exp; r++)
                    for (int c = 0; c < d; c++) {
                        double std = 0.1;
                        for (int q = 0; q < o->n_outliers && q < 16; q++)
                            if (c == outlier[q]) std /= o->outlier_scale;
                        w[(size_t)r * d + c] = llmq_f32_to_bf16((float)(normal(&s) * std));
                    }
                for (int e = 0; e < n_exp; e++)
                    for (int jj = 0; jj < 3; jj++) {
                        const int rows = jj == 2 ? d : exp_ffn, cols = jj == 2 ? exp_ffn : d;
                        snprintf(name, sizeof name, "model.layers.%d.%s.experts.%d.%s.weight", l, block, e, mixtral ? mx[jj] : qw[jj]);
                        w = add_tensor(&tl, name, rows, cols);
                        for (int r = 0; r < rows; r++)
                            for (int c = 0; c < cols; c++) {
                                double std = jj == 2 ? resid_std : 0.02;
                                for (int q = 0; q < o->n_outliers && q < 16 && jj < 2; q++)
                                    if (c == outlier[q]) std /= o->outlier_scale;
                                w[(size_t)r * cols + c] = llmq_f32_to_bf16((float)(normal(&s) * std));
                            }
                    }
                break;
            }
            if (phi3 && (k == 0 || k == 4)) {
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, k == 0 ? "self_attn.qkv_proj" : "mlp.gate_up_proj");
                stack = add_tensor(&tl, name, k == 0 ? qd + 2 * kvd : 2 * f, d);
            }
            if (phi3 && (k <= 2 || k == 4 || k == 5)) {
                w = stack;
                stack += (size_t)lin[k].rows * lin[k].cols;
            } else {
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, lin[k].name);
                w = add_tensor(&tl, name, lin[k].rows, lin[k].cols);
            }
            /* Outlier channels carry activations ~outlier_scale× larger: scale their
             * input weights down so the layer's output stays a small perturbation. */
            for (int r = 0; r < lin[k].rows; r++)
                for (int c = 0; c < lin[k].cols; c++) {
                    double std = lin[k].std;
                    for (int q = 0; q < o->n_outliers && q < 16 && lin[k].cols == d && k != 3 && k != 6; q++)
                        if (c == outlier[q]) std /= o->outlier_scale;
                    w[(size_t)r * lin[k].cols + c] = llmq_f32_to_bf16((float)(normal(&s) * std));
                }
        }
    }
    w = add_tensor(&tl, "model.norm.weight", d, 0);
    for (int i = 0; i < d; i++) w[i] = llmq_f32_to_bf16((gain ? gain[i] : 1.0f) - norm_shift);
    free(gain);
    if (!tied) {
        w = add_tensor(&tl, "lm_head.weight", V, d);
        for (size_t i = 0; i < (size_t)V * d; i++) w[i] = llmq_f32_to_bf16(head[i]);
    }
    (void)fill_normal;

    char *st_path = llmq_path_join(dir, "model.safetensors");
    const char *meta[] = {"format", "pt", "generator", "llmq synth", NULL};
    rc = llmq_st_write(st_path, tl.t, tl.n, meta);
    free(st_path);
    if (rc != LLMQ_OK) goto done;

    const char *arch_name = qwen3 ? "Qwen3ForCausalLM" : gemma == 2 ? "Gemma2ForCausalLM" : gemma ? "Gemma3ForCausalLM"
                          : phi3 ? "Phi3ForCausalLM" : mixtral ? "MixtralForCausalLM" : qwen3moe ? "Qwen3MoeForCausalLM" : "LlamaForCausalLM";
    json_t *cfg = json_pack("{s:[s], s:s, s:b, s:f, s:i, s:i, s:s, s:i, s:i, s:f, s:i, s:b, s:i, s:i, s:i, s:i, s:f, s:n, s:f, s:b, s:s, s:i}",
                            "architectures", arch_name, "model_type", gemma == 3 ? "gemma3_text" : qwen3moe ? "qwen3_moe" : arch, "attention_bias", 0,
                            "attention_dropout", 0.0,
                            "bos_token_id", 1, "eos_token_id", 2, "hidden_act", gemma ? "gelu_pytorch_tanh" : "silu", "hidden_size", d,
                            "intermediate_size", f, "initializer_range", 0.02, "max_position_embeddings", 512, "mlp_bias", 0,
                            "num_attention_heads", o->n_heads, "num_hidden_layers", o->n_layers, "num_key_value_heads", o->n_kv_heads,
                            "head_dim", hd, "rms_norm_eps", 1e-5, "rope_scaling", "rope_theta", gemma == 3 ? 1000000.0 : 10000.0,
                            "tie_word_embeddings", tied, "torch_dtype", "bfloat16", "vocab_size", V);
    if (cfg && o->tokenizer) {
        /* the tokenizer's own specials (Qwen3 has no BOS: null, as its config.json says) */
        const int bos = llmq_tokenizer_bos_id(tok), eos = llmq_tokenizer_eos_id(tok);
        json_object_set_new(cfg, "bos_token_id", bos >= 0 ? json_integer(bos) : json_null());
        json_object_set_new(cfg, "eos_token_id", eos >= 0 ? json_integer(eos) : json_null());
    }
    if (cfg && moe) {
        json_object_set_new(cfg, mixtral ? "num_local_experts" : "num_experts", json_integer(n_exp));
        json_object_set_new(cfg, "num_experts_per_tok", json_integer(n_used));
        if (qwen3moe) {
            json_object_set_new(cfg, "moe_intermediate_size", json_integer(exp_ffn));
            json_object_set_new(cfg, "norm_topk_prob", json_true());
            json_object_set_new(cfg, "decoder_sparse_step", json_integer(1));
            json_object_set_new(cfg, "mlp_only_layers", json_array());
        }
    }
    if (cfg && phi3) {
        /* Phi-3-mini's fields besides Llama's: the window it names (which llama.cpp does not run) */
        json_object_set_new(cfg, "original_max_position_embeddings", json_integer(512));
        json_object_set_new(cfg, "sliding_window", json_integer(2047));
    }
    if (cfg && gemma) {
        /* the Gemma fields: scale 1/√head_dim (as llama.cpp assumes below 27B), a window of 64 tokens on
         * the sliding layers (every other one in Gemma 2; five in six in Gemma 3, whose local layers
         * have their own RoPE base), Gemma 2's soft-capping */
        json_object_set_new(cfg, "hidden_activation", json_string("gelu_pytorch_tanh"));
        json_object_set_new(cfg, "query_pre_attn_scalar", json_integer(hd));
        json_object_set_new(cfg, "sliding_window", json_integer(64));
        if (gemma == 2) {
            json_object_set_new(cfg, "attn_logit_softcapping", json_real(50.0));
            json_object_set_new(cfg, "final_logit_softcapping", json_real(30.0));
        } else {
            json_object_set_new(cfg, "sliding_window_pattern", json_integer(6));
            json_object_set_new(cfg, "rope_local_base_freq", json_real(10000.0));
            json_object_set_new(cfg, "attn_logit_softcapping", json_null());
            json_object_set_new(cfg, "final_logit_softcapping", json_null());
        }
    }
    rc = write_json(dir, "config.json", cfg);
done:
    for (size_t i = 0; i < tl.n; i++) {
        free(tl.t[i].name);
        free((void *)tl.t[i].data);
    }
    free(tl.t);
    llmq_tokenizer_free(tok);
    free(ids); free(eval_ids); free(slot); free(B); free(embed); free(head); free(calib); free(eval);
    return rc;
}

/* ------------------------------------------------------- real-model shapes */

/* As the checkpoints' own config.json files give them. llama3-8b and
 * llama3-70b are Llama-3.1's (Llama-3's tensors have the same shapes; its
 * config has no rope_scaling and an 8192 context). */
static const llmq_synth_shape shapes[] = {
    {.name = "llama2-7b", .source = "meta-llama/Llama-2-7b-hf", .architecture = "LlamaForCausalLM", .hidden = 4096,
     .intermediate = 11008, .n_layers = 32, .n_heads = 32, .n_kv_heads = 32, .vocab = 32000, .max_position = 4096,
     .rope_theta = 10000.0, .rms_norm_eps = 1e-5},
    {.name = "llama3-8b", .source = "meta-llama/Llama-3.1-8B", .architecture = "LlamaForCausalLM", .hidden = 4096,
     .intermediate = 14336, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .vocab = 128256, .max_position = 131072,
     .rope_theta = 500000.0, .rms_norm_eps = 1e-5, .llama3_rope = 1},
    {.name = "qwen2.5-7b", .source = "Qwen/Qwen2.5-7B", .architecture = "Qwen2ForCausalLM", .hidden = 3584,
     .intermediate = 18944, .n_layers = 28, .n_heads = 28, .n_kv_heads = 4, .vocab = 152064, .max_position = 131072,
     .rope_theta = 1000000.0, .rms_norm_eps = 1e-6, .qkv_bias = 1},
    {.name = "qwen3-8b", .source = "Qwen/Qwen3-8B", .architecture = "Qwen3ForCausalLM", .hidden = 4096, .intermediate = 12288,
     .n_layers = 36, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128, .vocab = 151936, .max_position = 40960,
     .rope_theta = 1000000.0, .rms_norm_eps = 1e-6, .qk_norm = 1},
    {.name = "qwen3-32b", .source = "Qwen/Qwen3-32B", .architecture = "Qwen3ForCausalLM", .hidden = 5120, .intermediate = 25600,
     .n_layers = 64, .n_heads = 64, .n_kv_heads = 8, .head_dim = 128, .vocab = 151936, .max_position = 40960,
     .rope_theta = 1000000.0, .rms_norm_eps = 1e-6, .qk_norm = 1},
    {.name = "llama3-70b", .source = "meta-llama/Llama-3.1-70B", .architecture = "LlamaForCausalLM", .hidden = 8192,
     .intermediate = 28672, .n_layers = 80, .n_heads = 64, .n_kv_heads = 8, .vocab = 128256, .max_position = 131072,
     .rope_theta = 500000.0, .rms_norm_eps = 1e-5, .llama3_rope = 1},
    {.name = "qwen3-30b-a3b", .source = "Qwen/Qwen3-30B-A3B", .architecture = "Qwen3MoeForCausalLM", .hidden = 2048,
     .intermediate = 6144, .n_layers = 48, .n_heads = 32, .n_kv_heads = 4, .head_dim = 128, .vocab = 151936, .max_position = 40960,
     .rope_theta = 1000000.0, .rms_norm_eps = 1e-6, .qk_norm = 1, .n_experts = 128, .n_experts_used = 8, .expert_ffn = 768},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

/* The demo's tokenizer, which every shape carries. */
#define SHAPE_TOKENIZER_VOCAB 512

const llmq_synth_shape *llmq_synth_shape_at(size_t i) { return i < N_SHAPES ? &shapes[i] : NULL; }

const llmq_synth_shape *llmq_synth_shape_find(const char *name)
{
    char list[256] = "";
    for (size_t i = 0; i < N_SHAPES; i++) {
        if (!strcmp(shapes[i].name, name)) return &shapes[i];
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", shapes[i].name);
    }
    llmq_error("unknown shape '%s' (known: %s)", name, list);
    return NULL;
}

static int shape_head_dim(const llmq_synth_shape *s) { return s->head_dim ? s->head_dim : s->hidden / s->n_heads; }

char *llmq_synth_shape_config(const llmq_synth_shape *s, int n_layers)
{
    int qwen = !strcmp(s->architecture, "Qwen2ForCausalLM"), moe = s->n_experts > 0,
        qwen3 = !strcmp(s->architecture, "Qwen3ForCausalLM") || moe;
    json_t *c = json_pack("{s:[s], s:f, s:i, s:i, s:s, s:i, s:f, s:i, s:i, s:s, s:i, s:i, s:i, s:f, s:f, s:b, s:s, s:b, s:i}",
                          "architectures", s->architecture, "attention_dropout", 0.0, "bos_token_id", 1, "eos_token_id", 2,
                          "hidden_act", "silu", "hidden_size", s->hidden, "initializer_range", 0.02, "intermediate_size",
                          s->intermediate, "max_position_embeddings", s->max_position, "model_type", qwen ? "qwen2" : moe ? "qwen3_moe" : qwen3 ? "qwen3" : "llama",
                          "num_attention_heads", s->n_heads, "num_hidden_layers", n_layers, "num_key_value_heads", s->n_kv_heads,
                          "rms_norm_eps", s->rms_norm_eps, "rope_theta", s->rope_theta, "tie_word_embeddings", s->tied,
                          "torch_dtype", "bfloat16", "use_cache", 1, "vocab_size", s->vocab);
    if (!c) {
        llmq_error("synth: cannot build config.json");
        return NULL;
    }
    if (qwen) {
        /* Qwen2.5's config names a sliding window that use_sliding_window turns off. */
        json_object_set_new(c, "max_window_layers", json_integer(n_layers));
        json_object_set_new(c, "sliding_window", json_integer(s->max_position));
        json_object_set_new(c, "use_sliding_window", json_false());
    } else if (qwen3) {
        /* Qwen3's config: no sliding window in use, head_dim of its own */
        json_object_set_new(c, "attention_bias", json_false());
        json_object_set_new(c, "head_dim", json_integer(shape_head_dim(s)));
        json_object_set_new(c, "max_window_layers", json_integer(n_layers));
        json_object_set_new(c, "sliding_window", json_null());
        json_object_set_new(c, "use_sliding_window", json_false());
        if (moe) {
            /* Qwen3-MoE's: every layer sparse, top-k weights renormalised */
            json_object_set_new(c, "decoder_sparse_step", json_integer(1));
            json_object_set_new(c, "mlp_only_layers", json_array());
            json_object_set_new(c, "moe_intermediate_size", json_integer(s->expert_ffn));
            json_object_set_new(c, "norm_topk_prob", json_true());
            json_object_set_new(c, "num_experts", json_integer(s->n_experts));
            json_object_set_new(c, "num_experts_per_tok", json_integer(s->n_experts_used));
            json_object_set_new(c, "output_router_logits", json_false());
            json_object_set_new(c, "router_aux_loss_coef", json_real(0.001));
        }
    } else {
        json_object_set_new(c, "attention_bias", json_boolean(s->qkv_bias));
        json_object_set_new(c, "head_dim", json_integer(shape_head_dim(s)));
        json_object_set_new(c, "mlp_bias", json_false());
        json_object_set_new(c, "pretraining_tp", json_integer(1));
    }
    json_object_set_new(c, "rope_scaling",
                        s->llama3_rope ? json_pack("{s:f, s:f, s:f, s:i, s:s}", "factor", 8.0, "high_freq_factor", 4.0,
                                                   "low_freq_factor", 1.0, "original_max_position_embeddings", 8192,
                                                   "rope_type", "llama3")
                                       : json_null());
    char *text = json_dumps(c, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(c);
    if (!text) llmq_error("synth: cannot encode config.json");
    return text;
}

/* One tensor of the plan and how its elements are drawn. */
typedef enum { GEN_LINEAR, GEN_NORM, GEN_NORM_OUTLIERS, GEN_BIAS } gen_kind;

typedef struct {
    gen_kind kind;
    float std;              /* GEN_LINEAR, GEN_BIAS; norms: the spread around 1 */
    int damp_outlier_cols;  /* GEN_LINEAR reading the normed hidden state */
    uint64_t key;           /* the tensor's stream */
} gen_spec;

typedef struct {
    llmq_st_tensor *t;
    gen_spec *g;
    size_t n;
    unsigned char *outlier;   /* hidden entries: 1 on a planted channel */
    float outlier_scale;
} shape_plan;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A standard normal, approximately: the sum of the four 16-bit uniforms of one
 * hash (Irwin-Hall, mean 0, variance 1, bounded by ±3.46). Element idx of a
 * tensor depends only on (key, idx), so chunks and threads cannot change it. */
static inline float hash_normal(uint64_t key, uint64_t idx)
{
    uint64_t z = mix64(key + (idx + 1) * 0x9e3779b97f4a7c15ull);
    int32_t sum = (int32_t)(z & 0xffff) + (int32_t)((z >> 16) & 0xffff) + (int32_t)((z >> 32) & 0xffff) + (int32_t)(z >> 48);
    return (float)(sum - 131070) * (float)(1.7320508075688772 / 65536.0);
}

/* Elements [lo, hi) of a tensor whose element lo is in column c. */
static void fill_range(const shape_plan *p, const gen_spec *g, int64_t cols, int64_t first, int64_t lo, int64_t hi, int64_t c,
                       uint16_t *out)
{
    const float std = g->std, big = p->outlier_scale;
    const unsigned char *outlier = p->outlier;
    switch (g->kind) {
    case GEN_LINEAR:
        if (!g->damp_outlier_cols) {
            for (int64_t k = lo; k < hi; k++) out[k] = llmq_f32_to_bf16(hash_normal(g->key, (uint64_t)(first + k)) * std);
            break;
        }
        /* Outlier channels carry activations ~outlier_scale× larger: their
         * input weights are that much smaller, as in the demo model. */
        for (int64_t k = lo; k < hi; k++) {
            float v = hash_normal(g->key, (uint64_t)(first + k)) * std;
            out[k] = llmq_f32_to_bf16(outlier[c] ? v / big : v);
            if (++c == cols) c = 0;
        }
        break;
    case GEN_BIAS:
        for (int64_t k = lo; k < hi; k++) out[k] = llmq_f32_to_bf16(hash_normal(g->key, (uint64_t)(first + k)) * std);
        break;
    case GEN_NORM:
    case GEN_NORM_OUTLIERS:
        for (int64_t k = lo; k < hi; k++) {
            float v = 1.0f + hash_normal(g->key, (uint64_t)(first + k)) * std;
            out[k] = llmq_f32_to_bf16(g->kind == GEN_NORM_OUTLIERS && outlier[c] ? big * v : v);
            if (++c == cols) c = 0;
        }
        break;
    }
}

static int plan_fill(void *user, size_t i, size_t offset, void *buf, size_t len)
{
    const shape_plan *p = user;
    const llmq_st_tensor *t = &p->t[i];
    int64_t first = (int64_t)(offset / 2), n = (int64_t)(len / 2);
    int64_t cols = t->n_dims == 2 ? t->shape[1] : t->shape[0];
#pragma omp parallel
    {
        /* Contiguous slices, the column carried along (no division per element). */
        int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
        int64_t lo = n * id / nt, hi = n * (id + 1) / nt;
        fill_range(p, &p->g[i], cols, first, lo, hi, (first + lo) % cols, buf);
    }
    return LLMQ_OK;
}

static int plan_add(shape_plan *p, size_t cap, const char *name, int64_t rows, int64_t cols, gen_kind kind, float std,
                    int damp, uint64_t seed)
{
    if (p->n == cap) return llmq_error("synth: too many tensors");
    llmq_st_tensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return llmq_error("synth: out of memory");
    t->type = LLMQ_TYPE_BF16;
    t->n_dims = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->n_elements = rows * (cols ? cols : 1);
    t->n_bytes = (size_t)t->n_elements * 2;
    p->g[p->n] = (gen_spec){kind, std, damp, mix64(seed ^ mix64(p->n + 1))};
    p->n++;
    return LLMQ_OK;
}

/* The tensors of s with n layers, in the order Hugging Face writes them.
 * Linear weights: normal, std 0.02 (transformers' initializer_range); o_proj
 * and down_proj 0.02 / sqrt(2 × layers of the full model), as GPT-2 scales the
 * residual branches. Norms: 1 ± 0.05; input_layernorm and
 * post_attention_layernorm carry the planted channels. Biases: std 0.05. */
static int plan_shape(shape_plan *p, size_t cap, const llmq_synth_shape *s, int n_layers, uint64_t seed)
{
    int64_t d = s->hidden, f = s->intermediate, hd = shape_head_dim(s), qd = hd * s->n_heads, kvd = hd * s->n_kv_heads;
    float resid_std = (float)(0.02 / sqrt(2.0 * s->n_layers));
    if (plan_add(p, cap, "model.embed_tokens.weight", s->vocab, d, GEN_LINEAR, 0.02f, 0, seed)) return LLMQ_ERR;
    for (int l = 0; l < n_layers; l++) {
        char name[128];
        const struct { const char *name; int64_t rows, cols; gen_kind kind; float std; int damp; } t[] = {
            {"input_layernorm.weight", d, 0, GEN_NORM_OUTLIERS, 0.05f, 0},
            {"self_attn.q_proj.weight", qd, d, GEN_LINEAR, 0.02f, 1},
            {"self_attn.q_proj.bias", qd, 0, GEN_BIAS, 0.05f, 0},
            {"self_attn.k_proj.weight", kvd, d, GEN_LINEAR, 0.02f, 1},
            {"self_attn.k_proj.bias", kvd, 0, GEN_BIAS, 0.05f, 0},
            {"self_attn.v_proj.weight", kvd, d, GEN_LINEAR, 0.02f, 1},
            {"self_attn.v_proj.bias", kvd, 0, GEN_BIAS, 0.05f, 0},
            {"self_attn.q_norm.weight", hd, 0, GEN_NORM, 0.05f, 0},
            {"self_attn.k_norm.weight", hd, 0, GEN_NORM, 0.05f, 0},
            {"self_attn.o_proj.weight", d, qd, GEN_LINEAR, resid_std, 0},
            {"post_attention_layernorm.weight", d, 0, GEN_NORM_OUTLIERS, 0.05f, 0},
            {"mlp.gate_proj.weight", f, d, GEN_LINEAR, 0.02f, 1},
            {"mlp.up_proj.weight", f, d, GEN_LINEAR, 0.02f, 1},
            {"mlp.down_proj.weight", d, f, GEN_LINEAR, resid_std, 0},
        };
        for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
            if (t[k].kind == GEN_BIAS && !s->qkv_bias) continue;
            if (t[k].rows == hd && t[k].kind == GEN_NORM && !s->qk_norm) continue;
            if (s->n_experts && !strncmp(t[k].name, "mlp.", 4)) break; /* the MLP is the experts */
            snprintf(name, sizeof name, "model.layers.%d.%s", l, t[k].name);
            if (plan_add(p, cap, name, t[k].rows, t[k].cols, t[k].kind, t[k].std, t[k].damp, seed)) return LLMQ_ERR;
        }
        if (s->n_experts) {
            /* the router (std 0.1: softmax weights that differ), then every expert's gate, up, down */
            const int64_t fe = s->expert_ffn;
            snprintf(name, sizeof name, "model.layers.%d.mlp.gate.weight", l);
            if (plan_add(p, cap, name, s->n_experts, d, GEN_LINEAR, 0.1f, 1, seed)) return LLMQ_ERR;
            for (int e = 0; e < s->n_experts; e++) {
                static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
                for (int j = 0; j < 3; j++) {
                    snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, proj[j]);
                    if (plan_add(p, cap, name, j == 2 ? d : fe, j == 2 ? fe : d, GEN_LINEAR, j == 2 ? resid_std : 0.02f, j < 2, seed))
                        return LLMQ_ERR;
                }
            }
        }
    }
    if (plan_add(p, cap, "model.norm.weight", d, 0, GEN_NORM, 0.05f, 0, seed)) return LLMQ_ERR;
    if (!s->tied && plan_add(p, cap, "lm_head.weight", s->vocab, d, GEN_LINEAR, 0.02f, 0, seed)) return LLMQ_ERR;
    return LLMQ_OK;
}

int llmq_synth_write_shape(const char *dir, const llmq_synth_shape *s, const llmq_synth_opts *o)
{
    if (s->hidden <= 0 || s->intermediate <= 0 || s->n_heads <= 0 || s->n_kv_heads <= 0 || (!s->head_dim && s->hidden % s->n_heads) ||
        s->n_heads % s->n_kv_heads || shape_head_dim(s) % 2)
        return llmq_error("synth: shape %s is inconsistent (hidden %d, heads %d, kv heads %d)", s->name, s->hidden, s->n_heads,
                          s->n_kv_heads);
    if (s->vocab < SHAPE_TOKENIZER_VOCAB)
        return llmq_error("synth: shape %s: vocab %d is smaller than the tokenizer's %d tokens", s->name, s->vocab, SHAPE_TOKENIZER_VOCAB);
    if (o->n_layers < 1 || o->n_layers > s->n_layers)
        return llmq_error("shape %s has 1 to %d layers, not %d", s->name, s->n_layers, o->n_layers);
    if (o->n_outliers < 0 || o->n_outliers > 16 || !(o->outlier_scale > 0))
        return llmq_error("synth: 0 to 16 outlier channels of positive scale, not %d of %g", o->n_outliers, o->outlier_scale);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return llmq_error("%s: cannot create: %s", dir, strerror(errno));

    int rc = LLMQ_ERR;
    size_t cap = 3 + (size_t)o->n_layers * (15 + 3 * (size_t)s->n_experts);
    shape_plan p = {.t = calloc(cap, sizeof *p.t), .g = calloc(cap, sizeof *p.g), .outlier = calloc((size_t)s->hidden, 1),
                    .outlier_scale = o->outlier_scale};
    char *calib = llmq_synth_text(o->seed, o->calib_bytes), *eval = llmq_synth_text(o->seed ^ 0x5eed, o->eval_bytes);
    char *config = NULL, *path = NULL;
    if (!p.t || !p.g || !p.outlier || !calib || !eval) {
        llmq_error("synth: out of memory");
        goto done;
    }
    for (int k = 0; k < o->n_outliers; k++) p.outlier[llmq_synth_outlier_channel(k, s->hidden)] = 1;
    if (write_text_and_tokenizer(dir, calib, eval, SHAPE_TOKENIZER_VOCAB) != LLMQ_OK) goto done;
    if (plan_shape(&p, cap, s, o->n_layers, o->seed * 0x2545f4914f6cdd1dull + 0x5ba9e) != LLMQ_OK) goto done;
    const char *meta[] = {"format", "pt", "generator", "llmq synth --shape", "shape", s->name, NULL};
    path = llmq_path_join(dir, "model.safetensors");
    if (!path || llmq_st_write_stream(path, p.t, p.n, meta, plan_fill, &p) != LLMQ_OK) goto done;
    free(path);
    path = llmq_path_join(dir, "config.json");
    if (!path || !(config = llmq_synth_shape_config(s, o->n_layers))) goto done;
    llmq_atomic_file af;
    if (llmq_atomic_open(&af, path) != LLMQ_OK) goto done;
    fputs(config, af.fp);
    fputc('\n', af.fp);
    rc = llmq_atomic_commit(&af);
done:
    for (size_t i = 0; p.t && i < p.n; i++) free(p.t[i].name);
    free(p.t); free(p.g); free(p.outlier); free(calib); free(eval); free(config); free(path);
    return rc;
}

int llmq_synth_shape_write(const char *dir, const char *name, int n_layers, uint64_t seed)
{
    const llmq_synth_shape *s = llmq_synth_shape_find(name);
    if (!s) return LLMQ_ERR;
    llmq_synth_opts o;
    llmq_synth_defaults(&o);
    o.n_layers = n_layers;
    o.seed = seed;
    o.n_outliers = 8;
    o.calib_bytes = 1000000;
    o.eval_bytes = 300000;
    return llmq_synth_write_shape(dir, s, &o);
}
