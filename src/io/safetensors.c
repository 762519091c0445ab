#include "llmq/safetensors.h"
#include "llmq/error.h"
#include "llmq/file.h"

#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* A header longer than this is refused before it is parsed (the format's own
 * reference implementation caps it at 100 MB). */
#define MAX_HEADER_BYTES (100u << 20)

struct llmq_safetensors {
    llmq_mapped_file *files; /* one per shard */
    size_t n_files;
    llmq_st_tensor *tensors;
    size_t n_tensors;
};

static int dtype_from_name(const char *s)
{
    if (!strcmp(s, "F32")) return LLMQ_TYPE_F32;
    if (!strcmp(s, "F16")) return LLMQ_TYPE_F16;
    if (!strcmp(s, "BF16")) return LLMQ_TYPE_BF16;
    if (!strcmp(s, "I32")) return LLMQ_TYPE_I32;
    return -1;
}

typedef struct {
    size_t begin, end;
    size_t index;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Parses one shard's header and appends its tensors to st. */
static int parse_file(llmq_safetensors *st, const unsigned char *data, size_t size, const char *fname)
{
    if (size < 8) return llmq_error("%s: file is %zu bytes, too short for the 8-byte header length", fname, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    if (hlen > MAX_HEADER_BYTES)
        return llmq_error("%s: header length %llu exceeds the %u-byte limit", fname, (unsigned long long)hlen, MAX_HEADER_BYTES);
    if (hlen > size - 8)
        return llmq_error("%s: header length %llu runs past the end of the file (%zu bytes)", fname, (unsigned long long)hlen, size);
    if (hlen < 2 || data[8] != '{') return llmq_error("%s: header is not a JSON object", fname);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return llmq_error("%s: header JSON is invalid at byte %d: %s", fname, jerr.position, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return llmq_error("%s: header is not a JSON object", fname);
    }
    const unsigned char *body = data + 8 + hlen;
    size_t body_size = size - 8 - (size_t)hlen;
    size_t n_new = json_object_size(root);
    llmq_st_tensor *grown = realloc(st->tensors, (st->n_tensors + n_new) * sizeof *grown);
    span *spans = malloc((n_new ? n_new : 1) * sizeof *spans);
    if (!grown || !spans) {
        free(spans);
        if (grown) st->tensors = grown;
        json_decref(root);
        return llmq_error("%s: out of memory for %zu tensors", fname, n_new);
    }
    st->tensors = grown;
    size_t n_spans = 0;
    const char *key;
    json_t *val;
    int rc = LLMQ_OK;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) { rc = llmq_error("%s: __metadata__ is not an object", fname); break; }
            continue;
        }
        if (!json_is_object(val)) { rc = llmq_error("%s: tensor '%s': entry is not an object", fname, key); break; }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"), *jo = json_object_get(val, "data_offsets");
        if (!json_is_string(jd)) { rc = llmq_error("%s: tensor '%s': field 'dtype' missing or not a string", fname, key); break; }
        int type = dtype_from_name(json_string_value(jd));
        if (type < 0) {
            rc = llmq_error("%s: tensor '%s': dtype '%s' is not supported (F32, F16, BF16 and I32 are)", fname, key, json_string_value(jd));
            break;
        }
        if (!json_is_array(js) || json_array_size(js) > LLMQ_ST_MAX_DIMS) {
            rc = llmq_error("%s: tensor '%s': field 'shape' missing, not an array or over %d dims", fname, key, LLMQ_ST_MAX_DIMS);
            break;
        }
        if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
            !json_is_integer(json_array_get(jo, 1))) {
            rc = llmq_error("%s: tensor '%s': field 'data_offsets' must be [begin, end]", fname, key);
            break;
        }
        llmq_st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof *t);
        t->type = (llmq_type)type;
        t->n_dims = (int)json_array_size(js);
        int64_t n_el = 1;
        for (int d = 0; d < t->n_dims; d++) {
            json_t *jv = json_array_get(js, (size_t)d);
            json_int_t v = json_is_integer(jv) ? json_integer_value(jv) : -1;
            if (v < 0 || (v > 0 && n_el > (INT64_C(1) << 48) / v)) {
                rc = llmq_error("%s: tensor '%s': field 'shape' has an invalid dimension", fname, key);
                break;
            }
            t->shape[d] = v;
            n_el *= v;
        }
        if (rc != LLMQ_OK) break;
        t->n_elements = n_el;
        json_int_t b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
        if (b < 0 || e < b || (uint64_t)e > body_size) {
            rc = llmq_error("%s: tensor '%s': data_offsets [%lld, %lld] outside the %zu-byte data area", fname, key,
                            (long long)b, (long long)e, body_size);
            break;
        }
        size_t want = (size_t)n_el * llmq_type_get(type)->type_size;
        if ((size_t)(e - b) != want) {
            rc = llmq_error("%s: tensor '%s': shape needs %zu bytes but data_offsets span %lld", fname, key, want, (long long)(e - b));
            break;
        }
        t->data = body + b;
        t->n_bytes = want;
        t->file = fname;
        t->name = strdup(key);
        if (!t->name) { rc = llmq_error("%s: out of memory", fname); break; }
        spans[n_spans++] = (span){(size_t)b, (size_t)e, st->n_tensors};
        st->n_tensors++;
    }
    if (rc == LLMQ_OK) {
        qsort(spans, n_spans, sizeof *spans, cmp_span);
        for (size_t i = 1; i < n_spans; i++)
            if (spans[i].begin < spans[i - 1].end && spans[i].end > spans[i].begin) {
                rc = llmq_error("%s: tensors '%s' and '%s' overlap in the data area", fname,
                                st->tensors[spans[i - 1].index].name, st->tensors[spans[i].index].name);
                break;
            }
    }
    free(spans);
    json_decref(root);
    return rc;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int add_shard(llmq_safetensors *st, const char *path)
{
    llmq_mapped_file *grown = realloc(st->files, (st->n_files + 1) * sizeof *grown);
    if (!grown) return llmq_error("%s: out of memory", path);
    st->files = grown;
    if (llmq_map_file(path, &st->files[st->n_files]) != LLMQ_OK) return LLMQ_ERR;
    llmq_mapped_file *f = &st->files[st->n_files++];
    return parse_file(st, f->data, f->size, f->path);
}

/* model.safetensors.index.json: {"weight_map": {tensor: shard file}}; every
 * shard is opened once and every tensor listed must be found in its shard. */
static int open_index(llmq_safetensors *st, const char *index_path)
{
    size_t len;
    char *text = llmq_read_file(index_path, 64u << 20, &len);
    if (!text) return LLMQ_ERR;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return llmq_error("%s: invalid JSON at line %d: %s", index_path, jerr.line, jerr.text);
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        json_decref(root);
        return llmq_error("%s: field 'weight_map' missing or not an object", index_path);
    }
    char *dir = strdup(index_path);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = '\0'; else strcpy(dir, "");
    int rc = LLMQ_OK;
    const char *key;
    json_t *val;
    /* Open the distinct shards in order of first mention. */
    json_object_foreach(map, key, val) {
        if (!json_is_string(val)) { rc = llmq_error("%s: weight_map['%s'] is not a string", index_path, key); break; }
        const char *shard = json_string_value(val);
        if (strchr(shard, '/') || strstr(shard, "..")) { rc = llmq_error("%s: weight_map['%s']: shard name '%s' is not a plain file name", index_path, key, shard); break; }
        char *p = llmq_path_join(*dir ? dir : ".", shard);
        int seen = 0;
        for (size_t i = 0; i < st->n_files; i++)
            if (!strcmp(st->files[i].path, p)) seen = 1;
        if (!seen) rc = add_shard(st, p);
        free(p);
        if (rc != LLMQ_OK) break;
    }
    if (rc == LLMQ_OK) {
        json_object_foreach(map, key, val) {
            const llmq_st_tensor *t = llmq_st_find(st, key);
            if (!t) { rc = llmq_error("%s: tensor '%s' is listed but no shard holds it", index_path, key); break; }
            if (!has_suffix(t->file, json_string_value(val))) {
                rc = llmq_error("%s: tensor '%s' is listed in %s but found in %s", index_path, key, json_string_value(val), t->file);
                break;
            }
        }
    }
    free(dir);
    json_decref(root);
    return rc;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Shards must not repeat a tensor. */
static int check_unique_names(llmq_safetensors *st, const char *path)
{
    const char **names = malloc((st->n_tensors ? st->n_tensors : 1) * sizeof *names);
    if (!names) return llmq_error("%s: out of memory", path);
    for (size_t i = 0; i < st->n_tensors; i++) names[i] = st->tensors[i].name;
    qsort(names, st->n_tensors, sizeof *names, cmp_name);
    int rc = LLMQ_OK;
    for (size_t i = 1; i < st->n_tensors; i++)
        if (!strcmp(names[i], names[i - 1])) {
            rc = llmq_error("%s: tensor '%s' appears in more than one shard", path, names[i]);
            break;
        }
    free(names);
    return rc;
}

/* The one *.safetensors file of dir (older AutoGPTQ checkpoints name theirs
 * gptq_model-4bit-128g.safetensors), malloc'd; NULL when there is none or more than one. */
static char *single_safetensors(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char *found = NULL;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (has_suffix(e->d_name, ".safetensors") && e->d_name[0] != '.' && n++ == 0) found = llmq_path_join(dir, e->d_name);
    closedir(d);
    if (n == 1) return found;
    free(found);
    return NULL;
}

llmq_safetensors *llmq_st_open(const char *path)
{
    llmq_safetensors *st = calloc(1, sizeof *st);
    if (!st) { llmq_error("%s: out of memory", path); return NULL; }
    int rc;
    if (llmq_is_dir(path)) {
        char *idx = llmq_path_join(path, "model.safetensors.index.json");
        char *single = llmq_path_join(path, "model.safetensors");
        if (!llmq_file_exists(single)) {
            free(single);
            single = single_safetensors(path);
        }
        if (llmq_file_exists(idx)) rc = open_index(st, idx);
        else if (single && llmq_file_exists(single)) rc = add_shard(st, single);
        else rc = llmq_error("%s: no model.safetensors or model.safetensors.index.json in this directory", path);
        free(idx);
        free(single);
    } else if (has_suffix(path, ".json")) {
        rc = open_index(st, path);
    } else {
        rc = add_shard(st, path);
    }
    if (rc == LLMQ_OK) rc = check_unique_names(st, path);
    if (rc != LLMQ_OK) {
        llmq_st_close(st);
        return NULL;
    }
    return st;
}

llmq_safetensors *llmq_st_open_memory(const void *data, size_t size, const char *name)
{
    llmq_safetensors *st = calloc(1, sizeof *st);
    if (!st) { llmq_error("%s: out of memory", name); return NULL; }
    if (parse_file(st, data, size, name) != LLMQ_OK) {
        llmq_st_close(st);
        return NULL;
    }
    return st;
}

void llmq_st_close(llmq_safetensors *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (size_t i = 0; i < st->n_files; i++) llmq_unmap_file(&st->files[i]);
    free(st->files);
    free(st);
}

size_t llmq_st_count(const llmq_safetensors *st) { return st->n_tensors; }

const llmq_st_tensor *llmq_st_at(const llmq_safetensors *st, size_t i)
{
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const llmq_st_tensor *llmq_st_find(const llmq_safetensors *st, const char *name)
{
    for (size_t i = 0; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

/* A value is NaN or Inf when its exponent bits are all ones (IEEE 754 binary32,
 * binary16, and bfloat16, which is binary32's top half). Elements are read with
 * memcpy: a safetensors data area need not be aligned. */
int llmq_st_check_finite(const llmq_st_tensor *t)
{
    if (t->type != LLMQ_TYPE_F32 && t->type != LLMQ_TYPE_F16 && t->type != LLMQ_TYPE_BF16)
        return llmq_error("%s: tensor '%s': type %d is not F32, F16 or BF16", t->file ? t->file : "?", t->name,
                          (int)t->type);
    const unsigned char *p = t->data;
    size_t size = t->type == LLMQ_TYPE_F32 ? 4 : 2;
    uint32_t exp_mask = t->type == LLMQ_TYPE_F32 ? 0x7f800000u : t->type == LLMQ_TYPE_F16 ? 0x7c00u : 0x7f80u;
    uint32_t mant_mask = t->type == LLMQ_TYPE_F32 ? 0x007fffffu : t->type == LLMQ_TYPE_F16 ? 0x03ffu : 0x007fu;
    for (size_t i = 0; i < (size_t)t->n_elements; i++) {
        uint32_t bits = 0;
        if (size == 4) memcpy(&bits, p + 4 * i, 4);
        else {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            bits = h;
        }
        if ((bits & exp_mask) != exp_mask) continue;
        const char *what = (bits & mant_mask) ? "NaN" : (bits >> (8 * size - 1)) ? "-Inf" : "+Inf";
        return llmq_error("%s: tensor '%s': element %zu is %s: refusing a checkpoint with non-finite weights",
                          t->file ? t->file : "?", t->name, i, what);
    }
    /* checked at load: its pages need not stay resident until the tensor is used */
    llmq_release_pages(t->data, (size_t)t->n_elements * size);
    return LLMQ_OK;
}

static const char *dtype_name(llmq_type t)
{
    return t == LLMQ_TYPE_F32 ? "F32" : t == LLMQ_TYPE_F16 ? "F16" : t == LLMQ_TYPE_BF16 ? "BF16" : t == LLMQ_TYPE_I32 ? "I32" : NULL;
}

#define FILL_CHUNK ((size_t)16 << 20)

/* fill NULL: the data comes from tensors[i].data. */
static int st_write(const char *path, const llmq_st_tensor *tensors, size_t n, const char *const *metadata,
                    llmq_st_fill_fn fill, void *user)
{
    json_t *root = json_object();
    if (metadata && metadata[0]) {
        json_t *meta = json_object();
        for (size_t i = 0; metadata[i] && metadata[i + 1]; i += 2) json_object_set_new(meta, metadata[i], json_string(metadata[i + 1]));
        json_object_set_new(root, "__metadata__", meta);
    }
    size_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const char *dn = dtype_name(tensors[i].type);
        if (!dn) {
            json_decref(root);
            return llmq_error("%s: tensor '%s': type %d cannot be stored in safetensors", path, tensors[i].name, (int)tensors[i].type);
        }
        json_t *shape = json_array();
        for (int d = 0; d < tensors[i].n_dims; d++) json_array_append_new(shape, json_integer(tensors[i].shape[d]));
        json_t *entry = json_pack("{s:s, s:o, s:[I,I]}", "dtype", dn, "shape", shape, "data_offsets",
                                  (json_int_t)offset, (json_int_t)(offset + tensors[i].n_bytes));
        json_object_set_new(root, tensors[i].name, entry);
        offset += tensors[i].n_bytes;
    }
    char *header = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!header) return llmq_error("%s: cannot encode the header", path);
    size_t hlen = strlen(header);
    size_t padded = (hlen + 7) & ~(size_t)7; /* keep the data area 8-byte aligned, padding with spaces */
    unsigned char *buf = NULL;
    if (fill && !(buf = malloc(FILL_CHUNK))) {
        free(header);
        return llmq_error("%s: out of memory", path);
    }
    llmq_atomic_file af;
    if (llmq_atomic_open(&af, path) != LLMQ_OK) {
        free(header);
        free(buf);
        return LLMQ_ERR;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = fwrite(len8, 1, 8, af.fp) == 8 && fwrite(header, 1, hlen, af.fp) == hlen, filled = 1;
    for (size_t i = hlen; ok && i < padded; i++) ok = fputc(' ', af.fp) != EOF;
    for (size_t i = 0; ok && filled && i < n; i++) {
        if (!fill) {
            ok = fwrite(tensors[i].data, 1, tensors[i].n_bytes, af.fp) == tensors[i].n_bytes;
            continue;
        }
        for (size_t at = 0; ok && filled && at < tensors[i].n_bytes; at += FILL_CHUNK) {
            size_t len = tensors[i].n_bytes - at < FILL_CHUNK ? tensors[i].n_bytes - at : FILL_CHUNK;
            filled = fill(user, i, at, buf, len) == LLMQ_OK;
            ok = filled && fwrite(buf, 1, len, af.fp) == len;
        }
    }
    free(header);
    free(buf);
    if (!ok) {
        llmq_atomic_abort(&af);
        return filled ? llmq_error("%s: write failed", path) : llmq_error_prefix("%s", path);
    }
    return llmq_atomic_commit(&af);
}

int llmq_st_write(const char *path, const llmq_st_tensor *tensors, size_t n, const char *const *metadata)
{
    return st_write(path, tensors, n, metadata, NULL, NULL);
}

int llmq_st_write_stream(const char *path, const llmq_st_tensor *tensors, size_t n, const char *const *metadata,
                         llmq_st_fill_fn fill, void *user)
{
    if (!fill) return llmq_error("%s: no fill function", path);
    return st_write(path, tensors, n, metadata, fill, user);
}
