/* Block formats against ggml itself: for every block type llmq writes, rows
 * encoded by llmq (plain and with the grid search) and by ggml's own
 * reference encoder (from_float_ref) are decoded by both libraries, and the
 * floats must be the same bits. ggml is the libggml-base.so that
 * node-llama-cpp ships (loaded with dlopen, so nothing of llama.cpp is built);
 * its type traits are declared here as ggml.h declares them.
 *
 * usage: ggml_blocks PATH/libggml-base.so     exit 0 when every type agrees */
#include "llmq/blocks.h"
#include "llmq/error.h"
#include "llmq/types.h"

#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ggml.h, struct ggml_type_traits (ggml/include/ggml.h) */
struct ggml_type_traits {
    const char *type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    void (*to_float)(const void *x, float *y, int64_t k);
    void (*from_float_ref)(const float *x, void *y, int64_t k);
};
typedef const struct ggml_type_traits *(*get_traits_fn)(int type);

static unsigned long long rng = 0x9E3779B97F4A7C15ull;
static double uniform(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* A row whose blocks differ in scale (1e-3..1e2), sign balance and outliers. */
static void make_row(float *x, int n)
{
    for (int b = 0; b < n; b += 32) {
        const double scale = 1e-3 * pow(10.0, 5.0 * uniform()), shift = uniform() < 0.3 ? scale * (uniform() - 0.5) : 0.0;
        for (int i = b; i < b + 32; i++) x[i] = (float)(scale * (2.0 * uniform() - 1.0) + shift);
        if (uniform() < 0.2) x[b + (int)(32 * uniform())] *= 8.0f;
    }
}

static int compare(const char *what, const char *name, const float *a, const float *b, int n)
{
    for (int i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            printf("  %-5s %s: element %d decodes to %.9g in llmq, %.9g in ggml\n", name, what, i, (double)a[i], (double)b[i]);
            return 1;
        }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH/libggml-base.so\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "ggml_blocks: %s\n", dlerror());
        return 2;
    }
    get_traits_fn get_traits = (get_traits_fn)dlsym(lib, "ggml_get_type_traits");
    if (!get_traits) {
        fprintf(stderr, "ggml_blocks: %s has no ggml_get_type_traits\n", argv[1]);
        return 2;
    }
    const llmq_type types[] = {LLMQ_TYPE_Q4_0, LLMQ_TYPE_Q4_1, LLMQ_TYPE_Q5_0, LLMQ_TYPE_Q5_1, LLMQ_TYPE_Q8_0,
                               LLMQ_TYPE_Q2_K, LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q5_K, LLMQ_TYPE_Q6_K,
                               LLMQ_TYPE_IQ4_NL, LLMQ_TYPE_IQ4_XS};
    enum { N = 256 * 64 };
    static float x[N], ours[N], theirs[N];
    static unsigned char blocks[N * 2];
    int failed = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const llmq_type t = types[k];
        const llmq_type_traits *tr = llmq_type_get(t);
        const struct ggml_type_traits *gt = get_traits((int)t);
        int bad = 0;
        if (!gt || !gt->to_float || gt->blck_size != tr->block_size || gt->type_size != tr->type_size) {
            printf("  %-5s ggml's type %d is not the same block (%lld elements, %zu bytes)\n", tr->name, (int)t,
                   gt ? (long long)gt->blck_size : 0LL, gt ? gt->type_size : (size_t)0);
            failed = 1;
            continue;
        }
        for (int round = 0; round < 3 && !bad; round++) {
            make_row(x, N);
            if (round < 2) { /* llmq's encoder: plain fit, then the grid search */
                if (llmq_quantize_row(t, x, N, 0, round == 1, blocks) != LLMQ_OK) {
                    printf("  %-5s llmq could not encode the row\n", tr->name);
                    bad = 1;
                    break;
                }
            } else if (gt->from_float_ref) {
                gt->from_float_ref(x, blocks, N);
            } else {
                continue;
            }
            tr->to_float(blocks, ours, N);
            gt->to_float(blocks, theirs, N);
            bad = compare(round == 0 ? "llmq's plain encoding" : round == 1 ? "llmq's searched encoding" : "ggml's encoding", tr->name,
                          ours, theirs, N);
        }
        printf("  %-5s %s\n", tr->name, bad ? "DIFFERENT" : "same bits");
        failed |= bad;
    }
    dlclose(lib);
    return failed;
}
