/* Fault injection: a full disk (RLIMIT_FSIZE) during a GGUF or safetensors
 * write, SIGKILL in the middle of a write, unreadable and truncated files, and
 * checkpoints holding NaN/Inf weights. The property under test is always the
 * same: a clean one-line error naming the file, and never a partial output
 * file at the final path (DEVELOPERS.md: outputs are written atomically). */
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf.h"
#include "llmq/safetensors.h"
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------------ */

static char case_root[256]; /* the test's scratch directory, removed afterwards */

static void faults_teardown(void)
{
    if (case_root[0] && !getenv("LLMQ_KEEP_TMP") && strstr(case_root, "build/tmp/faults-")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "chmod -R u+rw '%s'; rm -rf '%s'", case_root, case_root);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", case_root);
    }
}

TestSuite(faults, .fini = faults_teardown);

static void scratch_dir(char *buf, size_t n, const char *tag)
{
    test_tmpdir(buf, n, tag);
    snprintf(case_root, sizeof case_root, "%s", buf);
}

/* Entries of dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    cr_assert(d, "opendir %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Runs fn in a child and returns its exit status; the child's last error
 * message comes back through a pipe into msg. */
static int in_child(int (*fn)(void *), void *arg, char *msg, size_t cap)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        int rc = fn(arg);
        const char *m = llmq_last_error();
        ssize_t w = write(fds[1], m, strlen(m));
        (void)w;
        _exit(rc);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t got;
    while (n + 1 < cap && (got = read(fds[0], msg + n, cap - 1 - n)) > 0) n += (size_t)got;
    msg[n] = '\0';
    close(fds[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child died (status %d)", status);
    return WEXITSTATUS(status);
}

/* A GGUF of n_tensors F32 tensors of n floats each; between tensors the writer
 * sleeps pause_us (so a kill can land in the middle). Returns 0 on success. */
typedef struct {
    const char *path;
    int n_tensors;
    size_t n;
    long pause_us;
} gguf_job;

static float value_at(int t, size_t i) { return (float)t + (float)(i % 1000) * 0.001f; }

static int write_gguf(void *arg)
{
    const gguf_job *j = arg;
    llmq_gguf_writer *w = llmq_gguf_writer_new(j->path);
    if (!w) return 10;
    llmq_gguf_writer_add_str(w, "general.architecture", "llama");
    char name[32];
    for (int t = 0; t < j->n_tensors; t++) {
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", t);
        if (llmq_gguf_writer_add_tensor(w, name, LLMQ_TYPE_F32, 1, (int64_t[]){(int64_t)j->n}) != LLMQ_OK) return 11;
    }
    if (llmq_gguf_writer_begin(w) != LLMQ_OK) {
        llmq_gguf_writer_abort(w);
        return 1;
    }
    float *buf = malloc(j->n * sizeof *buf);
    for (int t = 0; t < j->n_tensors; t++) {
        for (size_t i = 0; i < j->n; i++) buf[i] = value_at(t, i);
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", t);
        if (llmq_gguf_writer_write_tensor(w, name, buf, j->n * sizeof *buf) != LLMQ_OK) {
            free(buf);
            llmq_gguf_writer_abort(w);
            return 1;
        }
        if (j->pause_us) nanosleep(&(struct timespec){0, j->pause_us * 1000}, NULL);
    }
    free(buf);
    return llmq_gguf_writer_finish(w) == LLMQ_OK ? 0 : 1;
}

/* A complete GGUF written by write_gguf: every tensor present with its values. */
static void check_gguf_complete(const char *path, int n_tensors, size_t n)
{
    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert(g, "%s exists but does not open: %s", path, llmq_last_error());
    cr_assert_eq(llmq_gguf_tensor_count(g), n_tensors);
    for (int t = 0; t < n_tensors; t++) {
        const llmq_gguf_tensor *gt = llmq_gguf_tensor_at(g, t);
        const float *v = gt->data;
        cr_assert_eq(gt->n_elements, (int64_t)n);
        cr_assert_eq(v[0], value_at(t, 0));
        cr_assert_eq(v[n - 1], value_at(t, n - 1));
    }
    llmq_gguf_close(g);
}

typedef struct {
    const char *path;
    size_t n; /* floats */
} st_job;

static int write_st(void *arg)
{
    const st_job *j = arg;
    float *buf = malloc(j->n * sizeof *buf);
    for (size_t i = 0; i < j->n; i++) buf[i] = value_at(7, i);
    llmq_st_tensor t = {.name = "model.embed_tokens.weight", .type = LLMQ_TYPE_F32, .n_dims = 2,
                        .shape = {(int64_t)(j->n / 64), 64}, .n_elements = (int64_t)j->n, .data = buf,
                        .n_bytes = j->n * sizeof *buf};
    int rc = llmq_st_write(j->path, &t, 1, NULL);
    free(buf);
    return rc == LLMQ_OK ? 0 : 1;
}

static void check_st_complete(const char *path, size_t n)
{
    llmq_safetensors *st = llmq_st_open(path);
    cr_assert(st, "%s exists but does not open: %s", path, llmq_last_error());
    const llmq_st_tensor *t = llmq_st_find(st, "model.embed_tokens.weight");
    cr_assert(t);
    cr_assert_eq(t->n_elements, (int64_t)n);
    const float *v = t->data;
    cr_assert_eq(v[n - 1], value_at(7, n - 1));
    llmq_st_close(st);
}

/* ---- out of disk: RLIMIT_FSIZE ------------------------------------------------- */

typedef struct {
    int (*write)(void *);
    void *job;
    rlim_t limit;
} limited_job;

/* The file size limit stands in for a full disk: write(2) fails with EFBIG
 * once the file would grow past it (SIGXFSZ ignored), as with ENOSPC. */
static int with_fsize_limit(void *arg)
{
    const limited_job *l = arg;
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {l->limit, l->limit};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 20;
    return l->write(l->job);
}

Test(faults, disk_full_during_gguf_write_leaves_no_file)
{
    char dir[256], path[300], msg[1024];
    scratch_dir(dir, sizeof dir, "faults-fsize-gguf");
    snprintf(path, sizeof path, "%s/out.gguf", dir);
    gguf_job job = {path, 8, 1 << 16, 0}; /* 8 x 256 KiB */
    limited_job l = {write_gguf, &job, 600 * 1024};
    cr_assert_eq(in_child(with_fsize_limit, &l, msg, sizeof msg), 1, "the write must fail: %s", msg);
    cr_assert(strstr(msg, path), "message names the file: %s", msg);
    cr_assert(strstr(msg, "File too large"), "message says why: %s", msg);
    cr_assert_null(strchr(msg, '\n'));
    cr_assert_eq(file_size(path), -1, "no final file");
    cr_assert_eq(count_prefixed(dir, "out.gguf.tmp."), 0, "the temp file is removed");
    /* The same job without the limit succeeds: the failure was the disk. */
    cr_assert_eq(in_child(write_gguf, &job, msg, sizeof msg), 0, "%s", msg);
    check_gguf_complete(path, 8, 1 << 16);
}

Test(faults, disk_full_during_safetensors_write_leaves_no_file)
{
    char dir[256], path[300], msg[1024];
    scratch_dir(dir, sizeof dir, "faults-fsize-st");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_job job = {path, 1 << 18}; /* 1 MiB */
    limited_job l = {write_st, &job, 256 * 1024};
    cr_assert_eq(in_child(with_fsize_limit, &l, msg, sizeof msg), 1, "the write must fail: %s", msg);
    cr_assert(strstr(msg, path), "%s", msg);
    cr_assert(strstr(msg, "write failed"), "%s", msg);
    cr_assert_eq(file_size(path), -1, "no final file");
    cr_assert_eq(count_prefixed(dir, "model.safetensors.tmp."), 0, "the temp file is removed");
}

/* ---- SIGKILL in the middle of a write --------------------------------------------- */

/* Starts fn in a child, waits until its temp file <path>.tmp.<pid> holds some
 * but not all of `total` bytes, and kills it with SIGKILL. Returns 1 when the
 * kill landed mid-write (0 when the child had already finished). */
static int kill_mid_write(int (*fn)(void *), void *arg, const char *path, off_t total)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) _exit(fn(arg));
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)pid);
    int mid = 0, status;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        off_t s = file_size(tmp);
        if (s > 0 && s < total) {
            kill(pid, SIGKILL);
            mid = 1;
            break;
        }
        if (waitpid(pid, &status, WNOHANG) == pid) return 0; /* finished before we saw it */
        clock_gettime(CLOCK_MONOTONIC, &now);
        cr_assert_lt(now.tv_sec - t0.tv_sec, 20, "the writer never started");
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %d", status);
    return mid;
}

Test(faults, sigkill_mid_gguf_write_never_leaves_a_partial_file)
{
    char dir[256], path[300];
    scratch_dir(dir, sizeof dir, "faults-kill-gguf");
    snprintf(path, sizeof path, "%s/out.gguf", dir);
    gguf_job job = {path, 16, 1 << 16, 2000}; /* 16 x 256 KiB, 2 ms between tensors */
    int mid = 0;
    for (int attempt = 0; attempt < 5 && !mid; attempt++) {
        unlink(path); /* a complete file from an attempt whose kill came too late must not count */
        mid = kill_mid_write(write_gguf, &job, path, 16 * (256 << 10));
        if (file_size(path) >= 0) check_gguf_complete(path, 16, 1 << 16); /* absent or complete */
    }
    cr_assert(mid, "no kill landed mid-write in 5 attempts");
    cr_assert_eq(file_size(path), -1, "a killed writer leaves no file at the final path");
    /* An earlier complete file survives a killed rewrite untouched. */
    char msg[256];
    gguf_job small = {path, 2, 64, 0};
    cr_assert_eq(in_child(write_gguf, &small, msg, sizeof msg), 0, "%s", msg);
    kill_mid_write(write_gguf, &job, path, 16 * (256 << 10));
    check_gguf_complete(path, 2, 64);
}

Test(faults, sigkill_mid_safetensors_write_never_leaves_a_partial_file)
{
    char dir[256], path[300];
    scratch_dir(dir, sizeof dir, "faults-kill-st");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_job job = {path, 1 << 23}; /* 32 MiB in one fwrite */
    int mid = 0;
    for (int attempt = 0; attempt < 5 && !mid; attempt++) {
        unlink(path); /* a complete file from an attempt whose kill came too late must not count */
        mid = kill_mid_write(write_st, &job, path, (off_t)4 << 23);
        if (file_size(path) >= 0) check_st_complete(path, 1 << 23);
    }
    cr_assert(mid, "no kill landed mid-write in 5 attempts");
    cr_assert_eq(file_size(path), -1, "a killed writer leaves no file at the final path");
}

/* ---- unreadable and short files ----------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    cr_assert(fp, "cannot write %s", path);
    cr_assert_eq(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

static int open_all_three(void *arg)
{
    const char *dir = arg;
    char p[512];
    int failures = 0;
    char msgs[3][340];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    llmq_safetensors *st = llmq_st_open(p);
    failures += !st;
    snprintf(msgs[0], sizeof msgs[0], "%s", llmq_last_error());
    llmq_st_close(st);
    snprintf(p, sizeof p, "%s/out.gguf", dir);
    llmq_gguf *g = llmq_gguf_open(p);
    failures += !g;
    snprintf(msgs[1], sizeof msgs[1], "%s", llmq_last_error());
    llmq_gguf_close(g);
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *text = llmq_read_file(p, 0, NULL);
    failures += !text;
    snprintf(msgs[2], sizeof msgs[2], "%s", llmq_last_error());
    free(text);
    llmq_error("%s|%s|%s", msgs[0], msgs[1], msgs[2]);
    return failures;
}

static int drop_privileges_and_open(void *arg)
{
    if (geteuid() == 0 && setuid(65534) != 0) return 99;
    return open_all_three(arg);
}

Test(faults, unreadable_files_give_permission_errors)
{
    char dir[256], p[300], msg[2048];
    scratch_dir(dir, sizeof dir, "faults-unreadable");
    char abs[PATH_MAX];
    cr_assert(realpath(dir, abs));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    st_job sj = {p, 64};
    cr_assert_eq(write_st(&sj), 0);
    snprintf(p, sizeof p, "%s/out.gguf", dir);
    gguf_job gj = {p, 1, 32, 0};
    cr_assert_eq(write_gguf(&gj), 0);
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_file(p, "{}", 2);
    const char *names[] = {"model.safetensors", "out.gguf", "config.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        cr_assert_eq(chmod(p, 0), 0);
    }
    /* root reads anything: drop to nobody (whose search permission on the
     * directory tree is then also in play) in a child. */
    int rc = in_child(drop_privileges_and_open, abs, msg, sizeof msg);
    if (rc == 99) cr_skip_test("cannot drop root privileges here");
    cr_assert_eq(rc, 3, "all three opens fail: %s", msg);
    cr_assert(strstr(msg, "model.safetensors: cannot open: Permission denied"), "%s", msg);
    cr_assert(strstr(msg, "out.gguf: cannot open: Permission denied") ||
                  strstr(msg, "out.gguf: Permission denied"), "%s", msg);
    cr_assert(strstr(msg, "config.json: cannot open: Permission denied"), "%s", msg);
}

Test(faults, truncated_files_are_refused_at_open)
{
    char dir[256], st_path[300], g_path[300];
    scratch_dir(dir, sizeof dir, "faults-short");
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
    snprintf(g_path, sizeof g_path, "%s/out.gguf", dir);
    st_job sj = {st_path, 4096};
    cr_assert_eq(write_st(&sj), 0);
    gguf_job gj = {g_path, 2, 1024, 0};
    cr_assert_eq(write_gguf(&gj), 0);
    off_t st_full = file_size(st_path), g_full = file_size(g_path);
    /* Cut each file at a few points: inside the data, inside the header, to nothing. */
    const double cuts[] = {0.99, 0.5, 0.01, 0.0};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        cr_assert_eq(truncate(st_path, (off_t)((double)st_full * cuts[c])), 0);
        cr_assert_eq(truncate(g_path, (off_t)((double)g_full * cuts[c])), 0);
        llmq_safetensors *st = llmq_st_open(st_path);
        cr_assert_null(st, "truncated to %.0f%% but opened", 100 * cuts[c]);
        cr_assert(strstr(llmq_last_error(), st_path), "%s", llmq_last_error());
        llmq_gguf *g = llmq_gguf_open(g_path);
        cr_assert_null(g, "truncated to %.0f%% but opened", 100 * cuts[c]);
        cr_assert(strstr(llmq_last_error(), g_path), "%s", llmq_last_error());
    }
}

/* A file cut short by another process while it is mapped: pages past the new
 * end raise SIGBUS on access (mmap(2)). That cannot be turned into an error
 * without copying the file, so the guarantee is only that no stale or zero
 * bytes are ever read as weights: the reader dies instead. */
static int read_after_truncation(void *arg)
{
    const char *path = arg;
    llmq_safetensors *st = llmq_st_open(path);
    if (!st) return 10;
    if (truncate(path, 64) != 0) return 11;
    const llmq_st_tensor *t = llmq_st_at(st, 0);
    volatile float sum = 0;
    for (size_t i = 0; i < (size_t)t->n_elements; i++) sum += ((const float *)t->data)[i];
    llmq_st_close(st);
    return 0;
}

Test(faults, truncation_under_a_live_map_is_sigbus_not_garbage)
{
    char dir[256], path[300];
    scratch_dir(dir, sizeof dir, "faults-livemap");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_job sj = {path, 1 << 16};
    cr_assert_eq(write_st(&sj), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        signal(SIGBUS, SIG_DFL);
        _exit(read_after_truncation(path));
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "expected SIGBUS, status %d", status);
}

/* ---- NaN / Inf weights ------------------------------------------------------------------ */

static llmq_st_tensor tensor_of(const char *name, llmq_type type, const void *data, int64_t n)
{
    size_t es = type == LLMQ_TYPE_F32 ? 4 : 2;
    return (llmq_st_tensor){.name = (char *)name, .type = type, .n_dims = 1, .shape = {n}, .n_elements = n,
                            .data = data, .n_bytes = (size_t)n * es, .file = "ckpt/model.safetensors"};
}

Test(faults, non_finite_weights_are_refused_naming_the_tensor)
{
    float f[6] = {0.0f, -1.5f, 3.4028235e38f, 1e-45f, NAN, 2.0f};
    llmq_st_tensor t = tensor_of("model.layers.3.mlp.up_proj.weight", LLMQ_TYPE_F32, f, 6);
    cr_assert_eq(llmq_st_check_finite(&t), LLMQ_ERR);
    cr_assert_str_eq(llmq_last_error(), "ckpt/model.safetensors: tensor 'model.layers.3.mlp.up_proj.weight': "
                                        "element 4 is NaN: refusing a checkpoint with non-finite weights");
    f[4] = -INFINITY;
    cr_assert_eq(llmq_st_check_finite(&t), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "element 4 is -Inf"), "%s", llmq_last_error());
    f[4] = 7.0f; /* the largest finite value and a subnormal pass */
    cr_assert_eq(llmq_st_check_finite(&t), LLMQ_OK, "%s", llmq_last_error());

    /* F16: 0x7bff is the largest finite, 0x7c00 +Inf, 0xfe00 a NaN. */
    uint16_t h[4] = {0x3c00, 0x7bff, 0x0001, 0x7c00};
    t = tensor_of("model.norm.weight", LLMQ_TYPE_F16, h, 4);
    cr_assert_eq(llmq_st_check_finite(&t), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "tensor 'model.norm.weight': element 3 is +Inf"), "%s", llmq_last_error());
    h[3] = 0xfe00;
    cr_assert_eq(llmq_st_check_finite(&t), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "element 3 is NaN"), "%s", llmq_last_error());
    h[3] = 0xfbff;
    cr_assert_eq(llmq_st_check_finite(&t), LLMQ_OK);

    /* BF16: the top half of an F32. 0x7f7f is the largest finite, 0xff80 -Inf. */
    uint16_t b[3] = {0x7f7f, 0xff80, 0x7fc1};
    t = tensor_of("lm_head.weight", LLMQ_TYPE_BF16, b, 3);
    cr_assert_eq(llmq_st_check_finite(&t), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "tensor 'lm_head.weight': element 1 is -Inf"), "%s", llmq_last_error());
    b[1] = 0x0001;
    cr_assert_eq(llmq_st_check_finite(&t), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "element 2 is NaN"), "%s", llmq_last_error());
}

Test(faults, non_finite_weights_in_a_written_checkpoint_are_found_after_open)
{
    char dir[256], path[300];
    scratch_dir(dir, sizeof dir, "faults-nan");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    /* Odd-sized first tensor: the second one's data is not 4-byte aligned. */
    uint16_t a[3] = {0x3c00, 0x4000, 0x4200};
    float w[5] = {1, 2, 3, 4, 5};
    w[3] = INFINITY;
    llmq_st_tensor ts[2] = {tensor_of("model.norm.weight", LLMQ_TYPE_F16, a, 3),
                            tensor_of("model.layers.0.self_attn.q_proj.weight", LLMQ_TYPE_F32, w, 5)};
    cr_assert_eq(llmq_st_write(path, ts, 2, NULL), LLMQ_OK, "%s", llmq_last_error());
    llmq_safetensors *st = llmq_st_open(path);
    cr_assert(st, "%s", llmq_last_error());
    cr_assert_eq(llmq_st_check_finite(llmq_st_find(st, "model.norm.weight")), LLMQ_OK);
    const llmq_st_tensor *q = llmq_st_find(st, "model.layers.0.self_attn.q_proj.weight");
    cr_assert_eq((uintptr_t)q->data % 4, 2, "the test wants an unaligned tensor");
    cr_assert_eq(llmq_st_check_finite(q), LLMQ_ERR);
    char want[512];
    snprintf(want, sizeof want, "%s: tensor 'model.layers.0.self_attn.q_proj.weight': element 3 is +Inf", path);
    cr_assert(strstr(llmq_last_error(), want), "%s", llmq_last_error());
    llmq_st_close(st);
}
