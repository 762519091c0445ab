/* The resumable state of a quantize run: see state.h for the layout. */
#include "state.h"

#include "llmq/digest.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/kernels.h"
#include "llmq/version.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_FORMAT "llmq quantize state"
#define STATE_FORMAT_VERSION 1
#define LAYER_MAGIC "LLMQSTL1"
#define MAX_LAYER_HEADER (1u << 20)
#define GGUF_TMP "output.gguf.tmp"
#define HINT "run without --resume to start over"

struct llmq_qstate {
    char *dir;
    int dir_fd; /* holds the lock */
    char *gguf_tmp;
    char id[65];
    const llmq_quant_opts *opts;
    int n_layers;
    int layers_present; /* finished layers in the directory (resumed + written) */
    bool resumed;
};

/* ------------------------------------------------------------ helpers */


/* The same digest of a source tensor, read in 64 MiB pieces whose pages leave
 * the resident set once hashed: hashing a 70B checkpoint must not make the
 * process hold all of it. */
static void sha256_hex_streamed(const void *data, size_t n, char out[65])
{
    enum { PIECE = 64 << 20 };
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dn = 0;
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        llmq_sha256_hex(data, n, out);
        return;
    }
    const unsigned char *p = data;
    for (size_t at = 0; at < n; at += PIECE) {
        const size_t len = n - at < PIECE ? n - at : PIECE;
        EVP_DigestUpdate(md, p + at, len);
        llmq_release_pages(p + at, len);
    }
    EVP_DigestFinal_ex(md, d, &dn);
    EVP_MD_CTX_free(md);
    llmq_hex(d, dn, out);
}

/* sha256 of the running executable, which holds this library: a build of
 * llmq whose code differs may round differently even under the same version. */
static const char *build_id(void)
{
    static char id[65];
    if (id[0]) return id;
    size_t n = 0;
    char *exe = llmq_read_file("/proc/self/exe", 0, &n);
    if (exe) llmq_sha256_hex(exe, n, id);
    else snprintf(id, sizeof id, "unknown");
    free(exe);
    llmq_clear_error();
    return id;
}

static void notice(const llmq_qstate *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notice(const llmq_qstate *s, const char *fmt, ...)
{
    if (!s->opts->notice) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->opts->notice(s->opts->user, line);
}

static char *layer_path(const llmq_qstate *s, int layer)
{
    char name[32];
    snprintf(name, sizeof name, "layer-%05d.bin", layer);
    return llmq_path_join(s->dir, name);
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return llmq_error("%s: cannot open to sync: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 || errno == EINVAL ? LLMQ_OK : llmq_error("%s: fsync failed: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

/* Removes the directory's entries: all of them, or only leftover temp files. */
static int clear_dir(const llmq_qstate *s, bool only_temps)
{
    DIR *d = fdopendir(dup(s->dir_fd));
    if (!d) return llmq_error("%s: cannot list: %s", s->dir, strerror(errno));
    rewinddir(d);
    int rc = LLMQ_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (only_temps && !strstr(e->d_name, ".tmp")) continue;
        if (unlinkat(s->dir_fd, e->d_name, 0) != 0 && errno != ENOENT) {
            rc = llmq_error("%s/%s: cannot remove: %s", s->dir, e->d_name, strerror(errno));
            break;
        }
    }
    closedir(d);
    return rc;
}

/* Atomically replaces dir/name with data (temp file, fsync, rename, directory fsync). */
static int write_atomic(const llmq_qstate *s, const char *name, const void *const *parts, const size_t *sizes, int n_parts)
{
    char *path = llmq_path_join(s->dir, name);
    if (!path) return llmq_error("%s: out of memory", s->dir);
    llmq_atomic_file af;
    int rc = llmq_atomic_open(&af, path);
    if (rc == LLMQ_OK) {
        for (int i = 0; i < n_parts && rc == LLMQ_OK; i++)
            if (sizes[i] && fwrite(parts[i], 1, sizes[i], af.fp) != sizes[i])
                rc = llmq_error("%s: write failed: %s", path, strerror(errno));
        if (rc == LLMQ_OK) rc = llmq_atomic_commit(&af);
        else llmq_atomic_abort(&af);
    }
    if (rc == LLMQ_OK) rc = sync_dir(s->dir);
    free(path);
    return rc;
}

/* ------------------------------------------------------------ fingerprint */

static json_t *config_json(const llmq_model *m)
{
    const llmq_config *c = &m->cfg;
    char eps[32], theta[40], factor[40], lo[40], hi[40];
    snprintf(eps, sizeof eps, "%.9g", (double)c->rms_norm_eps);
    snprintf(theta, sizeof theta, "%.17g", c->rope_theta);
    snprintf(factor, sizeof factor, "%.17g", c->rope_factor);
    snprintf(lo, sizeof lo, "%.17g", c->rope_low_freq_factor);
    snprintf(hi, sizeof hi, "%.17g", c->rope_high_freq_factor);
    return json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:i, s:s, s:s, s:s, s:i, s:b, s:b, s:b, s:b, "
                     "s:i, s:i, s:i, s:b}",
                     "architecture", c->architecture, "model_type", c->model_type, "hidden_size", c->hidden_size,
                     "intermediate_size", c->intermediate_size, "num_hidden_layers", c->n_layers, "num_attention_heads",
                     c->n_heads, "num_key_value_heads", c->n_kv_heads, "head_dim", c->head_dim, "vocab_size",
                     c->vocab_size, "max_position_embeddings", c->max_position_embeddings, "rms_norm_eps", eps,
                     "rope_theta", theta, "rope_scaling", (int)c->rope_scaling, "rope_factor", factor,
                     "rope_low_freq_factor", lo, "rope_high_freq_factor", hi, "rope_original_max_position",
                     c->rope_original_max_position, "tie_word_embeddings", c->tie_word_embeddings, "qkv_bias",
                     c->qkv_bias, "o_bias", c->o_bias, "mlp_bias", c->mlp_bias, "sliding_window", c->sliding_window,
                     "bos_token_id", c->bos_token_id, "eos_token_id", c->eos_token_id, "rope_interleaved",
                     m->rope_interleaved);
}

static const char *type_or_default(int t) { return t < 0 ? "default" : llmq_type_get((llmq_type)t)->name; }

/* The options that change bytes, in the order a difference is reported. */
static json_t *params_json(const char *method_name, const llmq_quant_opts *o)
{
    json_t *p = json_object();
    char buf[80];
    json_object_set_new(p, "--method", json_string(method_name));
    json_object_set_new(p, "--type", json_string(o->policy.scheme.name));
    snprintf(buf, sizeof buf, "%d", o->policy.group_size);
    json_object_set_new(p, "--group-size", json_string(buf));
    json_object_set_new(p, "--keep-output", json_string(type_or_default(o->policy.keep_output)));
    json_object_set_new(p, "--keep-embed", json_string(type_or_default(o->policy.keep_embed)));
    json_object_set_new(p, "--rtn-search", json_string(o->rtn_search ? "on" : "off"));
    json_object_set_new(p, "--name", json_string(o->model_name && *o->model_name ? o->model_name : "model"));
    if (o->calib_sha256) {
        snprintf(buf, sizeof buf, "sha256 %s", o->calib_sha256);
        json_object_set_new(p, "--calib", json_string(buf));
        snprintf(buf, sizeof buf, "%d", o->calib_samples);
        json_object_set_new(p, "--calib-samples", json_string(buf));
    }
    for (int i = 0; i < o->n_params; i++) json_object_set_new(p, o->params[i].name, json_string(o->params[i].value));
    /* The arithmetic under the solver and the forward: another OpenBLAS kernel
     * family or llmq kernel table rounds differently, and a resumed file would
     * mix layers of two machines. */
    char *(*blas_config)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_config");
    snprintf(buf, sizeof buf, "%s; %s", llmq_blas_core(), blas_config ? blas_config() : "unknown BLAS");
    json_object_set_new(p, "BLAS kernels (OPENBLAS_CORETYPE, the OpenBLAS build)", json_string(buf));
    json_object_set_new(p, "llmq kernels (LLMQ_KERNEL)", json_string(llmq_kernel_name()));
    return p;
}

static json_t *fingerprint(const llmq_model *src, const char *method_name, const llmq_quant_opts *o,
                           const llmq_qstate_source *t, int n)
{
    char(*h)[65] = malloc((size_t)(n ? n : 1) * sizeof *h);
    if (!h) return NULL;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) sha256_hex_streamed(t[i].data, t[i].bytes, h[i]);
    json_t *tensors = json_object();
    for (int i = 0; i < n; i++) json_object_set_new(tensors, t[i].name, json_string(h[i]));
    free(h);
    return json_pack("{s:s, s:i, s:s, s:s, s:o, s:o, s:o}", "format", STATE_FORMAT, "format_version", STATE_FORMAT_VERSION,
                     "llmq_version", LLMQ_VERSION, "llmq_build", build_id(), "params", params_json(method_name, o), "config",
                     config_json(src), "tensors", tensors);
}

static void fingerprint_id(const json_t *fp, char out[65])
{
    char *s = json_dumps(fp, JSON_SORT_KEYS | JSON_COMPACT);
    llmq_sha256_hex(s ? s : "", s ? strlen(s) : 0, out);
    free(s);
}

static const char *str_or(const json_t *o, const char *key, const char *fallback)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : fallback;
}

/* A value for a message: "sha256 <64 hex>" cut to its first 16 digits. */
static const char *shown(const char *v, char *buf, size_t cap)
{
    if (strncmp(v, "sha256 ", 7) || strlen(v) < 7 + 16) return v;
    snprintf(buf, cap, "%.23s…", v);
    return buf;
}

/* The first difference between the recorded fingerprint and this run's, as
 * "what: now, then" (NULL when equal). */
static char *difference(const json_t *then, const json_t *now)
{
    char *msg = NULL;
    const char *key;
    json_t *v;
#define DIFF(...) return (asprintf(&msg, __VA_ARGS__) < 0 ? NULL : msg)
    if (json_integer_value(json_object_get(then, "format_version")) != STATE_FORMAT_VERSION)
        DIFF("the state has format version %lld, this llmq writes %d",
             (long long)json_integer_value(json_object_get(then, "format_version")), STATE_FORMAT_VERSION);
    const char *tv = str_or(then, "llmq_version", "?"), *tb = str_or(then, "llmq_build", "?");
    if (strcmp(tv, LLMQ_VERSION) || strcmp(tb, build_id()))
        DIFF("the state was written by llmq %s (build %.12s), this is llmq %s (build %.12s)", tv, tb, LLMQ_VERSION, build_id());
    const json_t *pt = json_object_get(then, "params"), *pn = json_object_get(now, "params");
    json_object_foreach((json_t *)pn, key, v) {
        const char *a = json_string_value(v), *b = json_string_value(json_object_get(pt, key));
        if (!b) DIFF("%s: %s now, not set in the interrupted run", key, a);
        char sa[32], sb[32];
        if (strcmp(a, b)) DIFF("%s: %s now, %s in the interrupted run", key, shown(a, sa, sizeof sa), shown(b, sb, sizeof sb));
    }
    json_object_foreach((json_t *)pt, key, v)
        if (!json_object_get(pn, key)) DIFF("%s: not set now, %s in the interrupted run", key, json_string_value(v) ? json_string_value(v) : "?");
    const json_t *ct = json_object_get(then, "config"), *cn = json_object_get(now, "config");
    json_object_foreach((json_t *)cn, key, v) {
        json_t *w = json_object_get(ct, key);
        if (!w || !json_equal(v, w)) {
            char *a = json_dumps(v, JSON_ENCODE_ANY), *b = w ? json_dumps(w, JSON_ENCODE_ANY) : NULL;
            int r = asprintf(&msg, "the source checkpoint differs: config %s is %s now, %s in the interrupted run", key, a ? a : "?",
                             b ? b : "absent");
            free(a);
            free(b);
            return r < 0 ? NULL : msg;
        }
    }
    const json_t *tt = json_object_get(then, "tensors"), *tn = json_object_get(now, "tensors");
    json_object_foreach((json_t *)tn, key, v) {
        const char *a = json_string_value(v), *b = json_string_value(json_object_get(tt, key));
        if (!b) DIFF("the source checkpoint differs: tensor %s is not in the interrupted run's", key);
        if (strcmp(a, b))
            DIFF("the source checkpoint differs: tensor %s has sha256 %.16s… now, %.16s… in the interrupted run", key, a, b);
    }
    json_object_foreach((json_t *)tt, key, v)
        if (!json_object_get(tn, key)) DIFF("the source checkpoint differs: tensor %s of the interrupted run is missing", key);
#undef DIFF
    return NULL;
}

/* ------------------------------------------------------------ open */

/* Opens and locks the state directory. *existed is false only when this call
 * created it AND holds its lock: the only case in which a failure may remove
 * it (two runs started together both miss it in stat, and the one that loses
 * the lock must not empty the winner's directory). */
static int take_dir(llmq_qstate *s, bool *existed)
{
    struct stat st;
    *existed = true;
    bool made = false;
    if (stat(s->dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return llmq_error("%s exists and is not a directory (the state of a resumable run goes there)", s->dir);
    } else if (mkdir(s->dir, 0755) == 0) {
        made = true;
    } else if (errno != EEXIST) {
        return llmq_error("%s: cannot create the state directory: %s", s->dir, strerror(errno));
    }
    s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dir_fd < 0) return llmq_error("%s: cannot open: %s", s->dir, strerror(errno));
    if (flock(s->dir_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(s->dir_fd);
        s->dir_fd = -1; /* not ours: the failure path must leave it alone */
        return llmq_error("%s: %s", s->dir, e == EWOULDBLOCK ? "another llmq quantize run writing the same output holds it" : strerror(e));
    }
    *existed = !made;
    return LLMQ_OK;
}

/* Finished layers in the directory: layer files 0..n-1 (strict: a later one after a gap is an error). */
static int count_layers(llmq_qstate *s, bool strict, int *n)
{
    int done = 0;
    for (int l = 0; l < s->n_layers; l++) {
        char *p = layer_path(s, l);
        if (!p) return llmq_error("%s: out of memory", s->dir);
        bool there = llmq_file_exists(p);
        free(p);
        if (there && done < l && strict)
            return llmq_error("%s: layer-%05d.bin is there but layer-%05d.bin is not: the state is damaged (" HINT ")", s->dir, l, done);
        if (there && done == l) done = l + 1;
    }
    *n = done;
    return LLMQ_OK;
}

static int write_manifest(llmq_qstate *s, json_t *fp, const char *out_path, const llmq_model *src)
{
    json_t *m = json_deep_copy(fp);
    json_object_set_new(m, "id", json_string(s->id));
    json_object_set_new(m, "output", json_string(out_path));
    json_object_set_new(m, "source_path", json_string(src->path ? src->path : ""));
    char *text = json_dumps(m, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(m);
    if (!text) return llmq_error("%s: out of memory", s->dir);
    size_t len = strlen(text);
    const void *parts[] = {text, "\n"};
    size_t sizes[] = {len, 1};
    int rc = write_atomic(s, "manifest.json", parts, sizes, 2);
    free(text);
    return rc;
}

int llmq_qstate_open(const char *out_path, bool resume, const llmq_model *src, const char *method_name,
                     const llmq_quant_opts *o, const llmq_qstate_source *sources, int n_sources, llmq_qstate **out,
                     int *done)
{
    *out = NULL;
    *done = 0;
    llmq_qstate *s = calloc(1, sizeof *s);
    if (!s) return llmq_error("%s: out of memory", out_path);
    s->dir_fd = -1;
    s->opts = o;
    s->n_layers = src->cfg.n_layers;
    size_t n = strlen(out_path) + 16;
    s->dir = malloc(n);
    json_t *fp = NULL, *then = NULL;
    int rc = LLMQ_ERR;
    bool existed = true;
    if (!s->dir) goto oom;
    snprintf(s->dir, n, "%s.partial", out_path);
    if (!(s->gguf_tmp = llmq_path_join(s->dir, GGUF_TMP))) goto oom;
    if (!(fp = fingerprint(src, method_name, o, sources, n_sources))) goto oom;
    fingerprint_id(fp, s->id);
    if (take_dir(s, &existed)) goto fail;

    char *manifest = llmq_path_join(s->dir, "manifest.json");
    if (!manifest) goto oom;
    bool have = llmq_file_exists(manifest);
    int present = 0;
    if (have && count_layers(s, resume, &present)) {
        free(manifest);
        goto fail;
    }
    if (resume && have) {
        json_error_t je;
        then = json_load_file(manifest, 0, &je);
        if (!then || !json_is_object(then)) {
            if (then) llmq_error("%s: not a JSON object: the state is damaged (" HINT ")", manifest);
            else llmq_error("%s: line %d: %s: the state is damaged (" HINT ")", manifest, je.line, je.text);
            free(manifest);
            goto fail;
        }
        if (strcmp(str_or(then, "format", ""), STATE_FORMAT)) {
            llmq_error("%s: format: not an llmq quantize state (" HINT ")", manifest);
            free(manifest);
            goto fail;
        }
        char *diff = difference(then, fp);
        if (diff || strcmp(str_or(then, "id", ""), s->id)) {
            if (diff) llmq_error("%s: cannot resume: %s (" HINT ")", s->dir, diff);
            else llmq_error("%s: id: does not match the fingerprint it records: the state is damaged (" HINT ")", manifest);
            free(diff);
            free(manifest);
            goto fail;
        }
        free(manifest);
        if (clear_dir(s, true)) goto fail;
        s->resumed = true;
        s->layers_present = *done = present;
        if (present == 0) notice(s, "the state in %s holds no finished layer: starting from the first", s->dir);
    } else {
        free(manifest);
        if (resume) notice(s, "no state to resume from in %s: starting from the first layer", s->dir);
        else if (present) notice(s, "discarding the state of an interrupted run in %s (%d of %d layers; --resume continues it)", s->dir, present, s->n_layers);
        if (clear_dir(s, false) || write_manifest(s, fp, out_path, src)) goto fail;
    }
    json_decref(fp);
    json_decref(then);
    *out = s;
    return LLMQ_OK;
oom:
    llmq_error("%s: out of memory", out_path);
fail:
    json_decref(fp);
    json_decref(then);
    if (!existed && s->dir_fd >= 0 && clear_dir(s, false) == LLMQ_OK) rmdir(s->dir); /* made here, holding nothing */
    if (s->dir_fd >= 0) close(s->dir_fd);
    free(s->gguf_tmp);
    free(s->dir);
    free(s);
    return rc;
}

const char *llmq_qstate_gguf_tmp(const llmq_qstate *s) { return s->gguf_tmp; }

/* ------------------------------------------------------------ layers */

int llmq_qstate_write_layer(llmq_qstate *s, int layer, const llmq_qstate_tensor *t, int n)
{
    json_t *h = json_object(), *arr = json_array();
    json_object_set_new(h, "state", json_string(s->id));
    json_object_set_new(h, "layer", json_integer(layer));
    for (int i = 0; i < n; i++) {
        char sha[65];
        llmq_sha256_hex(t[i].data, t[i].bytes, sha);
        char rel[48]; /* hex float: exact, and inf/nan survive */
        snprintf(rel, sizeof rel, "%a", t[i].rel_error);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:s, s:s}", "name", t[i].name, "type", llmq_type_get(t[i].type)->name,
                                             "bytes", (json_int_t)t[i].bytes, "sha256", sha, "rel_error", rel));
    }
    json_object_set_new(h, "tensors", arr);
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!text) return llmq_error("%s: out of memory", s->dir);
    uint32_t len = (uint32_t)strlen(text);
    const void **parts = malloc((size_t)(n + 3) * sizeof *parts);
    size_t *sizes = malloc((size_t)(n + 3) * sizeof *sizes);
    int rc = LLMQ_ERR;
    if (parts && sizes) {
        parts[0] = LAYER_MAGIC, sizes[0] = 8;
        parts[1] = &len, sizes[1] = 4;
        parts[2] = text, sizes[2] = len;
        for (int i = 0; i < n; i++) parts[3 + i] = t[i].data, sizes[3 + i] = t[i].bytes;
        char name[32];
        snprintf(name, sizeof name, "layer-%05d.bin", layer);
        rc = write_atomic(s, name, parts, sizes, n + 3);
        if (rc == LLMQ_OK) s->layers_present = layer + 1;
    } else {
        llmq_error("%s: out of memory", s->dir);
    }
    free(parts);
    free(sizes);
    free(text);
    return rc;
}

/* Reads n bytes into dst (or through a scratch buffer when dst is NULL), hashing them. */
static int read_hashed(FILE *fp, void *dst, size_t n, char out[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *scratch = dst ? NULL : malloc(1 << 20);
    int rc = md && (dst || scratch) && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 ? LLMQ_OK : LLMQ_ERR;
    for (size_t done = 0; rc == LLMQ_OK && done < n;) {
        size_t want = dst ? n - done : (n - done < (1u << 20) ? n - done : (1u << 20));
        unsigned char *p = dst ? (unsigned char *)dst + done : scratch;
        if (fread(p, 1, want, fp) != want || EVP_DigestUpdate(md, p, want) != 1) rc = LLMQ_ERR;
        done += want;
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dn = 0;
    if (rc == LLMQ_OK && EVP_DigestFinal_ex(md, d, &dn) != 1) rc = LLMQ_ERR;
    if (rc == LLMQ_OK) llmq_hex(d, dn, out);
    EVP_MD_CTX_free(md);
    free(scratch);
    return rc;
}

int llmq_qstate_read_layer(llmq_qstate *s, int layer, llmq_qstate_tensor *t, int n)
{
    char *path = layer_path(s, layer);
    if (!path) return llmq_error("%s: out of memory", s->dir);
    FILE *fp = fopen(path, "rb");
    json_t *h = NULL;
    char *text = NULL;
    int rc = LLMQ_ERR;
#define BAD(...)                                                                      \
    do {                                                                              \
        char what_[512];                                                              \
        snprintf(what_, sizeof what_, __VA_ARGS__);                                   \
        llmq_error("%s: %s: the state is damaged (" HINT ")", path, what_);           \
        goto done;                                                                    \
    } while (0)
    if (!fp) {
        llmq_error("%s: cannot open: %s", path, strerror(errno));
        goto done;
    }
    struct stat st;
    char magic[8];
    uint32_t len;
    if (fstat(fileno(fp), &st) != 0 || fread(magic, 1, 8, fp) != 8 || memcmp(magic, LAYER_MAGIC, 8)) BAD("magic: not a layer file");
    if (fread(&len, 4, 1, fp) != 1 || len == 0 || len > MAX_LAYER_HEADER) BAD("header length: %s", "out of range or truncated");
    if (!(text = malloc(len + 1))) {
        llmq_error("%s: out of memory", path);
        goto done;
    }
    if (fread(text, 1, len, fp) != len) BAD("header: truncated");
    text[len] = 0;
    json_error_t je;
    if (!(h = json_loads(text, 0, &je))) BAD("header: %s", je.text);
    if (strcmp(str_or(h, "state", ""), s->id)) BAD("state: belongs to another run's state");
    if (json_integer_value(json_object_get(h, "layer")) != layer) BAD("layer: not %d", layer);
    json_t *arr = json_object_get(h, "tensors");
    if ((int)json_array_size(arr) != n) BAD("tensors: %zu, not %d", json_array_size(arr), n);
    uint64_t total = 12 + (uint64_t)len;
    for (int i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        if (strcmp(str_or(e, "name", ""), t[i].name)) BAD("tensors[%d].name: '%s', not '%s'", i, str_or(e, "name", ""), t[i].name);
        if (strcmp(str_or(e, "type", ""), llmq_type_get(t[i].type)->name))
            BAD("%s: type %s, not %s", t[i].name, str_or(e, "type", "?"), llmq_type_get(t[i].type)->name);
        if ((uint64_t)json_integer_value(json_object_get(e, "bytes")) != t[i].bytes)
            BAD("%s: %lld bytes, not %zu", t[i].name, (long long)json_integer_value(json_object_get(e, "bytes")), t[i].bytes);
        const char *rel = str_or(e, "rel_error", "");
        char *end;
        strtod(rel, &end);
        if (!*rel || *end) BAD("%s: rel_error: not a number", t[i].name);
        total += t[i].bytes;
    }
    if ((uint64_t)st.st_size != total) BAD("size: %lld bytes, the header describes %llu", (long long)st.st_size, (unsigned long long)total);
    for (int i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        char sha[65];
        if (read_hashed(fp, t[i].data, t[i].bytes, sha)) BAD("%s: cannot read its bytes", t[i].name);
        if (strcmp(sha, str_or(e, "sha256", ""))) BAD("%s: sha256 %.16s… does not match the recorded %.16s…", t[i].name, sha, str_or(e, "sha256", ""));
        t[i].rel_error = strtod(str_or(e, "rel_error", ""), NULL);
    }
    rc = LLMQ_OK;
#undef BAD
done:
    if (fp) fclose(fp);
    json_decref(h);
    free(text);
    free(path);
    return rc;
}

/* ------------------------------------------------------------ end */

static void release(llmq_qstate *s)
{
    if (s->dir_fd >= 0) close(s->dir_fd);
    free(s->gguf_tmp);
    free(s->dir);
    free(s);
}

int llmq_qstate_finish(llmq_qstate *s)
{
    /* The output's rename must be durable before the state that could rebuild it goes. */
    char *out = strdup(s->dir);
    int rc = out ? LLMQ_OK : llmq_error("%s: out of memory", s->dir);
    if (out) {
        char *slash = strrchr(out, '/');
        if (slash == out) slash[1] = 0;
        else if (slash) *slash = 0;
        else snprintf(out, strlen(out) + 1, ".");
        rc = sync_dir(out);
        free(out);
    }
    if (rc == LLMQ_OK) rc = clear_dir(s, false);
    if (rc == LLMQ_OK && rmdir(s->dir) != 0) rc = llmq_error("%s: cannot remove: %s", s->dir, strerror(errno));
    release(s);
    return rc;
}

void llmq_qstate_close(llmq_qstate *s)
{
    if (!s) return;
    if (s->layers_present == 0 && !s->resumed && clear_dir(s, false) == LLMQ_OK) rmdir(s->dir);
    else clear_dir(s, true);
    release(s);
}
