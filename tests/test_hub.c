/* Hub client against scripts/mock-hub, started per test on 127.0.0.1 (a port the
 * OS picks) with the faults the test asks for. Every expectation about the cache
 * follows huggingface_hub's layout rules. */
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/hub.h"
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>

#define COMMIT "0123456789abcdef0123456789abcdef01234567"
#define TOKEN "hf_test_token_do_not_print_42"

static char test_root[PATH_MAX]; /* removed after the test unless LLMQ_KEEP_TMP is set */

static void teardown(void)
{
    test_mock_hub_stop();
    if (test_root[0] && !getenv("LLMQ_KEEP_TMP") && strstr(test_root, "/build/tmp/hub-")) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", test_root);
    }
}

TestSuite(hub, .fini = teardown);

typedef struct {
    char root[PATH_MAX], files[PATH_MAX], cache[PATH_MAX], log[PATH_MAX];
    int port;
} hub_env;

static void path_fmt(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void path_fmt(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, PATH_MAX, fmt, ap);
    va_end(ap);
    cr_assert(n > 0 && n < PATH_MAX, "path too long");
}

static void mkdir_parents(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(tmp, 0755);
        *p = '/';
    }
}

static void write_bytes(const char *dir, const char *rel, const void *data, size_t n)
{
    char path[PATH_MAX];
    path_fmt(path, "%s/%s", dir, rel);
    mkdir_parents(path);
    FILE *fp = fopen(path, "wb");
    cr_assert(fp, "cannot write %s", path);
    cr_assert_eq(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

static void write_text(const char *dir, const char *rel, const char *text) { write_bytes(dir, rel, text, strlen(text)); }

/* A small safetensors file: one F32 tensor of n deterministic values. */
static void write_safetensors(const char *dir, const char *rel, const char *tensor, size_t n, uint32_t seed)
{
    char header[256];
    int h = snprintf(header, sizeof header, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}",
                     tensor, n, 4 * n);
    while (h % 8) header[h++] = ' ';
    size_t total = 8 + (size_t)h + 4 * n;
    unsigned char *buf = malloc(total);
    uint64_t len = (uint64_t)h;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, header, (size_t)h);
    uint32_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        float f = (float)(x >> 8) / 16777216.0f - 0.5f;
        memcpy(buf + 8 + h + 4 * i, &f, 4);
    }
    write_bytes(dir, rel, buf, total);
    free(buf);
}

static const char *const SHARD1 = "model-00001-of-00002.safetensors";
static const char *const SHARD2 = "model-00002-of-00002.safetensors";

/* A sharded Llama-like checkpoint plus files the default selection must skip. */
static void make_checkpoint(const char *dir)
{
    write_text(dir, "config.json", "{\"model_type\":\"llama\",\"hidden_size\":64}\n");
    write_text(dir, "tokenizer.json", "{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\"}}\n");
    write_text(dir, "tokenizer_config.json", "{\"bos_token\":\"<s>\"}\n");
    write_safetensors(dir, SHARD1, "model.layers.0.weight", 60000, 1);
    write_safetensors(dir, SHARD2, "lm_head.weight", 30000, 2);
    write_text(dir, "model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":360000},\"weight_map\":{"
               "\"model.layers.0.weight\":\"model-00001-of-00002.safetensors\","
               "\"lm_head.weight\":\"model-00002-of-00002.safetensors\"}}\n");
    write_text(dir, "pytorch_model.bin", "pickle bytes that must never be fetched");
    write_text(dir, "README.md", "# a model card\n");
    write_text(dir, "original/params.json", "{\"dim\":64}\n");
}

static const char *const DEFAULT_FILES[] = {
    "config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json",
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
};
#define N_DEFAULT (sizeof DEFAULT_FILES / sizeof DEFAULT_FILES[0])

static void setup(hub_env *e, const char *tag)
{
    char rel[160];
    test_tmpdir(rel, sizeof rel, tag);
    cr_assert(realpath(rel, e->root), "realpath %s", rel);
    snprintf(test_root, sizeof test_root, "%s", e->root);
    path_fmt(e->files, "%s/files", e->root);
    path_fmt(e->cache, "%s/cache/hub", e->root);
    path_fmt(e->log, "%s/mock.log", e->root);
    mkdir(e->files, 0755);
    char home[PATH_MAX];
    path_fmt(home, "%s/hfhome", e->root);
    mkdir(home, 0755);
    setenv("HF_HUB_CACHE", e->cache, 1);
    setenv("HF_HOME", home, 1);
    unsetenv("HF_TOKEN");
    unsetenv("HUGGING_FACE_HUB_TOKEN");
    unsetenv("HF_TOKEN_PATH");
    unsetenv("HF_HUB_OFFLINE");
    setenv("HF_ENDPOINT", "http://127.0.0.1:9", 1); /* discard port: nothing answers */
    setenv("LLMQ_HUB_RETRY_BASE_MS", "5", 1);
    setenv("LLMQ_HUB_RETRIES", "3", 1);
    setenv("HF_HUB_DOWNLOAD_TIMEOUT", "5", 1);
}

static json_t *repo_config(const char *dir) { return json_pack("{s:s, s:s}", "commit", COMMIT, "dir", dir); }

/* Starts the mock with cfg (stolen) and points HF_ENDPOINT at it. */
static void start_mock(hub_env *e, json_t *cfg)
{
    char cfg_path[PATH_MAX], port_path[PATH_MAX];
    path_fmt(cfg_path, "%s/mock.json", e->root);
    path_fmt(port_path, "%s/mock.port", e->root);
    cr_assert_eq(json_dump_file(cfg, cfg_path, 0), 0);
    json_decref(cfg);
    e->port = test_mock_hub_start(cfg_path, port_path, e->log);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d/", e->port); /* trailing '/' is stripped */
    setenv("HF_ENDPOINT", endpoint, 1);
}

/* Lines of the mock's request log containing `needle` (all lines when NULL). */
static int log_count(const hub_env *e, const char *needle)
{
    FILE *fp = fopen(e->log, "r");
    if (!fp) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, fp))
        if (!needle || strstr(line, needle)) n++;
    fclose(fp);
    return n;
}

static int log_count2(const hub_env *e, const char *a, const char *b)
{
    FILE *fp = fopen(e->log, "r");
    if (!fp) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, fp))
        if (strstr(line, a) && strstr(line, b)) n++;
    fclose(fp);
    return n;
}

static void sha256_file(const char *path, char hex[65])
{
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "cannot open %s", path);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    unsigned char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, fp)) > 0) EVP_DigestUpdate(md, buf, got);
    fclose(fp);
    unsigned char d[32];
    unsigned int n;
    EVP_DigestFinal_ex(md, d, &n);
    EVP_MD_CTX_free(md);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static void sha256_of(const hub_env *e, const char *dir, const char *rel, char hex[65])
{
    (void)e;
    char p[PATH_MAX];
    path_fmt(p, "%s/%s", dir, rel);
    sha256_file(p, hex);
}

static int exists(const char *dir, const char *rel)
{
    char p[PATH_MAX];
    path_fmt(p, "%s/%s", dir, rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

/* Counts directory entries under dir whose name contains needle (recursive). */
static int count_named(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        if (strstr(ent->d_name, needle)) n++;
        char p[PATH_MAX];
        path_fmt(p, "%s/%s", dir, ent->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) n += count_named(p, needle);
    }
    closedir(d);
    return n;
}

/* The snapshot holds the default files, byte-identical to the served ones, as
 * relative symlinks into blobs/ named by their etag. */
static void check_default_snapshot(const hub_env *e, const char *repo_folder, const char *snapshot)
{
    char expect[PATH_MAX];
    path_fmt(expect, "%s/%s/snapshots/%s", e->cache, repo_folder, COMMIT);
    cr_assert_str_eq(snapshot, expect);
    for (size_t i = 0; i < N_DEFAULT; i++) {
        char a[65], b[65], link[PATH_MAX], target[PATH_MAX];
        sha256_of(e, e->files, DEFAULT_FILES[i], a);
        sha256_of(e, snapshot, DEFAULT_FILES[i], b);
        cr_assert_str_eq(a, b, "%s differs from the served file", DEFAULT_FILES[i]);
        path_fmt(link, "%s/%s", snapshot, DEFAULT_FILES[i]);
        ssize_t n = readlink(link, target, sizeof target - 1);
        cr_assert(n > 0, "%s is not a symlink", link);
        target[n] = '\0';
        cr_assert(!strncmp(target, "../../blobs/", 12), "%s -> %s is not ../../blobs/<etag>", link, target);
        if (strstr(DEFAULT_FILES[i], ".safetensors") && !strstr(DEFAULT_FILES[i], ".json"))
            cr_assert_str_eq(target + 12, a, "an LFS blob is named by its sha256");
        else
            cr_assert_eq(strlen(target + 12), 40, "a git blob is named by its 40-digit sha1: %s", target);
    }
    cr_assert_not(exists(snapshot, "pytorch_model.bin"), "pickle weights must not be fetched");
    cr_assert_not(exists(snapshot, "README.md"));
    cr_assert_not(exists(snapshot, "original/params.json"));
    char refs[PATH_MAX];
    path_fmt(refs, "%s/%s/refs/main", e->cache, repo_folder);
    size_t len = 0;
    char *ref = llmq_read_file(refs, 0, &len);
    cr_assert(ref, "refs/main missing");
    cr_assert_str_eq(ref, COMMIT);
    free(ref);
    cr_assert_eq(count_named(e->cache, ".incomplete"), 0, "no partial download left behind");
    cr_assert_eq(count_named(e->cache, ".tmp."), 0, "no temp file left behind");
}

typedef struct {
    int retries, done, cached, starts;
    int resumed_at_nonzero;
    char last_reason[512];
} progress_log;

static void record_progress(const llmq_hub_progress *p, void *user)
{
    progress_log *l = user;
    cr_assert(p->total_done <= p->total_size || p->total_size == 0);
    switch (p->event) {
    case LLMQ_HUB_FILE_START:
        l->starts++;
        if (p->file_done > 0) l->resumed_at_nonzero++;
        break;
    case LLMQ_HUB_FILE_RETRY:
        l->retries++;
        snprintf(l->last_reason, sizeof l->last_reason, "%s", p->reason ? p->reason : "");
        break;
    case LLMQ_HUB_FILE_DONE: l->done++; break;
    case LLMQ_HUB_FILE_CACHED: l->cached++; break;
    default: break;
    }
}

static llmq_hub_options options(progress_log *l, int jobs)
{
    llmq_hub_options o;
    llmq_hub_options_init(&o);
    o.jobs = jobs;
    o.refresh = 1;
    if (l) {
        o.progress = record_progress;
        o.progress_user = l;
    }
    return o;
}

/* ---- repo ids ---------------------------------------------------------------- */

Test(hub, repo_id_parsing)
{
    char *repo, *rev;
    cr_assert_eq(llmq_hub_parse_repo_id("TinyLlama/TinyLlama-1.1B-Chat-v1.0", &repo, &rev), LLMQ_OK);
    cr_assert_str_eq(repo, "TinyLlama/TinyLlama-1.1B-Chat-v1.0");
    cr_assert_str_eq(rev, "main");
    free(repo);
    free(rev);
    cr_assert_eq(llmq_hub_parse_repo_id("org/name@refs/pr/1", &repo, &rev), LLMQ_OK);
    cr_assert_str_eq(repo, "org/name");
    cr_assert_str_eq(rev, "refs/pr/1");
    free(repo);
    free(rev);
    const char *bad[] = {
        "../x",  "org/..",     "/abs/name", "org\\x/name", "org/na\nme", "org/name/extra", "a--b/c",
        "org",   "org/name@",  "org/name@../../etc", "org/name@a\\b", "org/name@/abs", "org/name@x\x01",
        "org/.", ".hidden/x",  "org/name@a..b", "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(llmq_hub_parse_repo_id(bad[i], &repo, &rev), LLMQ_ERR, "accepted bad id #%zu", i);
        cr_assert_null(repo);
        cr_assert_neq(llmq_last_error()[0], '\0');
        cr_assert_null(strchr(llmq_last_error(), '\n'));
    }
}

Test(hub, local_path_wins_over_repo_id)
{
    hub_env e;
    setup(&e, "hub-local");
    cr_assert(llmq_hub_is_repo_id("org/name"));
    cr_assert(llmq_hub_is_repo_id("org/name@v1"));
    cr_assert_not(llmq_hub_is_repo_id("./model"));
    cr_assert_not(llmq_hub_is_repo_id("/abs/path"));
    cr_assert_not(llmq_hub_is_repo_id("model.safetensors"));
    char rel[PATH_MAX];
    path_fmt(rel, "%s/org/name", e.root);
    mkdir_parents(rel);
    mkdir(rel, 0755);
    cr_assert_eq(chdir(e.root), 0);
    cr_assert_not(llmq_hub_is_repo_id("org/name"), "an existing local directory is a path");
}

Test(hub, cache_dir_follows_hf_environment)
{
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    setenv("HF_HOME", "/tmp/hfhome-x", 1);
    char *d = llmq_hub_cache_dir();
    cr_assert_str_eq(d, "/tmp/hfhome-x/hub");
    free(d);
    unsetenv("HF_HOME");
    setenv("XDG_CACHE_HOME", "/tmp/xdg-x", 1);
    d = llmq_hub_cache_dir();
    cr_assert_str_eq(d, "/tmp/xdg-x/huggingface/hub");
    free(d);
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/tmp/home-x", 1);
    d = llmq_hub_cache_dir();
    cr_assert_str_eq(d, "/tmp/home-x/.cache/huggingface/hub");
    free(d);
    setenv("HF_HUB_CACHE", "~/elsewhere", 1);
    d = llmq_hub_cache_dir();
    cr_assert_str_eq(d, "/tmp/home-x/elsewhere");
    free(d);
}

/* ---- downloads ------------------------------------------------------------------ */

Test(hub, full_download_of_a_sharded_checkpoint)
{
    hub_env e;
    setup(&e, "hub-full");
    make_checkpoint(e.files);
    start_mock(&e, json_pack("{s:{s:o}}", "repos", "org/name", repo_config(e.files)));
    progress_log pl = {0};
    llmq_hub_options o = options(&pl, 3);
    llmq_hub_result res;
    cr_assert_eq(llmq_hub_pull("org/name", &o, &res), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", res.snapshot_dir);
    cr_assert_eq(res.n_files, N_DEFAULT);
    cr_assert_str_eq(res.commit, COMMIT);
    cr_assert_str_eq(res.revision, "main");
    cr_assert_not(res.from_cache);
    cr_assert_eq(pl.retries, 0);
    cr_assert_geq(pl.done, (int)N_DEFAULT);
    uint64_t expect_bytes = 0;
    for (size_t i = 0; i < N_DEFAULT; i++) {
        char p[PATH_MAX];
        struct stat st;
        path_fmt(p, "%s/%s", e.files, DEFAULT_FILES[i]);
        stat(p, &st);
        expect_bytes += (uint64_t)st.st_size;
    }
    cr_assert_eq(res.bytes, expect_bytes);
    cr_assert_eq(res.bytes_downloaded, expect_bytes);
    /* The API was asked with blobs=true, and LFS bodies came through the CDN redirect. */
    cr_assert_eq(log_count(&e, "/api/models/org/name/revision/main?blobs=true"), 1);
    cr_assert_eq(log_count(&e, "\"/cdn/"), 2);
    cr_assert_eq(log_count(&e, "pytorch_model.bin"), 0);
    cr_assert_eq(log_count(&e, "\"auth\": \"none\""), log_count(&e, NULL), "no token configured, none sent");
    char tag[PATH_MAX];
    path_fmt(tag, "%s/CACHEDIR.TAG", e.cache);
    cr_assert(llmq_file_exists(tag));
    llmq_hub_result_free(&res);

    /* Resolving again (refresh = 0) makes no request at all. */
    int before = log_count(&e, NULL);
    char *dir = NULL;
    llmq_hub_options o2;
    llmq_hub_options_init(&o2);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o2), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", dir);
    free(dir);
    cr_assert_eq(log_count(&e, NULL), before);

    /* A refreshing pull asks for the file list again but fetches nothing. */
    progress_log pl2 = {0};
    o = options(&pl2, 2);
    cr_assert_eq(llmq_hub_pull("org/name", &o, &res), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(res.bytes_downloaded, 0);
    cr_assert_eq(pl2.done, 0);
    cr_assert_geq(pl2.cached, (int)N_DEFAULT);
    cr_assert_eq(log_count(&e, "/resolve/"), (int)N_DEFAULT, "the first pull's requests only");
    cr_assert_eq(log_count(&e, NULL), before + 1, "only the repo info was requested");
    llmq_hub_result_free(&res);
}

Test(hub, renamed_repo_follows_relative_redirect)
{
    hub_env e;
    setup(&e, "hub-rename");
    make_checkpoint(e.files);
    start_mock(&e, json_pack("{s:{s:o}, s:{s:s}}", "repos", "org/name", repo_config(e.files), "renames", "old/name",
                             "org/name"));
    llmq_hub_options o = options(NULL, 4);
    char *dir = NULL;
    cr_assert_eq(llmq_hub_resolve("old/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--old--name", dir);
    free(dir);
    cr_assert_geq(log_count(&e, "\"/old/name/resolve/"), (int)N_DEFAULT);
    cr_assert_geq(log_count(&e, "\"/org/name/resolve/"), (int)N_DEFAULT);
}

Test(hub, a_file_list_without_blob_metadata_falls_back_to_head_requests)
{
    hub_env e;
    setup(&e, "hub-head");
    make_checkpoint(e.files);
    json_t *r = repo_config(e.files);
    json_object_set_new(r, "api_blobs", json_false());
    start_mock(&e, json_pack("{s:{s:o}, s:{s:s}, s:[{s:s, s:s}]}", "repos", "org/name", r, "renames", "old/name",
                             "org/name", "faults", "kind", "corrupt", "path", SHARD1));
    progress_log pl = {0};
    llmq_hub_options o = options(&pl, 4);
    char *dir = NULL;
    cr_assert_eq(llmq_hub_resolve("old/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--old--name", dir);
    free(dir);
    /* One HEAD per file under the old name, each redirected (relative) to the new one;
     * the CDN redirect is not followed by a HEAD. */
    cr_assert_eq(log_count2(&e, "\"HEAD\"", "\"/old/name/resolve/"), (int)N_DEFAULT);
    cr_assert_eq(log_count2(&e, "\"HEAD\"", "\"/org/name/resolve/"), (int)N_DEFAULT);
    cr_assert_eq(log_count2(&e, "\"HEAD\"", "\"/cdn/"), 0);
    cr_assert_eq(pl.retries, 1, "the etag from HEAD still verifies the body");
}

Test(hub, resume_after_the_server_drops_mid_file)
{
    hub_env e;
    setup(&e, "hub-drop");
    make_checkpoint(e.files);
    start_mock(&e, json_pack("{s:{s:o}, s:[{s:s, s:s}]}", "repos", "org/name", repo_config(e.files), "faults", "kind",
                             "drop", "path", SHARD1));
    progress_log pl = {0};
    llmq_hub_options o = options(&pl, 4);
    char *dir = NULL;
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", dir);
    free(dir);
    cr_assert_eq(pl.retries, 1);
    cr_assert_eq(pl.resumed_at_nonzero, 1);
    /* The mock sends half of the body before dropping: the retry asks for the rest. */
    char shard_path[PATH_MAX];
    struct stat st;
    path_fmt(shard_path, "%s/%s", e.files, SHARD1);
    stat(shard_path, &st);
    char range[64];
    snprintf(range, sizeof range, "\"range\": \"bytes=%lld-\"", (long long)st.st_size / 2);
    cr_assert_eq(log_count2(&e, "\"/cdn/", range), 1, "expected one resumed CDN request with %s", range);
}

Test(hub, resume_from_an_incomplete_blob_left_by_an_earlier_run)
{
    hub_env e;
    setup(&e, "hub-partial");
    make_checkpoint(e.files);
    char sha[65], blobs[PATH_MAX];
    sha256_of(&e, e.files, SHARD2, sha);
    path_fmt(blobs, "%s/models--org--name/blobs", e.cache);
    /* The first 1000 bytes, as an interrupted earlier run would leave them. */
    char src[PATH_MAX];
    path_fmt(src, "%s/%s", e.files, SHARD2);
    size_t n = 0;
    char *all = llmq_read_file(src, 0, &n);
    char name[128];
    snprintf(name, sizeof name, "%s.incomplete", sha);
    write_bytes(blobs, name, all, 1000);
    free(all);
    start_mock(&e, json_pack("{s:{s:o}}", "repos", "org/name", repo_config(e.files)));
    char *dir = NULL;
    llmq_hub_options o = options(NULL, 2);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", dir);
    free(dir);
    cr_assert_eq(log_count2(&e, "\"/cdn/", "\"range\": \"bytes=1000-\""), 1);
}

Test(hub, a_200_answer_to_a_range_request_restarts_cleanly)
{
    hub_env e;
    setup(&e, "hub-norange");
    make_checkpoint(e.files);
    char sha[65], blobs[PATH_MAX], name[128];
    sha256_of(&e, e.files, SHARD1, sha);
    path_fmt(blobs, "%s/models--org--name/blobs", e.cache);
    snprintf(name, sizeof name, "%s.incomplete", sha);
    /* Garbage on disk: kept only if the client appended to it blindly. */
    const char *garbage = "garbage that is not a prefix of the shard";
    write_text(blobs, name, garbage);
    start_mock(&e, json_pack("{s:{s:o}, s:[{s:s, s:s}]}", "repos", "org/name", repo_config(e.files), "faults", "kind",
                             "ignore_range", "path", SHARD1));
    progress_log pl = {0};
    char *dir = NULL;
    llmq_hub_options o = options(&pl, 2);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", dir);
    free(dir);
    cr_assert_eq(pl.retries, 0, "a 200 answer is used from byte 0, not retried");
    char range[64];
    snprintf(range, sizeof range, "\"range\": \"bytes=%zu-\"", strlen(garbage));
    cr_assert_eq(log_count2(&e, "\"/cdn/", range), 1, "the Range request was sent, answered with 200");
}

Test(hub, corrupted_body_is_detected_and_fetched_again)
{
    hub_env e;
    setup(&e, "hub-corrupt");
    make_checkpoint(e.files);
    start_mock(&e, json_pack("{s:{s:o}, s:[{s:s, s:s}, {s:s, s:s}]}", "repos", "org/name", repo_config(e.files),
                             "faults", "kind", "corrupt", "path", SHARD2, "kind", "corrupt", "path", "config.json"));
    progress_log pl = {0};
    char *dir = NULL;
    llmq_hub_options o = options(&pl, 4);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", dir);
    free(dir);
    cr_assert_eq(pl.retries, 2, "one sha256 and one git-sha1 mismatch");
    cr_assert_eq(log_count(&e, "/resolve/" COMMIT "/config.json"), 2);
    char sha[65], cdn[128];
    sha256_of(&e, e.files, SHARD2, sha);
    snprintf(cdn, sizeof cdn, "\"/cdn/%s\", \"range\": null", sha);
    cr_assert_eq(log_count(&e, cdn), 2, "refetched from byte 0, not resumed after a bad checksum");
}

Test(hub, a_body_that_stays_corrupt_never_reaches_blobs)
{
    hub_env e;
    setup(&e, "hub-badsum");
    make_checkpoint(e.files);
    setenv("LLMQ_HUB_RETRIES", "2", 1);
    start_mock(&e, json_pack("{s:{s:o}, s:[{s:s, s:s, s:i}]}", "repos", "org/name", repo_config(e.files), "faults",
                             "kind", "corrupt", "path", SHARD1, "times", 100));
    char *dir = NULL;
    llmq_hub_options o = options(NULL, 4);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_ERR);
    cr_assert_null(dir);
    cr_assert(strstr(llmq_last_error(), SHARD1), "%s", llmq_last_error());
    cr_assert(strstr(llmq_last_error(), "sha256 mismatch"), "%s", llmq_last_error());
    cr_assert(strstr(llmq_last_error(), "3 attempts"), "%s", llmq_last_error());
    char sha[65], blobs[PATH_MAX];
    sha256_of(&e, e.files, SHARD1, sha);
    path_fmt(blobs, "%s/models--org--name/blobs", e.cache);
    cr_assert_eq(count_named(blobs, sha), 0, "neither the blob nor a partial file is kept");
    cr_assert_eq(count_named(e.cache, SHARD1), 0, "no snapshot link to a bad file");
}

Test(hub, a_stalled_transfer_times_out_and_resumes)
{
    hub_env e;
    setup(&e, "hub-stall");
    make_checkpoint(e.files);
    setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1", 1);
    start_mock(&e, json_pack("{s:{s:o}, s:[{s:s, s:s, s:i}]}", "repos", "org/name", repo_config(e.files), "faults",
                             "kind", "stall", "path", SHARD2, "seconds", 4));
    progress_log pl = {0};
    char *dir = NULL;
    llmq_hub_options o = options(&pl, 4);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", dir);
    free(dir);
    cr_assert_eq(pl.retries, 1);
    cr_assert_eq(pl.resumed_at_nonzero, 1);
}

Test(hub, server_error_then_success_is_retried)
{
    hub_env e;
    setup(&e, "hub-500");
    make_checkpoint(e.files);
    start_mock(&e, json_pack("{s:{s:o}, s:[{s:s, s:i, s:s}, {s:s, s:i, s:s, s:s}, {s:s, s:i, s:s, s:s}]}", "repos",
                             "org/name", repo_config(e.files), "faults", "kind", "status", "code", 500, "where", "api",
                             "kind", "status", "code", 503, "where", "body", "path", "tokenizer.json", "kind",
                             "status", "code", 429, "where", "body", "path", SHARD1));
    progress_log pl = {0};
    char *dir = NULL;
    llmq_hub_options o = options(&pl, 4);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", dir);
    free(dir);
    cr_assert_eq(log_count(&e, "/api/models/org/name/"), 2);
    cr_assert_eq(pl.retries, 2);
}

Test(hub, persistent_server_errors_give_up_after_bounded_retries)
{
    hub_env e;
    setup(&e, "hub-500x");
    make_checkpoint(e.files);
    setenv("LLMQ_HUB_RETRIES", "2", 1);
    start_mock(&e, json_pack("{s:{s:o}, s:[{s:s, s:i, s:s, s:i}]}", "repos", "org/name", repo_config(e.files), "faults",
                             "kind", "status", "code", 502, "where", "api", "times", 100));
    char *dir = NULL;
    llmq_hub_options o = options(NULL, 4);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "giving up after 3 attempts: HTTP 502"), "%s", llmq_last_error());
    cr_assert_eq(log_count(&e, NULL), 3);
}

Test(hub, unauthorized_asks_for_a_token_and_the_token_works)
{
    hub_env e;
    setup(&e, "hub-401");
    make_checkpoint(e.files);
    start_mock(&e, json_pack("{s:s, s:{s:o}}", "token", TOKEN, "repos", "org/name", repo_config(e.files)));
    char *dir = NULL;
    llmq_hub_options o = options(NULL, 4);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "gated or private repo: set HF_TOKEN"), "%s", llmq_last_error());
    cr_assert_eq(log_count(&e, NULL), 1, "401 is not retried");

    /* A wrong token: same message, and the token is not echoed. */
    setenv("HF_TOKEN", "hf_wrong_token", 1);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "gated or private repo: set HF_TOKEN"), "%s", llmq_last_error());
    cr_assert_null(strstr(llmq_last_error(), "hf_wrong_token"));

    /* The token file under HF_HOME, then HF_TOKEN. */
    unsetenv("HF_TOKEN");
    char home[PATH_MAX];
    path_fmt(home, "%s/hfhome", e.root);
    write_text(home, "token", TOKEN "\n");
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", dir);
    free(dir);
    cr_assert_geq(log_count(&e, "\"auth\": \"ok\""), 1 + (int)N_DEFAULT);
    /* The CDN is another host in real life: no request there needs the token. */
    cr_assert_eq(log_count2(&e, "\"/cdn/", "\"auth\": \"bad\""), 0);
}

Test(hub, missing_repo_or_revision_is_404)
{
    hub_env e;
    setup(&e, "hub-404");
    make_checkpoint(e.files);
    start_mock(&e, json_pack("{s:{s:o}}", "repos", "org/name", repo_config(e.files)));
    char *dir = NULL;
    llmq_hub_options o = options(NULL, 4);
    cr_assert_eq(llmq_hub_resolve("org/missing", &dir, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "no such repo or revision"), "%s", llmq_last_error());
    cr_assert_eq(llmq_hub_resolve("org/name@no-such-branch", &dir, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "no such repo or revision"), "%s", llmq_last_error());
    cr_assert_eq(log_count(&e, NULL), 2, "404 is not retried");
    cr_assert_eq(count_named(e.root, "models--org--missing"), 0);
}

Test(hub, hostile_file_names_are_refused_and_nothing_escapes_the_cache)
{
    hub_env e;
    setup(&e, "hub-evil");
    make_checkpoint(e.files);
    const char *evil[] = {"../evil.safetensors", "/tmp/evil-abs.safetensors", "sub/../../evil.safetensors",
                          "sub\\..\\evil.safetensors", "evil\n.safetensors", "./evil.safetensors", "a//evil.safetensors"};
    size_t n = sizeof evil / sizeof evil[0];
    json_t *repos = json_object();
    for (size_t i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "bad/r%zu", i);
        json_t *r = repo_config(e.files);
        json_object_set_new(r, "extra_siblings", json_pack("[{s:s, s:i, s:s}]", "rfilename", evil[i], "size", 4,
                                                          "blobId", "0123456789012345678901234567890123456789"));
        json_object_set_new(repos, id, r);
    }
    start_mock(&e, json_pack("{s:o}", "repos", repos));
    llmq_hub_options o = options(NULL, 4);
    const char *inc[] = {"*"};
    for (int with_include = 0; with_include < 2; with_include++) {
        o.includes = with_include ? inc : NULL;
        o.n_includes = with_include ? 1 : 0;
        for (size_t i = 0; i < n; i++) {
            char id[32];
            snprintf(id, sizeof id, "bad/r%zu", i);
            char *dir = NULL;
            cr_assert_eq(llmq_hub_resolve(id, &dir, &o), LLMQ_ERR, "accepted %s", evil[i]);
            cr_assert(strstr(llmq_last_error(), "refusing file name"), "%s", llmq_last_error());
            cr_assert_null(strchr(llmq_last_error(), '\n'));
        }
    }
    cr_assert_eq(count_named(e.root, "evil"), 0, "nothing named evil anywhere under the test dir");
    cr_assert_not(llmq_file_exists("/tmp/evil-abs.safetensors"));
    cr_assert_eq(log_count(&e, "/resolve/"), 0, "no file is fetched from a hostile list");
}

Test(hub, pickle_only_repo_is_refused_with_the_reason)
{
    hub_env e;
    setup(&e, "hub-pickle");
    write_text(e.files, "config.json", "{}");
    write_text(e.files, "pytorch_model.bin", "not really a pickle");
    start_mock(&e, json_pack("{s:{s:o}}", "repos", "org/old", repo_config(e.files)));
    char *dir = NULL;
    llmq_hub_options o = options(NULL, 4);
    cr_assert_eq(llmq_hub_resolve("org/old", &dir, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "pickle"), "%s", llmq_last_error());
    cr_assert(strstr(llmq_last_error(), "arbitrary code"), "%s", llmq_last_error());
    cr_assert_eq(log_count(&e, "pytorch_model.bin"), 0);
}

Test(hub, include_patterns_replace_the_default_selection)
{
    hub_env e;
    setup(&e, "hub-include");
    make_checkpoint(e.files);
    start_mock(&e, json_pack("{s:{s:o}}", "repos", "org/name", repo_config(e.files)));
    const char *inc[] = {"*.json", "README.md"};
    llmq_hub_options o = options(NULL, 2);
    o.includes = inc;
    o.n_includes = 2;
    llmq_hub_result res;
    cr_assert_eq(llmq_hub_pull("org/name", &o, &res), LLMQ_OK, "%s", llmq_last_error());
    /* '*' crosses '/' as in Python's fnmatch: original/params.json is included. */
    cr_assert_eq(res.n_files, 6);
    const char *want[] = {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json",
                          "original/params.json", "README.md"};
    for (size_t i = 0; i < 6; i++) {
        char a[65], b[65];
        sha256_of(&e, e.files, want[i], a);
        sha256_of(&e, res.snapshot_dir, want[i], b);
        cr_assert_str_eq(a, b, "%s", want[i]);
    }
    char link[PATH_MAX], target[PATH_MAX];
    path_fmt(link, "%s/original/params.json", res.snapshot_dir);
    ssize_t n = readlink(link, target, sizeof target - 1);
    cr_assert(n > 0);
    target[n] = '\0';
    cr_assert(!strncmp(target, "../../../blobs/", 15), "nested links climb one more level: %s", target);
    cr_assert_not(exists(res.snapshot_dir, SHARD1));
    llmq_hub_result_free(&res);

    const char *none[] = {"*.gguf"};
    o.includes = none;
    o.n_includes = 1;
    cr_assert_eq(llmq_hub_pull("org/name", &o, &res), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "no file matches"), "%s", llmq_last_error());
}

/* org/name downloaded into the cache, then the mock hub stopped (its port
 * refuses connections from then on). */
static llmq_hub_options cached_then_hub_gone(hub_env *e, const char *tag)
{
    setup(e, tag);
    make_checkpoint(e->files);
    start_mock(e, json_pack("{s:{s:o}}", "repos", "org/name", repo_config(e->files)));
    char *dir = NULL;
    llmq_hub_options o = options(NULL, 4);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    free(dir);
    test_mock_hub_stop();
    return o;
}

Test(hub, offline_mode_is_served_from_the_cache)
{
    hub_env e;
    llmq_hub_options o = cached_then_hub_gone(&e, "hub-offline");
    char *dir = NULL;
    setenv("HF_HUB_OFFLINE", "1", 1);
    llmq_hub_result res;
    cr_assert_eq(llmq_hub_pull("org/name", &o, &res), LLMQ_OK, "%s", llmq_last_error());
    check_default_snapshot(&e, "models--org--name", res.snapshot_dir);
    cr_assert(res.from_cache);
    cr_assert_eq(res.n_files, N_DEFAULT);
    llmq_hub_result_free(&res);
    /* By commit hash as well. */
    cr_assert_eq(llmq_hub_resolve("org/name@" COMMIT, &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    free(dir);
    /* Not cached: a clear error, no request. */
    cr_assert_eq(llmq_hub_resolve("org/other", &dir, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "HF_HUB_OFFLINE"), "%s", llmq_last_error());
    cr_assert_eq(llmq_hub_resolve("org/name@v2", &dir, &o), LLMQ_ERR);
    /* A snapshot with a shard missing is not complete. */
    char shard[PATH_MAX];
    path_fmt(shard, "%s/models--org--name/snapshots/%s/%s", e.cache, COMMIT, SHARD2);
    cr_assert_eq(unlink(shard), 0);
    cr_assert_eq(llmq_hub_resolve("org/name", &dir, &o), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "HF_HUB_OFFLINE"), "%s", llmq_last_error());
}

Test(hub, an_unreachable_hub_falls_back_to_a_complete_cache)
{
    hub_env e;
    llmq_hub_options o = cached_then_hub_gone(&e, "hub-down");
    setenv("LLMQ_HUB_RETRIES", "1", 1);
    llmq_hub_result res;
    cr_assert_eq(llmq_hub_pull("org/name", &o, &res), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(res.from_cache);
    check_default_snapshot(&e, "models--org--name", res.snapshot_dir);
    llmq_hub_result_free(&res);
    /* Nothing cached for another repo: the network error is reported. */
    cr_assert_eq(llmq_hub_pull("org/other", &o, &res), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "giving up after 2 attempts"), "%s", llmq_last_error());
}

/* A cache laid out by hand by huggingface_hub's rules is used without a request. */
Test(hub, a_cache_written_by_huggingface_hub_is_used_without_requests)
{
    hub_env e;
    setup(&e, "hub-interop");
    make_checkpoint(e.files);
    start_mock(&e, json_pack("{s:{}}", "repos")); /* knows no repo: any request would fail */
    char repo[PATH_MAX], blobs[PATH_MAX], snap[PATH_MAX];
    path_fmt(repo, "%s/models--TheOrg--Hand-Made_1.0", e.cache);
    path_fmt(blobs, "%s/blobs", repo);
    path_fmt(snap, "%s/snapshots/%s", repo, COMMIT);
    mkdir_parents(snap);
    mkdir(snap, 0755);
    mkdir(blobs, 0755);
    const char *names[] = {"config.json", "model.safetensors.index.json", SHARD1, SHARD2, "tokenizer.json",
                           "nested/dir/extra.json"};
    write_text(e.files, "nested/dir/extra.json", "{}");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char sha[65], src[PATH_MAX], blob[PATH_MAX], link[PATH_MAX], target[PATH_MAX];
        sha256_of(&e, e.files, names[i], sha);
        /* blob names are etags; any unique name works for reading */
        path_fmt(src, "%s/%s", e.files, names[i]);
        path_fmt(blob, "%s/%s", blobs, sha);
        size_t n = 0;
        char *data = llmq_read_file(src, 0, &n);
        write_bytes(blobs, sha, data, n);
        free(data);
        int depth = 2;
        for (const char *c = names[i]; *c; c++) depth += *c == '/';
        target[0] = '\0';
        for (int d = 0; d < depth; d++) strcat(target, "../");
        strcat(target, "blobs/");
        strcat(target, sha);
        path_fmt(link, "%s/%s", snap, names[i]);
        mkdir_parents(link);
        cr_assert_eq(symlink(target, link), 0, "%s", strerror(errno));
    }
    char refs[PATH_MAX];
    path_fmt(refs, "%s/refs", repo);
    mkdir(refs, 0755);
    write_text(refs, "main", COMMIT); /* huggingface_hub writes no newline */

    llmq_hub_options o;
    llmq_hub_options_init(&o);
    llmq_hub_result res;
    cr_assert_eq(llmq_hub_pull("TheOrg/Hand-Made_1.0", &o, &res), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_str_eq(res.snapshot_dir, snap);
    cr_assert_str_eq(res.commit, COMMIT);
    cr_assert(res.from_cache);
    cr_assert_eq(res.n_files, 5, "config, index, two shards, tokenizer.json");
    llmq_hub_result_free(&res);
    char *dir = NULL;
    cr_assert_eq(llmq_hub_resolve("TheOrg/Hand-Made_1.0@" COMMIT, &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_str_eq(dir, snap);
    free(dir);
    const char *inc[] = {"nested/*"};
    o.includes = inc;
    o.n_includes = 1;
    cr_assert_eq(llmq_hub_resolve("TheOrg/Hand-Made_1.0", &dir, &o), LLMQ_OK, "%s", llmq_last_error());
    free(dir);
    cr_assert_eq(log_count(&e, NULL), 0, "the hand-made cache needed no request");
}
