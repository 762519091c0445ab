/* GGUF reader and writer; the format is described in include/llmq/gguf.h and
 * ggml's docs/gguf.md. The reader trusts nothing: every count and length is
 * checked against the bytes left in the file before it is used, so a lying
 * header costs an error message, not a huge allocation or a read past the map. */
#include "llmq/gguf.h"

#include "llmq/error.h"
#include "llmq/file.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "GGUF I/O assumes a little-endian host"
#endif

#define GGUF_MAGIC "GGUF"
#define GGUF_VERSION 3u
#define ALIGNMENT_KEY "general.alignment"

/* Smallest encodings, used to bound counts by the bytes left: a kv is a key
 * length, a type and at least one value byte; a tensor info is a name length,
 * n_dims, type and offset. */
#define MIN_KV_BYTES (8 + 4 + 1)
#define MIN_TENSOR_INFO_BYTES (8 + 4 + 4 + 8)

static const char *const type_names[LLMQ_GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

/* Bytes per value of the fixed-size types (0 for string and array). */
static const size_t type_sizes[LLMQ_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *llmq_gguf_type_name(int type)
{
    return type >= 0 && type < LLMQ_GGUF_TYPE_COUNT ? type_names[type] : "?";
}

static uint64_t align_up(uint64_t x, uint64_t alignment)
{
    return (x + alignment - 1) & ~(alignment - 1);
}

static bool is_power_of_two(uint64_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* Writes a name from the file into a message: at most 64 bytes, control
 * characters as '?', "..." when cut. */
static void quote_bytes(char *dst, size_t cap, const char *s, size_t len)
{
    size_t shown = len < 64 ? len : 64, k = 0;
    for (size_t i = 0; i < shown && k + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[k++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (shown < len && k + 4 < cap) {
        memcpy(dst + k, "...", 3);
        k += 3;
    }
    dst[k] = '\0';
}

/* ------------------------------------------------------------------ reader */

typedef struct {
    size_t off; /* into the arena */
    size_t len; /* bytes, without the NUL the arena adds */
} str_ref;

typedef struct {
    uint64_t key; /* index into strs */
    llmq_gguf_type type;
    llmq_gguf_type elem_type; /* type of the values: the element type for an array */
    uint64_t count;           /* number of values: 1 for a scalar */
    const unsigned char *raw; /* fixed-size values: the first one, inside the map */
    uint64_t first_str;       /* string values: index of the first one in strs */
} gguf_kv;

typedef struct {
    llmq_gguf_tensor t; /* first, so &rec->t is what the API hands out */
    uint64_t name;      /* index into strs */
} tensor_rec;

/* Open-addressing hash of names (keys or tensor names) to entry indices. */
typedef struct {
    int64_t *entry;
    uint64_t *str;
    size_t mask;
} name_index;

struct llmq_gguf {
    char *name;
    llmq_mapped_file map; /* unused for open_memory */
    const unsigned char *data;
    size_t size;
    uint32_t version;
    uint32_t alignment;
    size_t data_offset;

    gguf_kv *kvs;
    int64_t n_kv;
    tensor_rec *tensors;
    int64_t n_tensors;
    name_index key_index, tensor_index;

    /* Every string of the file, copied with a terminating NUL. */
    char *arena;
    size_t arena_len, arena_cap;
    str_ref *strs;
    uint64_t n_strs, strs_cap;
};

static const char *str_at(const llmq_gguf *g, uint64_t s)
{
    return g->arena + g->strs[s].off;
}

static int push_string(llmq_gguf *g, const unsigned char *bytes, size_t len, uint64_t *index)
{
    if (g->n_strs == g->strs_cap) {
        uint64_t cap = g->strs_cap ? 2 * g->strs_cap : 256;
        str_ref *p = realloc(g->strs, cap * sizeof *p);
        if (!p) return llmq_error("%s: out of memory for %" PRIu64 " strings", g->name, cap);
        g->strs = p;
        g->strs_cap = cap;
    }
    if (g->arena_cap - g->arena_len < len + 1) {
        size_t cap = g->arena_cap ? g->arena_cap : 4096;
        while (cap - g->arena_len < len + 1) cap *= 2;
        char *p = realloc(g->arena, cap);
        if (!p) return llmq_error("%s: out of memory for %zu bytes of strings", g->name, cap);
        g->arena = p;
        g->arena_cap = cap;
    }
    if (len) memcpy(g->arena + g->arena_len, bytes, len);
    g->arena[g->arena_len + len] = '\0';
    g->strs[g->n_strs] = (str_ref){g->arena_len, len};
    g->arena_len += len + 1;
    *index = g->n_strs++;
    return LLMQ_OK;
}

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int index_init(name_index *ix, uint64_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    ix->entry = malloc(cap * sizeof *ix->entry);
    ix->str = malloc(cap * sizeof *ix->str);
    if (!ix->entry || !ix->str) return LLMQ_ERR;
    for (size_t i = 0; i < cap; i++) ix->entry[i] = -1;
    ix->mask = cap - 1;
    return LLMQ_OK;
}

static void index_free(name_index *ix)
{
    free(ix->entry);
    free(ix->str);
}

/* The slot holding s, or the empty slot where it belongs. */
static size_t index_slot(const llmq_gguf *g, const name_index *ix, const char *s, size_t len)
{
    size_t i = (size_t)hash_bytes(s, len) & ix->mask;
    while (ix->entry[i] >= 0) {
        const str_ref *r = &g->strs[ix->str[i]];
        if (r->len == len && memcmp(g->arena + r->off, s, len) == 0) break;
        i = (i + 1) & ix->mask;
    }
    return i;
}

static int64_t index_find(const llmq_gguf *g, const name_index *ix, const char *s, size_t len)
{
    if (!ix->entry) return -1;
    return ix->entry[index_slot(g, ix, s, len)];
}

typedef struct {
    llmq_gguf *g;
    size_t pos;
    char where[128]; /* the field being read, for messages: "key 'x'", "tensor #3" */
} parser;

__attribute__((format(printf, 2, 3))) static int fail(parser *ps, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return llmq_error("%s: %s: %s", ps->g->name, ps->where, msg);
}

static size_t bytes_left(const parser *ps)
{
    return ps->g->size - ps->pos;
}

static int take(parser *ps, size_t n, const char *what, const unsigned char **out)
{
    if (bytes_left(ps) < n)
        return fail(ps, "file ends while reading %s (%zu bytes left at offset %zu, %zu needed)", what,
                    bytes_left(ps), ps->pos, n);
    *out = ps->g->data + ps->pos;
    ps->pos += n;
    return LLMQ_OK;
}

static int read_u32(parser *ps, const char *what, uint32_t *v)
{
    const unsigned char *p = NULL;
    if (take(ps, 4, what, &p)) return LLMQ_ERR;
    memcpy(v, p, 4);
    return LLMQ_OK;
}

static int read_u64(parser *ps, const char *what, uint64_t *v)
{
    const unsigned char *p = NULL;
    if (take(ps, 8, what, &p)) return LLMQ_ERR;
    memcpy(v, p, 8);
    return LLMQ_OK;
}

/* Reads a string into the arena. element >= 0 numbers it in messages. */
static int read_string(parser *ps, const char *what, int64_t element, uint64_t *index)
{
    char label[64];
    if (element >= 0)
        snprintf(label, sizeof label, "%s %" PRId64, what, element);
    else
        snprintf(label, sizeof label, "%s", what);
    uint64_t len;
    if (read_u64(ps, label, &len)) return LLMQ_ERR;
    if (len > bytes_left(ps))
        return fail(ps, "%s: string length %" PRIu64 " exceeds the %zu bytes left in the file", label, len,
                    bytes_left(ps));
    const unsigned char *p = ps->g->data + ps->pos;
    ps->pos += (size_t)len;
    return push_string(ps->g, p, (size_t)len, index);
}

/* Reads the count values of kv (of type kv->elem_type). */
static int read_values(parser *ps, gguf_kv *kv)
{
    const bool is_array = kv->type == LLMQ_GGUF_ARRAY;
    if (kv->elem_type == LLMQ_GGUF_STRING) {
        if (is_array && kv->count > bytes_left(ps) / 8)
            return fail(ps, "%" PRIu64 " strings cannot fit in the %zu bytes left in the file", kv->count,
                        bytes_left(ps));
        kv->first_str = ps->g->n_strs;
        for (uint64_t j = 0; j < kv->count; j++) {
            uint64_t s;
            if (read_string(ps, is_array ? "element" : "value", is_array ? (int64_t)j : -1, &s))
                return LLMQ_ERR;
        }
        return LLMQ_OK;
    }
    size_t esize = type_sizes[kv->elem_type];
    if (kv->count > bytes_left(ps) / esize)
        return fail(ps, "%" PRIu64 " %s values need %s%" PRIu64 " bytes, only %zu are left in the file",
                    kv->count, type_names[kv->elem_type], kv->count > UINT64_MAX / esize ? "more than " : "",
                    kv->count > UINT64_MAX / esize ? UINT64_MAX : kv->count * esize, bytes_left(ps));
    if (take(ps, (size_t)kv->count * esize, "values", &kv->raw)) return LLMQ_ERR;
    if (kv->elem_type == LLMQ_GGUF_BOOL) {
        for (uint64_t j = 0; j < kv->count; j++) {
            if (kv->raw[j] > 1) {
                if (is_array)
                    return fail(ps, "element %" PRIu64 ": bool value %u is not 0 or 1", j, kv->raw[j]);
                return fail(ps, "bool value %u is not 0 or 1", kv->raw[j]);
            }
        }
    }
    return LLMQ_OK;
}

static void where_name(parser *ps, const char *kind, const llmq_gguf *g, uint64_t s)
{
    char q[80];
    quote_bytes(q, sizeof q, str_at(g, s), g->strs[s].len);
    snprintf(ps->where, sizeof ps->where, "%s '%s'", kind, q);
}

static int parse_kv(parser *ps, int64_t i)
{
    llmq_gguf *g = ps->g;
    gguf_kv *kv = &g->kvs[i];
    snprintf(ps->where, sizeof ps->where, "key #%" PRId64, i);
    if (read_string(ps, "key", -1, &kv->key)) return LLMQ_ERR;
    where_name(ps, "key", g, kv->key);
    const str_ref *k = &g->strs[kv->key];
    if (memchr(g->arena + k->off, '\0', k->len)) return fail(ps, "the key contains a NUL byte");
    size_t slot = index_slot(g, &g->key_index, g->arena + k->off, k->len);
    if (g->key_index.entry[slot] >= 0)
        return fail(ps, "duplicate key (first defined by key #%" PRId64 ")", g->key_index.entry[slot]);
    g->key_index.entry[slot] = i;
    g->key_index.str[slot] = kv->key;

    uint32_t type;
    if (read_u32(ps, "value type", &type)) return LLMQ_ERR;
    if (type >= LLMQ_GGUF_TYPE_COUNT) return fail(ps, "unknown value type %" PRIu32, type);
    kv->type = kv->elem_type = (llmq_gguf_type)type;
    kv->count = 1;
    if (type == LLMQ_GGUF_ARRAY) {
        uint32_t elem;
        if (read_u32(ps, "array element type", &elem)) return LLMQ_ERR;
        if (elem == LLMQ_GGUF_ARRAY)
            return fail(ps, "arrays of arrays are not supported (llama.cpp rejects them too)");
        if (elem >= LLMQ_GGUF_TYPE_COUNT) return fail(ps, "unknown array element type %" PRIu32, elem);
        kv->elem_type = (llmq_gguf_type)elem;
        if (read_u64(ps, "array length", &kv->count)) return LLMQ_ERR;
    }
    return read_values(ps, kv);
}

static int parse_tensor_info(parser *ps, int64_t i)
{
    llmq_gguf *g = ps->g;
    tensor_rec *rec = &g->tensors[i];
    llmq_gguf_tensor *t = &rec->t;
    snprintf(ps->where, sizeof ps->where, "tensor #%" PRId64, i);
    if (read_string(ps, "name", -1, &rec->name)) return LLMQ_ERR;
    const str_ref *nm = &g->strs[rec->name];
    if (nm->len >= LLMQ_GGUF_MAX_NAME)
        return fail(ps, "name is %zu bytes long, the limit is %d", nm->len, LLMQ_GGUF_MAX_NAME - 1);
    where_name(ps, "tensor", g, rec->name);
    if (memchr(g->arena + nm->off, '\0', nm->len)) return fail(ps, "the name contains a NUL byte");
    size_t slot = index_slot(g, &g->tensor_index, g->arena + nm->off, nm->len);
    if (g->tensor_index.entry[slot] >= 0)
        return fail(ps, "duplicate tensor name (first used by tensor #%" PRId64 ")", g->tensor_index.entry[slot]);
    g->tensor_index.entry[slot] = i;
    g->tensor_index.str[slot] = rec->name;

    uint32_t n_dims;
    if (read_u32(ps, "n_dims", &n_dims)) return LLMQ_ERR;
    if (n_dims > LLMQ_GGUF_MAX_DIMS)
        return fail(ps, "n_dims is %" PRIu32 ", at most %d are allowed", n_dims, LLMQ_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    t->n_elements = 1;
    for (int d = 0; d < LLMQ_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims) {
            char what[16];
            snprintf(what, sizeof what, "ne[%d]", d);
            if (read_u64(ps, what, &ne)) return LLMQ_ERR;
            if (ne == 0) return fail(ps, "ne[%d] is 0", d);
            if (ne > INT64_MAX) return fail(ps, "ne[%d] is %" PRIu64 ", too large", d, ne);
        }
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(t->n_elements, t->ne[d], &t->n_elements))
            return fail(ps, "the element count overflows 64 bits");
    }

    uint32_t type;
    if (read_u32(ps, "type", &type)) return LLMQ_ERR;
    const llmq_type_traits *tr = type < LLMQ_TYPE_COUNT ? llmq_type_get((int)type) : NULL;
    if (!tr || llmq_type_internal((int)type)) return fail(ps, "unknown tensor type id %" PRIu32, type);
    t->type = (llmq_type)type;
    if (t->ne[0] % tr->block_size != 0)
        return fail(ps, "row length ne[0]=%" PRId64 " is not a multiple of the %s block size %d", t->ne[0],
                    tr->name, tr->block_size);
    uint64_t bytes;
    if (__builtin_mul_overflow((uint64_t)(t->n_elements / tr->block_size), (uint64_t)tr->type_size, &bytes) ||
        bytes > g->size)
        return fail(ps, "%" PRId64 " %s elements need more bytes than the file has (%zu)", t->n_elements,
                    tr->name, g->size);
    t->size = (size_t)bytes;

    if (read_u64(ps, "offset", &t->offset)) return LLMQ_ERR;
    if (t->offset % g->alignment != 0)
        return fail(ps, "offset %" PRIu64 " is not a multiple of the alignment %" PRIu32, t->offset, g->alignment);
    return LLMQ_OK;
}

static int compare_by_offset(const void *a, const void *b)
{
    const tensor_rec *x = *(tensor_rec *const *)a, *y = *(tensor_rec *const *)b;
    return x->t.offset < y->t.offset ? -1 : x->t.offset > y->t.offset;
}

/* Data inside the file, tensors disjoint. */
static int check_placement(parser *ps)
{
    llmq_gguf *g = ps->g;
    uint64_t start = align_up(ps->pos, g->alignment);
    if (g->n_tensors == 0) {
        /* Files without tensors may end right after the metadata (the
         * llama.cpp vocab files do). */
        g->data_offset = start < g->size ? (size_t)start : g->size;
        return LLMQ_OK;
    }
    snprintf(ps->where, sizeof ps->where, "data section");
    if (start > g->size)
        return fail(ps, "starts at offset %" PRIu64 ", past the end of the file (%zu bytes)", start, g->size);
    g->data_offset = (size_t)start;
    uint64_t avail = g->size - start;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        llmq_gguf_tensor *t = &g->tensors[i].t;
        if (t->offset > avail || t->size > avail - t->offset) {
            where_name(ps, "tensor", g, g->tensors[i].name);
            return fail(ps, "offset %" PRIu64 " + %zu bytes runs past the end of the file (the data section holds "
                        "%" PRIu64 " bytes)", t->offset, t->size, avail);
        }
        t->data = g->data + start + t->offset;
    }
    tensor_rec **order = malloc((size_t)g->n_tensors * sizeof *order);
    if (!order) return fail(ps, "out of memory");
    for (int64_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, (size_t)g->n_tensors, sizeof *order, compare_by_offset);
    int rc = LLMQ_OK;
    for (int64_t i = 1; i < g->n_tensors && rc == LLMQ_OK; i++) {
        const tensor_rec *a = order[i - 1], *b = order[i];
        if (a->t.offset + a->t.size > b->t.offset) {
            char qa[80];
            quote_bytes(qa, sizeof qa, str_at(g, a->name), g->strs[a->name].len);
            where_name(ps, "tensor", g, b->name);
            rc = fail(ps, "data at offset %" PRIu64 " overlaps tensor '%s' (offset %" PRIu64 ", %zu bytes)",
                      b->t.offset, qa, a->t.offset, a->t.size);
        }
    }
    free(order);
    return rc;
}

static int parse_header(parser *ps, uint64_t *n_tensors, uint64_t *n_kv)
{
    llmq_gguf *g = ps->g;
    snprintf(ps->where, sizeof ps->where, "header");
    const unsigned char *magic = NULL;
    if (take(ps, 4, "the magic", &magic)) return LLMQ_ERR;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0) {
        char q[8];
        quote_bytes(q, sizeof q, (const char *)magic, 4);
        return fail(ps, "not a GGUF file (magic '%s', expected 'GGUF')", q);
    }
    if (read_u32(ps, "the version", &g->version)) return LLMQ_ERR;
    if (g->version == 1)
        return fail(ps, "GGUF version 1 is not supported (it has 32-bit counts); convert the file with a newer llama.cpp");
    if (g->version != 0 && (g->version & 0xffffu) == 0)
        return fail(ps, "version 0x%08" PRIx32 " looks byte-swapped: big-endian GGUF files are not supported",
                    g->version);
    if (g->version != 2 && g->version != GGUF_VERSION)
        return fail(ps, "unsupported version %" PRIu32 " (llmq reads versions 2 and 3)", g->version);
    if (read_u64(ps, "the tensor count", n_tensors) || read_u64(ps, "the kv count", n_kv)) return LLMQ_ERR;
    size_t left = bytes_left(ps);
    if (*n_kv > left / MIN_KV_BYTES)
        return fail(ps, "kv count %" PRIu64 " cannot fit in the %zu bytes after the header", *n_kv, left);
    if (*n_tensors > left / MIN_TENSOR_INFO_BYTES ||
        *n_tensors * MIN_TENSOR_INFO_BYTES > left - *n_kv * MIN_KV_BYTES)
        return fail(ps, "tensor count %" PRIu64 " cannot fit in the %zu bytes after the header", *n_tensors, left);
    return LLMQ_OK;
}

static int parse(llmq_gguf *g)
{
    parser ps = {.g = g};
    uint64_t n_tensors, n_kv;
    if (parse_header(&ps, &n_tensors, &n_kv)) return LLMQ_ERR;

    g->kvs = calloc(n_kv ? n_kv : 1, sizeof *g->kvs);
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    if (!g->kvs || !g->tensors || index_init(&g->key_index, n_kv) || index_init(&g->tensor_index, n_tensors))
        return fail(&ps, "out of memory for %" PRIu64 " keys and %" PRIu64 " tensors", n_kv, n_tensors);
    for (uint64_t i = 0; i < n_kv; i++) {
        if (parse_kv(&ps, (int64_t)i)) return LLMQ_ERR;
        g->n_kv++;
    }

    g->alignment = LLMQ_GGUF_DEFAULT_ALIGNMENT;
    int64_t a = llmq_gguf_find_key(g, ALIGNMENT_KEY);
    if (a >= 0) {
        snprintf(ps.where, sizeof ps.where, "key '%s'", ALIGNMENT_KEY);
        if (g->kvs[a].type != LLMQ_GGUF_U32)
            return fail(&ps, "has type %s, expected u32", type_names[g->kvs[a].type]);
        memcpy(&g->alignment, g->kvs[a].raw, 4);
        if (!is_power_of_two(g->alignment))
            return fail(&ps, "alignment %" PRIu32 " is not a power of two", g->alignment);
    }

    for (uint64_t i = 0; i < n_tensors; i++) {
        if (parse_tensor_info(&ps, (int64_t)i)) return LLMQ_ERR;
        g->n_tensors++;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) g->tensors[i].t.name = str_at(g, g->tensors[i].name);
    return check_placement(&ps);
}

static llmq_gguf *open_image(llmq_gguf *g)
{
    if (parse(g) != LLMQ_OK) {
        llmq_gguf_close(g);
        return NULL;
    }
    return g;
}

llmq_gguf *llmq_gguf_open(const char *path)
{
    llmq_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(path))) {
        free(g);
        llmq_error("%s: out of memory", path);
        return NULL;
    }
    if (llmq_map_file(path, &g->map) != LLMQ_OK) {
        llmq_gguf_close(g);
        return NULL;
    }
    g->data = g->map.data;
    g->size = g->map.size;
    return open_image(g);
}

llmq_gguf *llmq_gguf_open_memory(const void *data, size_t size, const char *name)
{
    if (!name) name = "<memory>";
    llmq_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(name))) {
        free(g);
        llmq_error("%s: out of memory", name);
        return NULL;
    }
    g->data = data;
    g->size = data ? size : 0;
    return open_image(g);
}

void llmq_gguf_close(llmq_gguf *g)
{
    if (!g) return;
    if (g->map.path) llmq_unmap_file(&g->map);
    index_free(&g->key_index);
    index_free(&g->tensor_index);
    free(g->kvs);
    free(g->tensors);
    free(g->arena);
    free(g->strs);
    free(g->name);
    free(g);
}

const char *llmq_gguf_name(const llmq_gguf *g) { return g->name; }
uint32_t llmq_gguf_version(const llmq_gguf *g) { return g->version; }
uint32_t llmq_gguf_alignment(const llmq_gguf *g) { return g->alignment; }
size_t llmq_gguf_data_offset(const llmq_gguf *g) { return g->data_offset; }
size_t llmq_gguf_file_size(const llmq_gguf *g) { return g->size; }
int64_t llmq_gguf_kv_count(const llmq_gguf *g) { return g->n_kv; }
int64_t llmq_gguf_tensor_count(const llmq_gguf *g) { return g->n_tensors; }

int64_t llmq_gguf_find_key(const llmq_gguf *g, const char *key)
{
    return index_find(g, &g->key_index, key, strlen(key));
}

static const gguf_kv *kv_at(const llmq_gguf *g, int64_t kv)
{
    if (kv < 0 || kv >= g->n_kv) {
        llmq_error("%s: key index %" PRId64 " out of range (%" PRId64 " keys)", g->name, kv, g->n_kv);
        return NULL;
    }
    return &g->kvs[kv];
}

const char *llmq_gguf_kv_key(const llmq_gguf *g, int64_t kv)
{
    const gguf_kv *k = kv_at(g, kv);
    return k ? str_at(g, k->key) : NULL;
}

llmq_gguf_type llmq_gguf_kv_type(const llmq_gguf *g, int64_t kv)
{
    const gguf_kv *k = kv_at(g, kv);
    return k ? k->type : LLMQ_GGUF_TYPE_COUNT;
}

/* Value j of kv (j < count; not for the array itself). */
static void decode(const llmq_gguf *g, const gguf_kv *kv, uint64_t j, llmq_gguf_value *out)
{
    memset(out, 0, sizeof *out);
    out->type = kv->elem_type;
    if (kv->elem_type == LLMQ_GGUF_STRING) {
        uint64_t s = kv->first_str + j;
        out->str.ptr = str_at(g, s);
        out->str.len = g->strs[s].len;
        return;
    }
    const unsigned char *p = kv->raw + j * type_sizes[kv->elem_type];
    switch (kv->elem_type) {
    case LLMQ_GGUF_U8: out->u = p[0]; break;
    case LLMQ_GGUF_I8: out->i = (int8_t)p[0]; break;
    case LLMQ_GGUF_BOOL: out->b = p[0] != 0; break;
    case LLMQ_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); out->u = v; } break;
    case LLMQ_GGUF_I16: { int16_t v; memcpy(&v, p, 2); out->i = v; } break;
    case LLMQ_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); out->u = v; } break;
    case LLMQ_GGUF_I32: { int32_t v; memcpy(&v, p, 4); out->i = v; } break;
    case LLMQ_GGUF_F32: { float v; memcpy(&v, p, 4); out->f = v; } break;
    case LLMQ_GGUF_U64: memcpy(&out->u, p, 8); break;
    case LLMQ_GGUF_I64: memcpy(&out->i, p, 8); break;
    case LLMQ_GGUF_F64: memcpy(&out->f, p, 8); break;
    default: break;
    }
}

int llmq_gguf_kv_value(const llmq_gguf *g, int64_t kv, llmq_gguf_value *out)
{
    const gguf_kv *k = kv_at(g, kv);
    if (!k) return LLMQ_ERR;
    if (k->type == LLMQ_GGUF_ARRAY) {
        memset(out, 0, sizeof *out);
        out->type = LLMQ_GGUF_ARRAY;
        out->arr.elem_type = k->elem_type;
        out->arr.count = k->count;
    } else {
        decode(g, k, 0, out);
    }
    return LLMQ_OK;
}

int llmq_gguf_arr_value(const llmq_gguf *g, int64_t kv, uint64_t i, llmq_gguf_value *out)
{
    const gguf_kv *k = kv_at(g, kv);
    if (!k) return LLMQ_ERR;
    if (k->type != LLMQ_GGUF_ARRAY)
        return llmq_error("%s: key '%s': not an array", g->name, str_at(g, k->key));
    if (i >= k->count)
        return llmq_error("%s: key '%s': element %" PRIu64 " out of range (%" PRIu64 " elements)", g->name,
                          str_at(g, k->key), i, k->count);
    decode(g, k, i, out);
    return LLMQ_OK;
}

const char *llmq_gguf_arr_str(const llmq_gguf *g, int64_t kv, uint64_t i, size_t *len)
{
    if (kv < 0 || kv >= g->n_kv) return NULL;
    const gguf_kv *k = &g->kvs[kv];
    if (k->type != LLMQ_GGUF_ARRAY || k->elem_type != LLMQ_GGUF_STRING || i >= k->count) return NULL;
    uint64_t s = k->first_str + i;
    if (len) *len = g->strs[s].len;
    return str_at(g, s);
}

/* The scalar at key, or a status with a message. */
static int lookup(const llmq_gguf *g, const char *key, llmq_gguf_value *v)
{
    int64_t kv = llmq_gguf_find_key(g, key);
    if (kv < 0) {
        llmq_error("%s: key '%s' is missing", g->name, key);
        return LLMQ_GGUF_ABSENT;
    }
    if (g->kvs[kv].type == LLMQ_GGUF_ARRAY) return llmq_error("%s: key '%s': is an array, expected a scalar", g->name, key);
    return llmq_gguf_kv_value(g, kv, v);
}

static int wrong_type(const llmq_gguf *g, const char *key, llmq_gguf_type have, const char *want)
{
    return llmq_error("%s: key '%s': has type %s, expected %s", g->name, key, type_names[have], want);
}

/* An integer value that fits [min, max], as a sign and a magnitude. */
static int get_int(const llmq_gguf *g, const char *key, const char *want, int64_t min, uint64_t max, bool *neg,
                   int64_t *si, uint64_t *ui)
{
    llmq_gguf_value v;
    int rc = lookup(g, key, &v);
    if (rc != LLMQ_OK) return rc;
    switch (v.type) {
    case LLMQ_GGUF_U8: case LLMQ_GGUF_U16: case LLMQ_GGUF_U32: case LLMQ_GGUF_U64:
        if (v.u > max)
            return llmq_error("%s: key '%s': value %" PRIu64 " does not fit in %s", g->name, key, v.u, want);
        *neg = false;
        *ui = v.u;
        return LLMQ_OK;
    case LLMQ_GGUF_I8: case LLMQ_GGUF_I16: case LLMQ_GGUF_I32: case LLMQ_GGUF_I64:
        if (v.i < min || (v.i > 0 && (uint64_t)v.i > max))
            return llmq_error("%s: key '%s': value %" PRId64 " does not fit in %s", g->name, key, v.i, want);
        *neg = v.i < 0;
        *si = v.i;
        *ui = v.i < 0 ? 0 : (uint64_t)v.i;
        return LLMQ_OK;
    default:
        return wrong_type(g, key, v.type, want);
    }
}

/* The four integer getters: get_int checks the range, the cast is exact. */
#define INT_GETTER(name, ctype, min, max)                                      \
    int llmq_gguf_get_##name(const llmq_gguf *g, const char *key, ctype *out) \
    {                                                                          \
        bool neg;                                                              \
        int64_t s;                                                             \
        uint64_t u;                                                            \
        int rc = get_int(g, key, #name, min, max, &neg, &s, &u);               \
        if (rc == LLMQ_OK) *out = neg ? (ctype)s : (ctype)u;                   \
        return rc;                                                             \
    }
INT_GETTER(u32, uint32_t, 0, UINT32_MAX)
INT_GETTER(i32, int32_t, INT32_MIN, INT32_MAX)
INT_GETTER(u64, uint64_t, 0, UINT64_MAX)
INT_GETTER(i64, int64_t, INT64_MIN, INT64_MAX)

int llmq_gguf_get_f64(const llmq_gguf *g, const char *key, double *out)
{
    llmq_gguf_value v;
    int rc = lookup(g, key, &v);
    if (rc != LLMQ_OK) return rc;
    if (v.type != LLMQ_GGUF_F32 && v.type != LLMQ_GGUF_F64) return wrong_type(g, key, v.type, "f64");
    *out = v.f;
    return LLMQ_OK;
}

int llmq_gguf_get_f32(const llmq_gguf *g, const char *key, float *out)
{
    llmq_gguf_value v;
    int rc = lookup(g, key, &v);
    if (rc != LLMQ_OK) return rc;
    if (v.type != LLMQ_GGUF_F32 && v.type != LLMQ_GGUF_F64) return wrong_type(g, key, v.type, "f32");
    /* f64 converts only when exact (NaN and infinities included). */
    if (v.type == LLMQ_GGUF_F64 && isfinite(v.f) && (fabs(v.f) > FLT_MAX || (double)(float)v.f != v.f))
        return llmq_error("%s: key '%s': f64 value %.17g is not exactly representable as f32", g->name, key, v.f);
    *out = (float)v.f;
    return LLMQ_OK;
}

int llmq_gguf_get_bool(const llmq_gguf *g, const char *key, bool *out)
{
    llmq_gguf_value v;
    int rc = lookup(g, key, &v);
    if (rc != LLMQ_OK) return rc;
    if (v.type != LLMQ_GGUF_BOOL) return wrong_type(g, key, v.type, "bool");
    *out = v.b;
    return LLMQ_OK;
}

int llmq_gguf_get_str(const llmq_gguf *g, const char *key, const char **out, size_t *len)
{
    llmq_gguf_value v;
    int rc = lookup(g, key, &v);
    if (rc != LLMQ_OK) return rc;
    if (v.type != LLMQ_GGUF_STRING) return wrong_type(g, key, v.type, "string");
    *out = v.str.ptr;
    if (len) *len = v.str.len;
    return LLMQ_OK;
}

int llmq_gguf_get_array(const llmq_gguf *g, const char *key, llmq_gguf_type elem_type, int64_t *kv,
                        uint64_t *count)
{
    int64_t i = llmq_gguf_find_key(g, key);
    if (i < 0) {
        llmq_error("%s: key '%s' is missing", g->name, key);
        return LLMQ_GGUF_ABSENT;
    }
    const gguf_kv *k = &g->kvs[i];
    if (k->type != LLMQ_GGUF_ARRAY || k->elem_type != elem_type) {
        char have[32];
        if (k->type == LLMQ_GGUF_ARRAY)
            snprintf(have, sizeof have, "array of %s", type_names[k->elem_type]);
        else
            snprintf(have, sizeof have, "%s", type_names[k->type]);
        return llmq_error("%s: key '%s': has type %s, expected array of %s", g->name, key, have,
                          llmq_gguf_type_name(elem_type));
    }
    *kv = i;
    if (count) *count = k->count;
    return LLMQ_OK;
}

const llmq_gguf_tensor *llmq_gguf_tensor_at(const llmq_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i].t : NULL;
}

int64_t llmq_gguf_find_tensor(const llmq_gguf *g, const char *name)
{
    return index_find(g, &g->tensor_index, name, strlen(name));
}

const llmq_gguf_tensor *llmq_gguf_get_tensor(const llmq_gguf *g, const char *name)
{
    int64_t i = llmq_gguf_find_tensor(g, name);
    if (i < 0) {
        llmq_error("%s: tensor '%s' is missing", g->name, name);
        return NULL;
    }
    return &g->tensors[i].t;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    char name[LLMQ_GGUF_MAX_NAME];
    llmq_type type;
    int n_dims;
    int64_t ne[LLMQ_GGUF_MAX_DIMS];
    uint64_t size, offset;
    bool written;
} writer_tensor;

typedef struct {
    unsigned char *p;
    size_t len, cap;
} byte_buf;

enum writer_state { DECLARING, WRITING, FAILED };

struct llmq_gguf_writer {
    char *path;
    enum writer_state state;
    uint32_t alignment;
    byte_buf kv_bytes; /* the serialized kv pairs */
    char **keys;
    int64_t n_kv, keys_cap;
    writer_tensor *tensors;
    int64_t n_tensors, tensors_cap;
    llmq_atomic_file out;
    char *tmp_path; /* NULL: <path>.tmp.<pid> */
    uint64_t data_start;
};

static int buf_put(byte_buf *b, const void *src, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) return LLMQ_ERR;
            cap *= 2;
        }
        unsigned char *p = realloc(b->p, cap);
        if (!p) return LLMQ_ERR;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return LLMQ_OK;
}

static int buf_u32(byte_buf *b, uint32_t v) { return buf_put(b, &v, 4); }
static int buf_u64(byte_buf *b, uint64_t v) { return buf_put(b, &v, 8); }
static int buf_str(byte_buf *b, const char *s)
{
    size_t n = strlen(s);
    return buf_u64(b, n) || buf_put(b, s, n);
}

llmq_gguf_writer *llmq_gguf_writer_new(const char *path)
{
    llmq_gguf_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        llmq_error("%s: out of memory", path);
        return NULL;
    }
    w->alignment = LLMQ_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

static int check_declaring(const llmq_gguf_writer *w, const char *what)
{
    if (w->state == DECLARING) return LLMQ_OK;
    if (w->state == FAILED) return llmq_error("%s: cannot %s: an earlier write failed", w->path, what);
    return llmq_error("%s: cannot %s after writing has begun", w->path, what);
}

int llmq_gguf_writer_set_temp_path(llmq_gguf_writer *w, const char *tmp_path)
{
    if (check_declaring(w, "set the temp path")) return LLMQ_ERR;
    char *p = strdup(tmp_path);
    if (!p) return llmq_error("%s: out of memory", w->path);
    free(w->tmp_path);
    w->tmp_path = p;
    return LLMQ_OK;
}

/* Appends one value of type t (not string or array) from its C object. */
static int put_scalar(byte_buf *b, llmq_gguf_type t, const void *value)
{
    if (t == LLMQ_GGUF_BOOL) {
        unsigned char byte = *(const bool *)value ? 1 : 0;
        return buf_put(b, &byte, 1);
    }
    return buf_put(b, value, type_sizes[t]);
}

static int add_kv(llmq_gguf_writer *w, const char *key, llmq_gguf_type type, llmq_gguf_type elem_type,
                  const void *value, uint64_t n)
{
    if (check_declaring(w, "add a key")) return LLMQ_ERR;
    if (!key || !*key) return llmq_error("%s: a key must be a non-empty string", w->path);
    if ((unsigned)elem_type >= LLMQ_GGUF_TYPE_COUNT || elem_type == LLMQ_GGUF_ARRAY)
        return llmq_error("%s: key '%s': cannot write a value of type %s", w->path, key,
                          llmq_gguf_type_name(elem_type));
    if (n > 0 && !value) return llmq_error("%s: key '%s': no values given", w->path, key);
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0) return llmq_error("%s: key '%s' added twice", w->path, key);
    uint32_t alignment = 0;
    if (strcmp(key, ALIGNMENT_KEY) == 0) {
        if (type != LLMQ_GGUF_U32) return llmq_error("%s: key '%s' must be a u32", w->path, key);
        memcpy(&alignment, value, 4);
        if (!is_power_of_two(alignment))
            return llmq_error("%s: key '%s': alignment %" PRIu32 " is not a power of two", w->path, key, alignment);
    }
    if (w->n_kv == w->keys_cap) {
        int64_t cap = w->keys_cap ? 2 * w->keys_cap : 32;
        char **p = realloc(w->keys, (size_t)cap * sizeof *p);
        if (!p) return llmq_error("%s: out of memory", w->path);
        w->keys = p;
        w->keys_cap = cap;
    }
    char *key_copy = strdup(key);
    if (!key_copy) return llmq_error("%s: out of memory", w->path);

    byte_buf *b = &w->kv_bytes;
    size_t mark = b->len;
    int rc = buf_str(b, key) || buf_u32(b, (uint32_t)type);
    if (type == LLMQ_GGUF_ARRAY) rc = rc || buf_u32(b, (uint32_t)elem_type) || buf_u64(b, n);
    for (uint64_t i = 0; i < n && rc == LLMQ_OK; i++) {
        if (elem_type == LLMQ_GGUF_STRING) {
            const char *s = ((const char *const *)value)[i];
            if (!s) {
                b->len = mark;
                free(key_copy);
                return llmq_error("%s: key '%s': string %" PRIu64 " is NULL", w->path, key, i);
            }
            rc = buf_str(b, s);
        } else if (elem_type == LLMQ_GGUF_BOOL) {
            rc = put_scalar(b, elem_type, (const bool *)value + i);
        } else {
            rc = put_scalar(b, elem_type, (const unsigned char *)value + i * type_sizes[elem_type]);
        }
    }
    if (rc != LLMQ_OK) {
        b->len = mark;
        free(key_copy);
        return llmq_error("%s: key '%s': out of memory", w->path, key);
    }
    w->keys[w->n_kv++] = key_copy;
    if (alignment) w->alignment = alignment;
    return LLMQ_OK;
}

int llmq_gguf_writer_add_scalar(llmq_gguf_writer *w, const char *key, llmq_gguf_type type, const void *value)
{
    if (type == LLMQ_GGUF_STRING || type == LLMQ_GGUF_ARRAY || (unsigned)type >= LLMQ_GGUF_TYPE_COUNT)
        return llmq_error("%s: key '%s': add_scalar takes a number or bool, not %s", w->path, key ? key : "",
                          llmq_gguf_type_name(type));
    if (!value) return llmq_error("%s: key '%s': no value given", w->path, key ? key : "");
    return add_kv(w, key, type, type, value, 1);
}

int llmq_gguf_writer_add_u32(llmq_gguf_writer *w, const char *key, uint32_t v)
{
    return llmq_gguf_writer_add_scalar(w, key, LLMQ_GGUF_U32, &v);
}

int llmq_gguf_writer_add_i32(llmq_gguf_writer *w, const char *key, int32_t v)
{
    return llmq_gguf_writer_add_scalar(w, key, LLMQ_GGUF_I32, &v);
}

int llmq_gguf_writer_add_u64(llmq_gguf_writer *w, const char *key, uint64_t v)
{
    return llmq_gguf_writer_add_scalar(w, key, LLMQ_GGUF_U64, &v);
}

int llmq_gguf_writer_add_i64(llmq_gguf_writer *w, const char *key, int64_t v)
{
    return llmq_gguf_writer_add_scalar(w, key, LLMQ_GGUF_I64, &v);
}

int llmq_gguf_writer_add_f32(llmq_gguf_writer *w, const char *key, float v)
{
    return llmq_gguf_writer_add_scalar(w, key, LLMQ_GGUF_F32, &v);
}

int llmq_gguf_writer_add_f64(llmq_gguf_writer *w, const char *key, double v)
{
    return llmq_gguf_writer_add_scalar(w, key, LLMQ_GGUF_F64, &v);
}

int llmq_gguf_writer_add_bool(llmq_gguf_writer *w, const char *key, bool v)
{
    return llmq_gguf_writer_add_scalar(w, key, LLMQ_GGUF_BOOL, &v);
}

int llmq_gguf_writer_add_str(llmq_gguf_writer *w, const char *key, const char *v)
{
    if (!v) return llmq_error("%s: key '%s': string is NULL", w->path, key ? key : "");
    return add_kv(w, key, LLMQ_GGUF_STRING, LLMQ_GGUF_STRING, &v, 1);
}

int llmq_gguf_writer_add_array(llmq_gguf_writer *w, const char *key, llmq_gguf_type elem_type, const void *elems,
                               uint64_t n)
{
    return add_kv(w, key, LLMQ_GGUF_ARRAY, elem_type, elems, n);
}

static writer_tensor *writer_find(const llmq_gguf_writer *w, const char *name)
{
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return &w->tensors[i];
    return NULL;
}

int llmq_gguf_writer_add_tensor(llmq_gguf_writer *w, const char *name, llmq_type type, int n_dims,
                                const int64_t *ne)
{
    if (check_declaring(w, "declare a tensor")) return LLMQ_ERR;
    if (!name || !*name) return llmq_error("%s: a tensor name must be a non-empty string", w->path);
    if (strlen(name) >= LLMQ_GGUF_MAX_NAME)
        return llmq_error("%s: tensor '%s': name is %zu bytes long, the limit is %d", w->path, name, strlen(name),
                          LLMQ_GGUF_MAX_NAME - 1);
    if (writer_find(w, name)) return llmq_error("%s: tensor '%s' declared twice", w->path, name);
    const llmq_type_traits *tr = llmq_type_get((int)type);
    if (!tr || llmq_type_internal((int)type)) return llmq_error("%s: tensor '%s': unknown type id %d", w->path, name, (int)type);
    if (n_dims < 1 || n_dims > LLMQ_GGUF_MAX_DIMS || !ne)
        return llmq_error("%s: tensor '%s': n_dims is %d, expected 1 to %d", w->path, name, n_dims,
                          LLMQ_GGUF_MAX_DIMS);
    writer_tensor t = {.type = type, .n_dims = n_dims};
    memcpy(t.name, name, strlen(name) + 1);
    int64_t n_elements = 1;
    for (int d = 0; d < LLMQ_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] <= 0)
            return llmq_error("%s: tensor '%s': ne[%d] is %" PRId64 ", must be positive", w->path, name, d, t.ne[d]);
        if (__builtin_mul_overflow(n_elements, t.ne[d], &n_elements))
            return llmq_error("%s: tensor '%s': the element count overflows 64 bits", w->path, name);
    }
    if (t.ne[0] % tr->block_size != 0)
        return llmq_error("%s: tensor '%s': row length ne[0]=%" PRId64 " is not a multiple of the %s block size %d",
                          w->path, name, t.ne[0], tr->name, tr->block_size);
    if (__builtin_mul_overflow((uint64_t)(n_elements / tr->block_size), (uint64_t)tr->type_size, &t.size) ||
        t.size > (uint64_t)INT64_MAX - w->alignment)
        return llmq_error("%s: tensor '%s': the byte size overflows", w->path, name);
    if (w->n_tensors == w->tensors_cap) {
        int64_t cap = w->tensors_cap ? 2 * w->tensors_cap : 64;
        writer_tensor *p = realloc(w->tensors, (size_t)cap * sizeof *p);
        if (!p) return llmq_error("%s: out of memory", w->path);
        w->tensors = p;
        w->tensors_cap = cap;
    }
    w->tensors[w->n_tensors++] = t;
    return LLMQ_OK;
}

size_t llmq_gguf_writer_tensor_size(const llmq_gguf_writer *w, const char *name)
{
    const writer_tensor *t = writer_find(w, name);
    return t ? (size_t)t->size : 0;
}

/* Marks the writer failed after an I/O error (errno describes it). */
static int io_failed(llmq_gguf_writer *w, const char *what)
{
    int e = errno;
    w->state = FAILED;
    return llmq_error("%s: %s failed: %s", w->path, what, e ? strerror(e) : "I/O error");
}

static int write_bytes(llmq_gguf_writer *w, const void *p, size_t n, const char *what)
{
    errno = 0;
    if (n && fwrite(p, 1, n, w->out.fp) != n) return io_failed(w, what);
    return LLMQ_OK;
}

static int write_zeros(llmq_gguf_writer *w, uint64_t n)
{
    static const unsigned char zeros[4096];
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (write_bytes(w, zeros, k, "writing padding")) return LLMQ_ERR;
        n -= k;
    }
    return LLMQ_OK;
}

int llmq_gguf_writer_begin(llmq_gguf_writer *w)
{
    if (check_declaring(w, "begin")) return LLMQ_ERR;
    /* Tensor infos, serialized, and the data layout: each tensor padded to
     * the alignment, as ggml's writer lays them out. */
    uint64_t offset = 0;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        w->tensors[i].offset = offset;
        if (__builtin_add_overflow(offset, align_up(w->tensors[i].size, w->alignment), &offset) ||
            offset > INT64_MAX / 2)
            return llmq_error("%s: the tensor data would take more than 2^62 bytes", w->path);
    }
    byte_buf infos = {0};
    int rc = LLMQ_OK;
    for (int64_t i = 0; i < w->n_tensors && rc == LLMQ_OK; i++) {
        const writer_tensor *t = &w->tensors[i];
        rc = buf_str(&infos, t->name) || buf_u32(&infos, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims && rc == LLMQ_OK; d++) rc = buf_u64(&infos, (uint64_t)t->ne[d]);
        rc = rc || buf_u32(&infos, (uint32_t)t->type) || buf_u64(&infos, t->offset);
    }
    if (rc != LLMQ_OK) {
        free(infos.p);
        return llmq_error("%s: out of memory for the tensor infos", w->path);
    }
    if (llmq_atomic_open_at(&w->out, w->path, w->tmp_path) != LLMQ_OK) {
        free(infos.p);
        return LLMQ_ERR;
    }
    uint64_t header_len = 4 + 4 + 8 + 8 + w->kv_bytes.len + infos.len;
    w->data_start = align_up(header_len, w->alignment);
    uint32_t version = GGUF_VERSION;
    uint64_t n_tensors = (uint64_t)w->n_tensors, n_kv = (uint64_t)w->n_kv;
    w->state = WRITING;
    rc = write_bytes(w, GGUF_MAGIC, 4, "writing the header") || write_bytes(w, &version, 4, "writing the header") ||
         write_bytes(w, &n_tensors, 8, "writing the header") || write_bytes(w, &n_kv, 8, "writing the header") ||
         write_bytes(w, w->kv_bytes.p, w->kv_bytes.len, "writing the metadata") ||
         write_bytes(w, infos.p, infos.len, "writing the tensor infos") || write_zeros(w, w->data_start - header_len);
    free(infos.p);
    return rc ? LLMQ_ERR : LLMQ_OK;
}

int llmq_gguf_writer_write_tensor(llmq_gguf_writer *w, const char *name, const void *data, size_t size)
{
    if (w->state != WRITING)
        return llmq_error("%s: cannot write tensor '%s': %s", w->path, name,
                          w->state == FAILED ? "an earlier write failed" : "begin has not been called");
    writer_tensor *t = writer_find(w, name);
    if (!t) return llmq_error("%s: tensor '%s' was not declared", w->path, name);
    if (t->written) return llmq_error("%s: tensor '%s' written twice", w->path, name);
    if (size != t->size)
        return llmq_error("%s: tensor '%s': got %zu bytes of data, its shape and type need %" PRIu64, w->path, name,
                          size, t->size);
    if (size > 0 && !data) return llmq_error("%s: tensor '%s': data is NULL", w->path, name);
    errno = 0;
    if (fseeko(w->out.fp, (off_t)(w->data_start + t->offset), SEEK_SET) != 0) return io_failed(w, "seeking");
    char what[LLMQ_GGUF_MAX_NAME + 32];
    snprintf(what, sizeof what, "writing tensor '%s'", name);
    if (write_bytes(w, data, size, what) || write_zeros(w, align_up(t->size, w->alignment) - t->size))
        return LLMQ_ERR;
    t->written = true;
    return LLMQ_OK;
}

static void writer_free(llmq_gguf_writer *w)
{
    for (int64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    free(w->kv_bytes.p);
    free(w->tensors);
    free(w->tmp_path);
    free(w->path);
    free(w);
}

void llmq_gguf_writer_abort(llmq_gguf_writer *w)
{
    if (!w) return;
    if (w->out.fp) llmq_atomic_abort(&w->out);
    writer_free(w);
}

int llmq_gguf_writer_finish(llmq_gguf_writer *w)
{
    if (w->state != WRITING) {
        llmq_error("%s: cannot finish: %s", w->path,
                   w->state == FAILED ? "an earlier write failed" : "begin has not been called");
        llmq_gguf_writer_abort(w);
        return LLMQ_ERR;
    }
    for (int64_t i = 0; i < w->n_tensors; i++) {
        if (!w->tensors[i].written) {
            llmq_error("%s: tensor '%s' was declared but its data was never written", w->path, w->tensors[i].name);
            llmq_gguf_writer_abort(w);
            return LLMQ_ERR;
        }
    }
    int rc = llmq_atomic_commit(&w->out); /* removes the temp file itself on failure */
    writer_free(w);
    return rc;
}
