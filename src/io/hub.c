/* Hub client: repo ids, file selection, the huggingface_hub cache layout and the
 * download orchestration. The HTTP side lives in hub_http.c.
 * Cache layout (huggingface_hub file_download.py, docs "manage-cache"):
 *   <cache>/models--{org}--{name}/blobs/<etag>            file contents
 *   <cache>/models--{org}--{name}/snapshots/<commit>/<path> -> ../../blobs/<etag>
 *   <cache>/models--{org}--{name}/refs/<rev>              commit hash
 *   <cache>/.locks/models--{org}--{name}/<etag>.lock       flock(2), as filelock does */
#include "hub_internal.h"

#include "llmq/error.h"
#include "llmq/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define API_MAX_BYTES (64u << 20)
#define INDEX_MAX_BYTES (64u << 20)
#define DEFAULT_JOBS 4

static char *xfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

/* ---- validation: everything the server or the user names ---------------- */

static int is_ctrl(unsigned char c) { return c < 0x20 || c == 0x7f; }

/* One half of a repo id, by huggingface_hub's validate_repo_id rules. */
static int valid_repo_part(const char *s, size_t n)
{
    if (n == 0 || n > 96) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.'))
            return 0;
        if (i + 1 < n && ((c == '-' && s[i + 1] == '-') || (c == '.' && s[i + 1] == '.'))) return 0;
    }
    return s[0] != '-' && s[0] != '.' && s[n - 1] != '-' && s[n - 1] != '.';
}

/* A branch, tag or commit: git ref-name rules, plus nothing that could climb
 * out of refs/ when used as a path. */
static int valid_revision(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n > 255 || r[0] == '/' || r[n - 1] == '/' || r[n - 1] == '.') return 0;
    if (strstr(r, "..") || strstr(r, "//") || strstr(r, "@{") || strstr(r, "/.")) return 0;
    if (r[0] == '.') return 0;
    for (const char *p = r; *p; p++)
        if (is_ctrl((unsigned char)*p) || strchr(" \\~^:?*[", *p)) return 0;
    return 1;
}

/* A file path inside a repo, as the server lists it: relative, no empty, "."
 * or ".." component, no backslash, no control character. */
static int valid_repo_path(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 4096 || p[0] == '/') return 0;
    for (const char *c = p; *c; c++)
        if (is_ctrl((unsigned char)*c) || *c == '\\') return 0;
    const char *start = p;
    for (;;) {
        const char *slash = strchr(start, '/');
        size_t len = slash ? (size_t)(slash - start) : strlen(start);
        if (len == 0 || (len == 1 && start[0] == '.') || (len == 2 && start[0] == '.' && start[1] == '.'))
            return 0;
        if (!slash) break;
        start = slash + 1;
    }
    return 1;
}

static int is_hex(const char *s, size_t n)
{
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

int llmq_hub_parse_repo_id(const char *arg, char **repo, char **revision)
{
    *repo = *revision = NULL;
    if (!arg || !*arg) return llmq_error("hub: empty repo id");
    const char *at = strchr(arg, '@');
    size_t rlen = at ? (size_t)(at - arg) : strlen(arg);
    const char *slash = memchr(arg, '/', rlen);
    if (!slash || memchr(slash + 1, '/', rlen - (size_t)(slash - arg) - 1) ||
        !valid_repo_part(arg, (size_t)(slash - arg)) ||
        !valid_repo_part(slash + 1, rlen - (size_t)(slash - arg) - 1)) {
        char shown[128];
        snprintf(shown, sizeof shown, "%.*s", (int)(rlen < 100 ? rlen : 100), arg);
        for (char *c = shown; *c; c++)
            if (is_ctrl((unsigned char)*c)) *c = '?';
        return llmq_error("hub: '%s' is not a repo id (org/name: letters, digits, '-', '_', '.'; no '..' or '--')",
                          shown);
    }
    const char *rev = at ? at + 1 : "main";
    if (!valid_revision(rev)) return llmq_error("hub: '%.*s': invalid revision", (int)rlen, arg);
    *repo = strndup(arg, rlen);
    *revision = strdup(rev);
    if (!*repo || !*revision) {
        free(*repo);
        free(*revision);
        *repo = *revision = NULL;
        return llmq_error("hub: out of memory");
    }
    return LLMQ_OK;
}

int llmq_hub_is_repo_id(const char *arg)
{
    struct stat st;
    if (!arg || stat(arg, &st) == 0) return 0;
    char *repo, *rev;
    if (llmq_hub_parse_repo_id(arg, &repo, &rev) != LLMQ_OK) {
        llmq_clear_error();
        return 0;
    }
    free(repo);
    free(rev);
    return 1;
}

void llmq_hub_options_init(llmq_hub_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->jobs = DEFAULT_JOBS;
}

/* ---- cache paths ------------------------------------------------------------ */

static int env_true(const char *name)
{
    const char *v = getenv(name);
    return v && (!strcmp(v, "1") || !strcasecmp(v, "ON") || !strcasecmp(v, "YES") || !strcasecmp(v, "TRUE"));
}

static char *expand_home(const char *p)
{
    const char *home = getenv("HOME");
    if (p[0] == '~' && (p[1] == '/' || p[1] == '\0') && home && *home) return xfmt("%s%s", home, p + 1);
    return strdup(p);
}

char *llmq_hub_cache_dir(void)
{
    const char *v = getenv("HF_HUB_CACHE");
    if (!v || !*v) v = getenv("HUGGINGFACE_HUB_CACHE");
    char *out = NULL;
    if (v && *v) {
        out = expand_home(v);
    } else {
        const char *home = getenv("HF_HOME"), *xdg = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
        if (home && *home) {
            char *e = expand_home(home);
            out = e ? xfmt("%s/hub", e) : NULL;
            free(e);
        } else if (xdg && *xdg) {
            out = xfmt("%s/huggingface/hub", xdg);
        } else if (h && *h) {
            out = xfmt("%s/.cache/huggingface/hub", h);
        } else {
            llmq_error("hub: no cache directory: set HF_HUB_CACHE or HF_HOME (HOME is unset)");
            return NULL;
        }
    }
    if (!out) llmq_error("hub: out of memory");
    return out;
}

static int mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p) return llmq_error("hub: out of memory");
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char keep = *s;
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int rc = llmq_error("%s: cannot create directory: %s", p, strerror(errno));
                free(p);
                return rc;
            }
            *s = keep;
            if (!keep) break;
        }
    }
    free(p);
    if (!llmq_is_dir(path)) return llmq_error("%s: exists and is not a directory", path);
    return LLMQ_OK;
}

/* Writes content to path through a temp file + rename (refs/<rev>, CACHEDIR.TAG). */
static int write_atomically(const char *path, const char *content)
{
    llmq_atomic_file af;
    if (llmq_atomic_open(&af, path) != LLMQ_OK) return LLMQ_ERR;
    if (fputs(content, af.fp) < 0) {
        llmq_atomic_abort(&af);
        return llmq_error("%s: write failed", path);
    }
    return llmq_atomic_commit(&af);
}

/* ---- the repo's file list ------------------------------------------------- */

typedef struct {
    char *name;  /* path in the repo */
    char *etag;  /* sha256 for LFS files, git blob sha1 otherwise */
    uint64_t size;
    int is_lfs;
    int selected;
    int fetched_early; /* the index, fetched before the main batch */
} hub_file;

typedef struct {
    char *repo, *revision, *commit;
    char *cache, *repo_dir, *snapshot_dir, *locks_dir;
    hub_file *files;
    size_t n_files;
} hub_repo;

static void hub_repo_free(hub_repo *r)
{
    free(r->repo);
    free(r->revision);
    free(r->commit);
    free(r->cache);
    free(r->repo_dir);
    free(r->snapshot_dir);
    free(r->locks_dir);
    for (size_t i = 0; i < r->n_files; i++) {
        free(r->files[i].name);
        free(r->files[i].etag);
    }
    free(r->files);
    memset(r, 0, sizeof *r);
}

static int set_commit(hub_repo *r, const char *commit)
{
    free(r->commit);
    free(r->snapshot_dir);
    r->commit = strdup(commit);
    r->snapshot_dir = xfmt("%s/snapshots/%s", r->repo_dir, commit);
    if (!r->commit || !r->snapshot_dir) return llmq_error("hub: out of memory");
    return LLMQ_OK;
}

/* Parses the answer of /api/models/{repo}/revision/{rev}?blobs=true. The whole
 * list is refused when one name could escape the snapshot directory. */
static int parse_repo_info(hub_repo *r, const char *body, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root) return llmq_error("%s: repo info is not JSON: %s (line %d)", r->repo, jerr.text, jerr.line);
    int rc = LLMQ_ERR;
    const char *sha = json_string_value(json_object_get(root, "sha"));
    json_t *sib = json_object_get(root, "siblings");
    if (!sha || !is_hex(sha, 40)) {
        llmq_error("%s: repo info: field 'sha' is not a 40-digit commit hash", r->repo);
        goto out;
    }
    if (!json_is_array(sib)) {
        llmq_error("%s: repo info: field 'siblings' is not a list", r->repo);
        goto out;
    }
    if (set_commit(r, sha) != LLMQ_OK) goto out;
    size_t n = json_array_size(sib);
    r->files = calloc(n ? n : 1, sizeof *r->files);
    if (!r->files) {
        llmq_error("hub: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(sib, i);
        const char *name = json_string_value(json_object_get(s, "rfilename"));
        if (!name) {
            llmq_error("%s: repo info: siblings[%zu] has no 'rfilename'", r->repo, i);
            goto out;
        }
        if (!valid_repo_path(name)) {
            char shown[160];
            snprintf(shown, sizeof shown, "%.150s", name);
            for (char *c = shown; *c; c++)
                if (is_ctrl((unsigned char)*c)) *c = '?';
            llmq_error("%s: repo info: refusing file name '%s' (absolute, '..', backslash or control "
                       "character): the server is not trustworthy", r->repo, shown);
            goto out;
        }
        hub_file *f = &r->files[r->n_files++];
        f->name = strdup(name);
        if (!f->name) {
            llmq_error("hub: out of memory");
            goto out;
        }
        json_t *lfs = json_object_get(s, "lfs");
        const char *etag = NULL;
        json_t *size = json_object_get(s, "size");
        if (json_is_object(lfs)) {
            f->is_lfs = 1;
            etag = json_string_value(json_object_get(lfs, "sha256"));
            if (json_is_integer(json_object_get(lfs, "size"))) size = json_object_get(lfs, "size");
            if (etag && !is_hex(etag, 64)) etag = NULL;
        } else {
            etag = json_string_value(json_object_get(s, "blobId"));
            if (etag && !is_hex(etag, 40)) etag = NULL;
        }
        /* Files without metadata are only an error if selected (checked later). */
        if (etag && json_is_integer(size) && json_integer_value(size) >= 0) {
            f->etag = strdup(etag);
            f->size = (uint64_t)json_integer_value(size);
            if (!f->etag) {
                llmq_error("hub: out of memory");
                goto out;
            }
        }
    }
    rc = LLMQ_OK;
out:
    json_decref(root);
    return rc;
}

/* ---- selection ------------------------------------------------------------ */

static const char *const default_meta[] = {
    "config.json",      "generation_config.json",  "tokenizer.json",
    "tokenizer_config.json", "tokenizer.model",    "special_tokens_map.json",
    "model.safetensors.index.json",
    "quantize_config.json", /* GPTQ checkpoints whose config.json has no quantization_config */
};
#define INDEX_NAME "model.safetensors.index.json"

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int is_default_meta(const char *name)
{
    for (size_t i = 0; i < sizeof default_meta / sizeof default_meta[0]; i++)
        if (!strcmp(name, default_meta[i])) return 1;
    return 0;
}

static int is_root_safetensors(const char *name) { return !strchr(name, '/') && has_suffix(name, ".safetensors"); }

static int is_pickle_weight(const char *name)
{
    return has_suffix(name, ".bin") || has_suffix(name, ".pt") || has_suffix(name, ".pth") ||
           has_suffix(name, ".ckpt") || has_suffix(name, ".pkl");
}

/* Python fnmatch semantics ('*' crosses '/'); "dir/" means everything below. */
static int include_matches(const char *pattern, const char *name)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '/') {
        char *p = xfmt("%s*", pattern);
        int m = p && fnmatch(p, name, 0) == 0;
        free(p);
        return m;
    }
    return fnmatch(pattern, name, 0) == 0;
}

/* The shard names of a model.safetensors.index.json (weight_map values, unique). */
static int parse_index_shards(const char *text, size_t len, const char *path, char ***shards, size_t *n)
{
    *shards = NULL;
    *n = 0;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root) return llmq_error("%s: not JSON: %s (line %d)", path, jerr.text, jerr.line);
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        json_decref(root);
        return llmq_error("%s: field 'weight_map' is not an object", path);
    }
    size_t cap = json_object_size(map);
    char **out = calloc(cap ? cap : 1, sizeof *out);
    if (!out) {
        json_decref(root);
        return llmq_error("hub: out of memory");
    }
    const char *key;
    json_t *val;
    int rc = LLMQ_OK;
    json_object_foreach(map, key, val) {
        const char *shard = json_string_value(val);
        if (!shard || !valid_repo_path(shard)) {
            rc = llmq_error("%s: field 'weight_map.%.100s' is not a file name inside the repo", path, key);
            break;
        }
        int seen = 0;
        for (size_t i = 0; i < *n && !seen; i++) seen = !strcmp(out[i], shard);
        if (!seen && !(out[(*n)++] = strdup(shard))) {
            rc = llmq_error("hub: out of memory");
            break;
        }
    }
    json_decref(root);
    if (rc != LLMQ_OK) {
        for (size_t i = 0; i < *n; i++) free(out[i]);
        free(out);
        *n = 0;
        return rc;
    }
    *shards = out;
    return LLMQ_OK;
}

static void free_strings(char **s, size_t n)
{
    for (size_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

static int read_index_shards(const char *path, char ***shards, size_t *n)
{
    *shards = NULL;
    *n = 0;
    size_t len;
    char *text = llmq_read_file(path, INDEX_MAX_BYTES, &len);
    if (!text) return LLMQ_ERR;
    int rc = parse_index_shards(text, len, path, shards, n);
    free(text);
    return rc;
}

long hub_parse_answer(const char *repo, const char *body, size_t len, int is_index)
{
    long count = LLMQ_ERR;
    if (is_index) {
        char **shards;
        size_t n;
        if (parse_index_shards(body, len, repo, &shards, &n) == LLMQ_OK) {
            count = (long)n;
            free_strings(shards, n);
        }
        return count;
    }
    hub_repo r = {0};
    r.repo = strdup(repo);
    r.repo_dir = strdup("cache/models--fuzz");
    if (!r.repo || !r.repo_dir) llmq_error("hub: out of memory");
    else if (parse_repo_info(&r, body, len) == LLMQ_OK) count = (long)r.n_files;
    hub_repo_free(&r);
    return count;
}

/* ---- downloading a batch of files ------------------------------------------ */

typedef struct {
    pthread_mutex_t lock;
    const llmq_hub_options *opts;
    hub_repo *repo;
    const hub_net *net;
    size_t *batch;      /* indices into repo->files */
    size_t n_batch;
    uint64_t *done;     /* per batch entry: bytes on disk */
    uint64_t total_size, total_done;
    int files_done;
    uint64_t fetched;
    char **errors;      /* per batch entry: message or NULL */
} batch_state;

typedef struct {
    batch_state *b;
    size_t k; /* batch entry */
} file_ctx;

static void report(batch_state *b, size_t k, llmq_hub_event ev, uint64_t file_done, int attempt, const char *reason)
{
    if (!b->opts || !b->opts->progress) return;
    pthread_mutex_lock(&b->lock);
    b->total_done = b->total_done - b->done[k] + file_done;
    b->done[k] = file_done;
    if (ev == LLMQ_HUB_FILE_DONE || ev == LLMQ_HUB_FILE_CACHED) b->files_done++;
    hub_file *f = &b->repo->files[b->batch[k]];
    llmq_hub_progress p = {
        .event = ev, .path = f->name, .file_done = file_done, .file_size = f->size,
        .total_done = b->total_done, .total_size = b->total_size,
        .files_done = b->files_done, .files_total = (int)b->n_batch,
        .attempt = attempt, .reason = reason,
    };
    b->opts->progress(&p, b->opts->progress_user);
    pthread_mutex_unlock(&b->lock);
}

static void on_fetch_event(void *ctx, llmq_hub_event ev, uint64_t file_done, int attempt, const char *reason)
{
    file_ctx *fc = ctx;
    report(fc->b, fc->k, ev, file_done, attempt, reason);
}

static int blob_ready(const char *blob, uint64_t size)
{
    struct stat st;
    return stat(blob, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size;
}

/* Makes blobs/<etag> hold the file, under the etag's lock. */
static int fetch_one(batch_state *b, size_t k)
{
    hub_repo *r = b->repo;
    hub_file *f = &r->files[b->batch[k]];
    char *blob = xfmt("%s/blobs/%s", r->repo_dir, f->etag);
    char *partial = xfmt("%s/blobs/%s.incomplete", r->repo_dir, f->etag);
    char *lock_path = xfmt("%s/%s.lock", r->locks_dir, f->etag);
    char *qpath = hub_url_quote(f->name, "/");
    char *url = qpath ? xfmt("%s/%s/resolve/%s/%s", b->net->endpoint, r->repo, r->commit, qpath) : NULL;
    int rc = LLMQ_ERR, lock_fd = -1;
    if (!blob || !partial || !lock_path || !url) {
        llmq_error("hub: out of memory");
        goto out;
    }
    if (blob_ready(blob, f->size)) {
        report(b, k, LLMQ_HUB_FILE_CACHED, f->size, 0, NULL);
        rc = LLMQ_OK;
        goto out;
    }
    /* Another process (llmq or huggingface_hub) may be fetching the same blob. */
    lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX) != 0) {
        llmq_error("%s: cannot lock: %s", lock_path, strerror(errno));
        goto out;
    }
    if (blob_ready(blob, f->size)) {
        report(b, k, LLMQ_HUB_FILE_CACHED, f->size, 0, NULL);
        rc = LLMQ_OK;
        goto out;
    }
    file_ctx fc = {b, k};
    hub_fetch spec = {
        .net = b->net, .url = url, .name = f->name, .incomplete_path = partial, .etag = f->etag,
        .is_lfs = f->is_lfs, .size = f->size, .on_event = on_fetch_event, .ctx = &fc,
    };
    uint64_t fetched = 0;
    rc = hub_fetch_file(&spec, &fetched);
    pthread_mutex_lock(&b->lock);
    b->fetched += fetched;
    pthread_mutex_unlock(&b->lock);
    if (rc == LLMQ_OK) {
        if (rename(partial, blob) != 0) {
            rc = llmq_error("%s: cannot rename into place: %s", blob, strerror(errno));
        } else {
            report(b, k, LLMQ_HUB_FILE_DONE, f->size, 0, NULL);
        }
    }
out:
    if (lock_fd >= 0) close(lock_fd); /* releases the flock */
    free(blob);
    free(partial);
    free(lock_path);
    free(qpath);
    free(url);
    return rc;
}

/* Files the list gave no size or blob id for (a hub or mirror without
 * ?blobs=true) get them from a HEAD request. The etag's length says which
 * checksum it is: 64 hex digits for an LFS sha256, 40 for a git blob sha1. */
static int fill_metadata(hub_repo *r, const hub_net *net, const size_t *batch, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        hub_file *f = &r->files[batch[k]];
        if (f->etag) continue;
        char *qpath = hub_url_quote(f->name, "/");
        char *url = qpath ? xfmt("%s/%s/resolve/%s/%s", net->endpoint, r->repo, r->commit, qpath) : NULL;
        free(qpath);
        if (!url) return llmq_error("hub: out of memory");
        char *etag = NULL, *commit = NULL;
        uint64_t size = 0;
        int rc = hub_head_metadata(net, url, f->name, &etag, &size, &commit);
        free(url);
        if (rc != LLMQ_OK) return rc;
        if (commit && strcmp(commit, r->commit) != 0)
            rc = llmq_error("%s: X-Repo-Commit %.64s differs from the requested commit %s", f->name, commit, r->commit);
        else if (!is_hex(etag, 64) && !is_hex(etag, 40))
            rc = llmq_error("%s: ETag '%.80s' is neither a sha256 nor a git blob id", f->name, etag);
        free(commit);
        if (rc != LLMQ_OK) {
            free(etag);
            return rc;
        }
        f->etag = etag;
        f->size = size;
        f->is_lfs = strlen(etag) == 64;
    }
    return LLMQ_OK;
}

static int fetch_batch(hub_repo *r, const hub_net *net, const llmq_hub_options *opts, size_t *batch, size_t n,
                       uint64_t *fetched)
{
    if (n == 0) return LLMQ_OK;
    if (fill_metadata(r, net, batch, n) != LLMQ_OK) return LLMQ_ERR;
    batch_state b = {.opts = opts, .repo = r, .net = net, .batch = batch, .n_batch = n};
    pthread_mutex_init(&b.lock, NULL);
    b.done = calloc(n, sizeof *b.done);
    b.errors = calloc(n, sizeof *b.errors);
    if (!b.done || !b.errors) {
        free(b.done);
        free(b.errors);
        pthread_mutex_destroy(&b.lock);
        return llmq_error("hub: out of memory");
    }
    for (size_t k = 0; k < n; k++) b.total_size += r->files[batch[k]].size;
    int jobs = opts && opts->jobs > 0 ? opts->jobs : DEFAULT_JOBS;
    if ((size_t)jobs > n) jobs = (int)n;
    /* One file per worker at a time; errors are thread-local, so each worker
     * keeps a copy of its own for the caller. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(jobs)
    for (size_t k = 0; k < n; k++) {
        if (fetch_one(&b, k) != LLMQ_OK) b.errors[k] = strdup(llmq_last_error());
    }
    int rc = LLMQ_OK, failed = 0;
    for (size_t k = 0; k < n; k++) {
        if (!b.errors[k]) continue;
        if (failed++ == 0) llmq_error("%s", b.errors[k]);
        free(b.errors[k]);
        rc = LLMQ_ERR;
    }
    if (failed > 1) llmq_error_prefix("%d files failed, the first", failed);
    *fetched += b.fetched;
    free(b.done);
    free(b.errors);
    pthread_mutex_destroy(&b.lock);
    return rc;
}

/* snapshots/<commit>/<name> -> ../../blobs/<etag>, one more "../" per directory level. */
static int link_into_snapshot(const hub_repo *r, const hub_file *f)
{
    char *link = xfmt("%s/%s", r->snapshot_dir, f->name);
    if (!link) return llmq_error("hub: out of memory");
    size_t depth = 2;
    for (const char *c = f->name; *c; c++) depth += *c == '/';
    size_t tlen = 3 * depth + strlen("blobs/") + strlen(f->etag) + 1;
    char *target = malloc(tlen);
    if (!target) {
        free(link);
        return llmq_error("hub: out of memory");
    }
    target[0] = '\0';
    for (size_t i = 0; i < depth; i++) strcat(target, "../");
    strcat(target, "blobs/");
    strcat(target, f->etag);

    int rc = LLMQ_OK;
    char *dir = strdup(link);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (!slash) {
        rc = llmq_error("hub: out of memory");
        goto out;
    }
    *slash = '\0';
    if (mkdir_p(dir) != LLMQ_OK) {
        rc = LLMQ_ERR;
        goto out;
    }
    char current[4096];
    ssize_t got = readlink(link, current, sizeof current - 1);
    if (got >= 0) {
        current[got] = '\0';
        if (!strcmp(current, target)) goto out;
    }
    /* Replace whatever is there in one rename. */
    char *tmp = xfmt("%s.tmp.%d", link, (int)getpid());
    if (!tmp) {
        rc = llmq_error("hub: out of memory");
        goto out;
    }
    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, link) != 0) {
        rc = llmq_error("%s: cannot create symlink: %s", link, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
out:
    free(dir);
    free(link);
    free(target);
    return rc;
}

/* ---- the cache, without the network ---------------------------------------- */

/* Reads refs/<rev> (a commit hash), NULL when absent or malformed. */
static char *read_ref(const hub_repo *r)
{
    if (is_hex(r->revision, 40)) return strdup(r->revision);
    char *path = xfmt("%s/refs/%s", r->repo_dir, r->revision);
    if (!path) return NULL;
    FILE *fp = fopen(path, "r");
    free(path);
    if (!fp) return NULL;
    char buf[64] = "";
    size_t got = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[got] = '\0';
    while (got && (buf[got - 1] == '\n' || buf[got - 1] == '\r' || buf[got - 1] == ' ')) buf[--got] = '\0';
    return is_hex(buf, 40) ? strdup(buf) : NULL;
}

typedef struct {
    char **items;
    size_t n, cap;
} strlist;

static int strlist_add(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **it = realloc(l->items, cap * sizeof *it);
        if (!it) return llmq_error("hub: out of memory");
        l->items = it;
        l->cap = cap;
    }
    if (!(l->items[l->n] = strdup(s))) return llmq_error("hub: out of memory");
    l->n++;
    return LLMQ_OK;
}

static int strlist_has(const strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], s)) return 1;
    return 0;
}

/* Every readable file below dir (symlinks followed), as paths relative to root. */
static int walk_snapshot(const char *root, const char *rel, strlist *out, int depth)
{
    if (depth > 32) return LLMQ_OK;
    char *dir = rel[0] ? xfmt("%s/%s", root, rel) : strdup(root);
    if (!dir) return llmq_error("hub: out of memory");
    DIR *d = opendir(dir);
    if (!d) {
        free(dir);
        return LLMQ_OK;
    }
    int rc = LLMQ_OK;
    struct dirent *e;
    while (rc == LLMQ_OK && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *child = rel[0] ? xfmt("%s/%s", rel, e->d_name) : strdup(e->d_name);
        char *full = xfmt("%s/%s", dir, e->d_name);
        struct stat st;
        if (!child || !full) rc = llmq_error("hub: out of memory");
        else if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) rc = walk_snapshot(root, child, out, depth + 1);
        else if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) rc = strlist_add(out, child);
        free(child);
        free(full);
    }
    closedir(d);
    free(dir);
    return rc;
}

/* Does the cached snapshot hold what the selection asks for? On LLMQ_OK, *found
 * says so and `want` lists the files. Rules: with includes, every pattern matches
 * at least one file; without, config.json plus the complete weights (every shard
 * an index names, or at least one root *.safetensors). */
static int snapshot_satisfies(const char *snap, const llmq_hub_options *opts, strlist *want, int *found)
{
    *found = 0;
    if (!llmq_is_dir(snap)) return LLMQ_OK;
    strlist all = {0};
    int rc = walk_snapshot(snap, "", &all, 0);
    if (rc != LLMQ_OK) goto out;
    if (opts && opts->n_includes) {
        for (size_t p = 0; p < opts->n_includes; p++) {
            int any = 0;
            for (size_t i = 0; i < all.n; i++) {
                if (!include_matches(opts->includes[p], all.items[i])) continue;
                any = 1;
                if (!strlist_has(want, all.items[i]) && (rc = strlist_add(want, all.items[i])) != LLMQ_OK) goto out;
            }
            if (!any) goto out;
        }
        *found = 1;
        goto out;
    }
    if (!strlist_has(&all, "config.json")) goto out;
    for (size_t i = 0; i < all.n; i++)
        if (is_default_meta(all.items[i]) && (rc = strlist_add(want, all.items[i])) != LLMQ_OK) goto out;
    if (strlist_has(&all, INDEX_NAME)) {
        char *index = xfmt("%s/%s", snap, INDEX_NAME);
        char **shards = NULL;
        size_t n = 0;
        if (!index) {
            rc = llmq_error("hub: out of memory");
            goto out;
        }
        rc = read_index_shards(index, &shards, &n);
        free(index);
        if (rc != LLMQ_OK) goto out;
        int all_there = n > 0;
        for (size_t i = 0; i < n && rc == LLMQ_OK; i++) {
            if (!strlist_has(&all, shards[i])) all_there = 0;
            else rc = strlist_add(want, shards[i]);
        }
        free_strings(shards, n);
        if (rc != LLMQ_OK || !all_there) goto out;
        *found = 1;
    } else {
        for (size_t i = 0; i < all.n; i++) {
            if (!is_root_safetensors(all.items[i])) continue;
            if ((rc = strlist_add(want, all.items[i])) != LLMQ_OK) goto out;
            *found = 1;
        }
    }
out:
    free_strings(all.items, all.n);
    return rc;
}

static int result_from_list(const hub_repo *r, strlist *files, int from_cache, uint64_t fetched, llmq_hub_result *out)
{
    memset(out, 0, sizeof *out);
    out->repo = strdup(r->repo);
    out->revision = strdup(r->revision);
    out->commit = strdup(r->commit);
    out->snapshot_dir = strdup(r->snapshot_dir);
    out->files = files->items;
    out->n_files = files->n;
    files->items = NULL;
    files->n = files->cap = 0;
    out->from_cache = from_cache;
    out->bytes_downloaded = fetched;
    for (size_t i = 0; i < out->n_files; i++) {
        char *p = xfmt("%s/%s", r->snapshot_dir, out->files[i]);
        struct stat st;
        if (p && stat(p, &st) == 0) out->bytes += (uint64_t)st.st_size;
        free(p);
    }
    if (!out->repo || !out->revision || !out->commit || !out->snapshot_dir) {
        llmq_hub_result_free(out);
        return llmq_error("hub: out of memory");
    }
    return LLMQ_OK;
}

/* Resolves from the cache alone. *found = 0 (and LLMQ_OK) when it cannot. */
static int resolve_cached(hub_repo *r, const llmq_hub_options *opts, llmq_hub_result *out, int *found)
{
    *found = 0;
    char *commit = read_ref(r);
    if (!commit) return LLMQ_OK;
    int rc = set_commit(r, commit);
    free(commit);
    if (rc != LLMQ_OK) return rc;
    strlist want = {0};
    rc = snapshot_satisfies(r->snapshot_dir, opts, &want, found);
    if (rc == LLMQ_OK && *found) rc = result_from_list(r, &want, 1, 0, out);
    free_strings(want.items, want.n);
    return rc;
}

/* ---- the whole pull ---------------------------------------------------------- */

static int explain_status(const hub_repo *r, const hub_net *net, long status)
{
    if (status == 401 || status == 403)
        return llmq_error("%s: gated or private repo: set HF_TOKEN%s (HTTP %ld)", r->repo,
                          net->auth_header ? " to a token with access (the one sent was refused)"
                                           : " (or accept the repo's terms on the hub)",
                          status);
    if (status == 404) return llmq_error("%s@%s: no such repo or revision (HTTP 404)", r->repo, r->revision);
    return llmq_error("%s: hub answered HTTP %ld", r->repo, status);
}

/* Selects the default files: metadata, then the shards the index names (the
 * index comes first, alone), or every root *.safetensors without an index. */
static int select_default(hub_repo *r, const hub_net *net, const llmq_hub_options *opts, uint64_t *fetched)
{
    hub_file *index = NULL;
    int any_pickle = 0;
    for (size_t i = 0; i < r->n_files; i++) {
        hub_file *f = &r->files[i];
        if (is_default_meta(f->name)) f->selected = 1;
        if (!strcmp(f->name, INDEX_NAME)) index = f;
        any_pickle |= is_pickle_weight(f->name);
    }
    size_t n_weights = 0;
    if (index) {
        size_t k = (size_t)(index - r->files);
        if (fetch_batch(r, net, opts, &k, 1, fetched) != LLMQ_OK) return LLMQ_ERR;
        index->fetched_early = 1;
        char *blob = xfmt("%s/blobs/%s", r->repo_dir, index->etag);
        if (!blob) return llmq_error("hub: out of memory");
        char **shards = NULL;
        size_t n = 0;
        int rc = read_index_shards(blob, &shards, &n);
        free(blob);
        if (rc != LLMQ_OK) return llmq_error_prefix("%s: %s", r->repo, INDEX_NAME);
        for (size_t s = 0; s < n && rc == LLMQ_OK; s++) {
            size_t i = 0;
            while (i < r->n_files && strcmp(r->files[i].name, shards[s])) i++;
            if (i == r->n_files) rc = llmq_error("%s: %s names shard '%s', which the repo lacks", r->repo, INDEX_NAME, shards[s]);
            else if (!r->files[i].selected) r->files[i].selected = 1, n_weights++;
        }
        free_strings(shards, n);
        if (rc != LLMQ_OK) return rc;
    } else {
        for (size_t i = 0; i < r->n_files; i++)
            if (is_root_safetensors(r->files[i].name)) r->files[i].selected = 1, n_weights++;
    }
    if (n_weights == 0) {
        if (any_pickle)
            return llmq_error("%s@%s has only pickle weights (.bin/.pt/.pth/.ckpt): loading pickle can run arbitrary "
                              "code, so llmq reads only .safetensors (use a safetensors revision, or --include to "
                              "fetch files explicitly)", r->repo, r->revision);
        return llmq_error("%s@%s has no *.safetensors weights (use --include to pick files)", r->repo, r->revision);
    }
    return LLMQ_OK;
}

/* *unreachable is set when the repo info could not be fetched at all (no HTTP
 * answer), the case where a complete cached snapshot may stand in. */
static int pull_online(hub_repo *r, const hub_net *net, const llmq_hub_options *opts, llmq_hub_result *out,
                       int *unreachable)
{
    *unreachable = 0;
    char *qrev = hub_url_quote(r->revision, "");
    char *url = qrev ? xfmt("%s/api/models/%s/revision/%s?blobs=true", net->endpoint, r->repo, qrev) : NULL;
    free(qrev);
    if (!url) return llmq_error("hub: out of memory");
    char *body = NULL;
    size_t len = 0;
    long status = 0;
    int rc = hub_http_get(net, url, API_MAX_BYTES, &body, &len, &status);
    free(url);
    if (rc != LLMQ_OK) {
        *unreachable = 1;
        return rc;
    }
    if (status < 200 || status >= 300) return explain_status(r, net, status);
    rc = parse_repo_info(r, body, len);
    free(body);
    if (rc != LLMQ_OK) return rc;

    char *blobs = xfmt("%s/blobs", r->repo_dir);
    rc = blobs ? LLMQ_OK : llmq_error("hub: out of memory");
    if (rc == LLMQ_OK) rc = mkdir_p(blobs);
    if (rc == LLMQ_OK) rc = mkdir_p(r->locks_dir);
    free(blobs);
    if (rc != LLMQ_OK) return rc;
    char *tag = xfmt("%s/CACHEDIR.TAG", r->cache);
    if (tag && !llmq_file_exists(tag))
        write_atomically(tag, "Signature: 8a477f597d28d172789f06886806bc55\n"
                              "# This file is a cache directory tag created by huggingface_hub (or llmq).\n");
    free(tag);
    llmq_clear_error();

    uint64_t fetched = 0;
    if (opts && opts->n_includes) {
        for (size_t i = 0; i < r->n_files; i++)
            for (size_t p = 0; p < opts->n_includes && !r->files[i].selected; p++)
                r->files[i].selected = include_matches(opts->includes[p], r->files[i].name);
    } else if (select_default(r, net, opts, &fetched) != LLMQ_OK) {
        return LLMQ_ERR;
    }
    size_t *batch = calloc(r->n_files ? r->n_files : 1, sizeof *batch);
    if (!batch) return llmq_error("hub: out of memory");
    size_t n = 0;
    for (size_t i = 0; i < r->n_files; i++)
        if (r->files[i].selected && !r->files[i].fetched_early) batch[n++] = i;
    if (n == 0 && opts && opts->n_includes) {
        free(batch);
        return llmq_error("%s@%s: no file matches the --include patterns", r->repo, r->revision);
    }
    rc = fetch_batch(r, net, opts, batch, n, &fetched);
    free(batch);
    if (rc != LLMQ_OK) return rc;

    strlist files = {0};
    for (size_t i = 0; i < r->n_files && rc == LLMQ_OK; i++) {
        if (!r->files[i].selected) continue;
        rc = link_into_snapshot(r, &r->files[i]);
        if (rc == LLMQ_OK) rc = strlist_add(&files, r->files[i].name);
    }
    if (rc == LLMQ_OK && strcmp(r->revision, r->commit) != 0) {
        char *ref = xfmt("%s/refs/%s", r->repo_dir, r->revision);
        char *dir = ref ? strdup(ref) : NULL;
        if (!dir) rc = llmq_error("hub: out of memory");
        else {
            *strrchr(dir, '/') = '\0';
            rc = mkdir_p(dir);
            if (rc == LLMQ_OK) rc = write_atomically(ref, r->commit);
        }
        free(ref);
        free(dir);
    }
    if (rc == LLMQ_OK) rc = result_from_list(r, &files, 0, fetched, out);
    free_strings(files.items, files.n);
    return rc;
}

int llmq_hub_pull(const char *repo_id, const llmq_hub_options *opts, llmq_hub_result *out)
{
    memset(out, 0, sizeof *out);
    hub_repo r = {0};
    if (llmq_hub_parse_repo_id(repo_id, &r.repo, &r.revision) != LLMQ_OK) return LLMQ_ERR;
    int rc = LLMQ_ERR;
    r.cache = llmq_hub_cache_dir();
    if (!r.cache) goto out;
    /* "org/name" -> "models--org--name" (the repo id has exactly one '/') */
    const char *slash = strchr(r.repo, '/');
    r.repo_dir = xfmt("%s/models--%.*s--%s", r.cache, (int)(slash - r.repo), r.repo, slash + 1);
    r.locks_dir = xfmt("%s/.locks/models--%.*s--%s", r.cache, (int)(slash - r.repo), r.repo, slash + 1);
    if (!r.repo_dir || !r.locks_dir) {
        llmq_error("hub: out of memory");
        goto out;
    }

    int offline = env_true("HF_HUB_OFFLINE");
    int refresh = opts && opts->refresh;
    int found = 0;
    if (offline || !refresh) {
        if (resolve_cached(&r, opts, out, &found) != LLMQ_OK) goto out;
        if (found) {
            rc = LLMQ_OK;
            goto out;
        }
        if (offline) {
            llmq_error("%s@%s is not (completely) in the cache %s, and HF_HUB_OFFLINE is set", r.repo, r.revision,
                       r.cache);
            goto out;
        }
    }
    hub_net net;
    if (hub_net_init(&net) != LLMQ_OK) goto out;
    int unreachable = 0;
    rc = pull_online(&r, &net, opts, out, &unreachable);
    hub_net_free(&net);
    if (rc != LLMQ_OK && unreachable && refresh) {
        /* Like huggingface_hub: an unreachable hub falls back to a complete
         * cached snapshot of the revision (from_cache tells the caller). */
        char why[1024];
        snprintf(why, sizeof why, "%s", llmq_last_error());
        if (resolve_cached(&r, opts, out, &found) == LLMQ_OK && found) rc = LLMQ_OK;
        else llmq_error("%s", why);
    }
out:
    hub_repo_free(&r);
    return rc;
}

int llmq_hub_resolve(const char *repo_id, char **snapshot_dir, const llmq_hub_options *opts)
{
    *snapshot_dir = NULL;
    llmq_hub_result res;
    if (llmq_hub_pull(repo_id, opts, &res) != LLMQ_OK) return LLMQ_ERR;
    *snapshot_dir = res.snapshot_dir;
    res.snapshot_dir = NULL;
    llmq_hub_result_free(&res);
    return LLMQ_OK;
}

void llmq_hub_result_free(llmq_hub_result *r)
{
    free(r->repo);
    free(r->revision);
    free(r->commit);
    free(r->snapshot_dir);
    free_strings(r->files, r->n_files);
    memset(r, 0, sizeof *r);
}
