/* llmq pull ORG/NAME[@REV]: download a checkpoint into the Hugging Face cache and
 * print its snapshot directory (the last stdout line). Progress goes to stderr:
 * live bars on a terminal, one line per file otherwise. */
#include "cli.h"

#include "llmq/error.h"
#include "llmq/hub.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: llmq pull ORG/NAME[@REV] [--include GLOB]... [--jobs N] [--json] [--quiet]\n\n"
            "Downloads a checkpoint from the Hugging Face hub into the cache shared with\n"
            "huggingface_hub / transformers, and prints the snapshot directory.\n\n"
            "  --include GLOB  files to fetch (repeatable; fnmatch, '*' crosses '/'); default:\n"
            "                  config, generation config, tokenizer files and *.safetensors\n"
            "  --jobs N        files downloaded in parallel (default 4)\n"
            "  --json          print {repo, revision, commit, path, files, bytes} instead of the path\n"
            "  --quiet         no progress on stderr\n\n"
            "Environment: HF_ENDPOINT, HF_TOKEN (or HUGGING_FACE_HUB_TOKEN, $HF_HOME/token),\n"
            "HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE=1 (cache only), HF_HUB_DOWNLOAD_TIMEOUT.\n");
}

/* ---- progress ------------------------------------------------------------- */

#define MAX_ACTIVE 64

typedef struct {
    char name[256];
    uint64_t done, size, start_done;
    double start;
} active_file;

typedef struct {
    int tty;
    double start, last_draw;
    int drawn;          /* bar lines on screen below the permanent output */
    active_file act[MAX_ACTIVE];
    int n_act;
    uint64_t total_done, total_size;
    int files_done, files_total;
} progress_view;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void human(char *buf, size_t n, double bytes)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) bytes /= 1024, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
}

static void bar_line(const char *label, uint64_t done, uint64_t size, double elapsed, uint64_t since)
{
    const int width = 24;
    double frac = size ? (double)done / (double)size : 1.0;
    if (frac > 1) frac = 1;
    char bar[32];
    int fill = (int)(frac * width);
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    char d[32], s[32], r[32], eta[32] = "--:--";
    double rate = elapsed > 0.05 ? (double)(done - since) / elapsed : 0;
    human(d, sizeof d, (double)done);
    human(s, sizeof s, (double)size);
    human(r, sizeof r, rate);
    if (rate > 0 && size > done) {
        long left = (long)((double)(size - done) / rate);
        snprintf(eta, sizeof eta, "%ld:%02ld", left / 60, left % 60);
    }
    fprintf(stderr, "%-28.28s [%s] %3d%% %10s/%-10s %10s/s ETA %s\n", label, bar, (int)(frac * 100), d, s, r, eta);
}

static void erase_bars(progress_view *v)
{
    for (int i = 0; i < v->drawn; i++) fputs("\033[1A\033[2K", stderr);
    v->drawn = 0;
}

static void draw_bars(progress_view *v)
{
    double t = now_s();
    for (int i = 0; i < v->n_act; i++) {
        active_file *a = &v->act[i];
        bar_line(a->name, a->done, a->size, t - a->start, a->start_done);
        v->drawn++;
    }
    char label[64];
    snprintf(label, sizeof label, "total (%d/%d files)", v->files_done, v->files_total);
    bar_line(label, v->total_done, v->total_size, t - v->start, 0);
    v->drawn++;
    fflush(stderr);
    v->last_draw = t;
}

static active_file *find_active(progress_view *v, const char *name)
{
    for (int i = 0; i < v->n_act; i++)
        if (!strcmp(v->act[i].name, name)) return &v->act[i];
    return NULL;
}

static void on_progress(const llmq_hub_progress *p, void *user)
{
    progress_view *v = user;
    v->total_done = p->total_done;
    v->total_size = p->total_size;
    v->files_done = p->files_done;
    v->files_total = p->files_total;
    active_file *a = find_active(v, p->path);
    char size[32];
    human(size, sizeof size, (double)p->file_size);
    switch (p->event) {
    case LLMQ_HUB_FILE_START:
        if (!a && v->n_act < MAX_ACTIVE) {
            a = &v->act[v->n_act++];
            snprintf(a->name, sizeof a->name, "%s", p->path);
            a->start = now_s();
            a->start_done = p->file_done;
        }
        if (a) a->done = p->file_done, a->size = p->file_size;
        if (!v->tty && p->file_done > 0)
            fprintf(stderr, "llmq pull: %s: resuming at %llu of %llu bytes\n", p->path,
                    (unsigned long long)p->file_done, (unsigned long long)p->file_size);
        break;
    case LLMQ_HUB_FILE_DATA:
        if (a) a->done = p->file_done;
        if (!v->tty || now_s() - v->last_draw < 0.1) return;
        break;
    case LLMQ_HUB_FILE_RETRY:
        if (v->tty) erase_bars(v);
        fprintf(stderr, "llmq pull: %s: %s; retrying (attempt %d)\n", p->path, p->reason ? p->reason : "failed",
                p->attempt);
        break;
    case LLMQ_HUB_FILE_DONE:
    case LLMQ_HUB_FILE_CACHED:
        if (a) *a = v->act[--v->n_act];
        if (v->tty) erase_bars(v);
        if (p->event == LLMQ_HUB_FILE_DONE) {
            double secs = a ? now_s() - a->start : 0;
            fprintf(stderr, "llmq pull: %s (%s) downloaded and verified in %.1f s [%d/%d]\n", p->path, size, secs,
                    p->files_done, p->files_total);
        } else {
            fprintf(stderr, "llmq pull: %s (%s) already in the cache [%d/%d]\n", p->path, size, p->files_done,
                    p->files_total);
        }
        break;
    }
    if (v->tty) {
        erase_bars(v);
        draw_bars(v);
    }
}

/* ---- command -------------------------------------------------------------- */

int cmd_pull(int argc, char **argv)
{
    const char *repo_id = NULL;
    const char **includes = calloc((size_t)argc + 1, sizeof *includes);
    size_t n_includes = 0;
    int jobs = 4, json = 0, quiet = 0;
    if (!includes) {
        fprintf(stderr, "llmq pull: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(includes);
            return 0;
        } else if (!strcmp(a, "--include") && i + 1 < argc) {
            includes[n_includes++] = argv[++i];
        } else if (!strcmp(a, "--jobs") && i + 1 < argc) {
            char *end;
            long j = strtol(argv[++i], &end, 10);
            if (*end || j < 1 || j > 64) {
                fprintf(stderr, "llmq pull: --jobs wants a number from 1 to 64, not '%s'\n", argv[i]);
                free(includes);
                return 2;
            }
            jobs = (int)j;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            quiet = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "llmq pull: unknown or incomplete option '%s' (see llmq pull --help)\n", a);
            free(includes);
            return 2;
        } else if (!repo_id) {
            repo_id = a;
        } else {
            fprintf(stderr, "llmq pull: one repo at a time ('%s' and '%s')\n", repo_id, a);
            free(includes);
            return 2;
        }
    }
    if (!repo_id) {
        usage(stderr);
        free(includes);
        return 2;
    }

    progress_view view = {.tty = isatty(STDERR_FILENO), .start = now_s()};
    llmq_hub_options opts;
    llmq_hub_options_init(&opts);
    opts.includes = includes;
    opts.n_includes = n_includes;
    opts.jobs = jobs;
    opts.refresh = 1;
    if (!quiet) {
        opts.progress = on_progress;
        opts.progress_user = &view;
    }
    llmq_hub_result res;
    int rc = llmq_hub_pull(repo_id, &opts, &res);
    if (view.tty) erase_bars(&view);
    free(includes);
    if (rc != LLMQ_OK) {
        fprintf(stderr, "llmq pull: %s\n", llmq_last_error());
        return 1;
    }
    if (!quiet) {
        char total[32], got[32];
        human(total, sizeof total, (double)res.bytes);
        human(got, sizeof got, (double)res.bytes_downloaded);
        fprintf(stderr, "llmq pull: %s@%s (commit %.12s): %zu files, %s (%s downloaded)%s\n", res.repo, res.revision,
                res.commit, res.n_files, total, got, res.from_cache ? ", from the cache" : "");
    }
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "repo", res.repo, "revision", res.revision, "commit",
                              res.commit, "path", res.snapshot_dir, "files", (json_int_t)res.n_files, "bytes",
                              (json_int_t)res.bytes);
        cli_print_json_object(o);
    } else {
        printf("%s\n", res.snapshot_dir);
    }
    llmq_hub_result_free(&res);
    return fflush(stdout) == 0 ? 0 : 1;
}
