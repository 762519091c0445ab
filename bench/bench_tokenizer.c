/* Tokenizer throughput: MB/s of encode(add_special=1), single thread, on the
 * TinyStories eval text and the WikiText-2 test text, per shared tokenizer.
 * Also the load time. Prints a markdown table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/tokenizer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best of a few runs (at least 0.3 s in all) in MB/s; *n_tokens from the last. */
static double measure(const llmq_tokenizer *tok, const char *text, size_t len, size_t *n_tokens)
{
    double best = 1e30, total = 0;
    for (int run = 0; run < 5 && (run < 2 || total < 0.3); run++) {
        int32_t *ids;
        size_t n;
        double t0 = now();
        if (llmq_tokenizer_encode(tok, text, len, 1, &ids, &n)) {
            fprintf(stderr, "encode: %s\n", llmq_last_error());
            return 0;
        }
        double dt = now() - t0;
        free(ids);
        total += dt;
        if (dt < best) best = dt;
        *n_tokens = n;
    }
    return (double)len / best / 1e6;
}

int main(int argc, char **argv)
{
    const char *shared = getenv("LLMQ_SHARED") ? getenv("LLMQ_SHARED") : "../shared";
    static const char *const names[] = {"llama3", "llama3.1", "qwen3", "gpt2", "smollm2", "tinyllama",
                                        "mistral-7b-v0.1", "gemma3", "stories260K-tok512"};
    const char *texts[2] = {"data/tinystories/tinystories_eval.txt", "data/wikitext-2-raw/wiki.test.raw"};
    char *data[2] = {0};
    size_t lens[2] = {0};
    for (int t = 0; t < 2; t++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", shared, texts[t]);
        data[t] = llmq_read_file(path, 0, &lens[t]);
        if (!data[t]) {
            fprintf(stderr, "bench_tokenizer: %s (set LLMQ_SHARED)\n", llmq_last_error());
            return 1;
        }
    }
    printf("Single thread, encode(add_special=1) of the whole file; best of up to 5 runs.\n\n");
    printf("| tokenizer | load (s) | tinystories_eval MB/s | tokens | wiki.test MB/s | tokens |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (argc > 1 && strcmp(argv[1], names[i]) != 0) continue;
        char dir[512];
        snprintf(dir, sizeof dir, "%s/tokenizers/%s", shared, names[i]);
        double t0 = now();
        llmq_tokenizer *tok = llmq_tokenizer_load(dir);
        double load = now() - t0;
        if (!tok) {
            printf("| %s | load failed: %s | | | | |\n", names[i], llmq_last_error());
            continue;
        }
        size_t n0 = 0, n1 = 0;
        double a = measure(tok, data[0], lens[0], &n0);
        double b = measure(tok, data[1], lens[1], &n1);
        printf("| %s | %.2f | %.1f | %zu | %.1f | %zu |\n", names[i], load, a, n0, b, n1);
        fflush(stdout);
        llmq_tokenizer_free(tok);
    }
    free(data[0]);
    free(data[1]);
    return 0;
}
