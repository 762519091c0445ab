/* libFuzzer: one safetensors file (8-byte header length, JSON header, data)
 * opened from memory. Every tensor the parser accepts must lie inside the input
 * with exactly the bytes its shape needs; the finite-value check must not crash. */
#include "fuzz_common.h"
#include "llmq/safetensors.h"

#define NAME "fuzz.safetensors"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llmq_safetensors *st = llmq_st_open_memory(data, size, NAME);
    if (!st) {
        fuzz_check_error(NAME);
        return 0;
    }
    for (size_t i = 0; i < llmq_st_count(st); i++) {
        const llmq_st_tensor *t = llmq_st_at(st, i);
        fuzz_assert(llmq_st_find(st, t->name) == t, "names are unique");
        fuzz_assert(t->n_dims >= 0 && t->n_dims <= LLMQ_ST_MAX_DIMS, "n_dims");
        int64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
        fuzz_assert(n == t->n_elements, "n_elements is the product of the shape");
        fuzz_assert(t->n_bytes == (size_t)n * llmq_type_get(t->type)->type_size, "n_bytes");
        const uint8_t *p = t->data;
        fuzz_assert(p >= data && p + t->n_bytes <= data + size, "data inside the file");
        fuzz_touch(p, t->n_bytes);
        if (llmq_st_check_finite(t) != LLMQ_OK) fuzz_check_error(NAME);
    }
    llmq_st_close(st);
    return 0;
}
