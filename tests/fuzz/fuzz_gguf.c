/* libFuzzer: the GGUF reader. Opens the input from memory, then reads every
 * key, every array element, every tensor, and the typed getters on every key. */
#include "fuzz_common.h"
#include "llmq/gguf.h"

#define NAME "fuzz.gguf"

static void read_everything(const llmq_gguf *g)
{
    int64_t n_kv = llmq_gguf_kv_count(g);
    for (int64_t k = 0; k < n_kv; k++) {
        const char *key = llmq_gguf_kv_key(g, k);
        fuzz_assert(key != NULL, "kv key");
        fuzz_assert(llmq_gguf_find_key(g, key) == k, "find_key returns the (unique) key");
        llmq_gguf_value v;
        fuzz_assert(llmq_gguf_kv_value(g, k, &v) == LLMQ_OK, "kv value");
        fuzz_assert(v.type == llmq_gguf_kv_type(g, k), "kv type");
        if (v.type == LLMQ_GGUF_STRING) fuzz_touch(v.str.ptr, v.str.len + 1);
        if (v.type == LLMQ_GGUF_ARRAY) {
            for (uint64_t i = 0; i < v.arr.count; i++) {
                llmq_gguf_value e;
                fuzz_assert(llmq_gguf_arr_value(g, k, i, &e) == LLMQ_OK, "array element");
                fuzz_assert(e.type == v.arr.elem_type, "array element type");
                size_t len = 0;
                const char *s = llmq_gguf_arr_str(g, k, i, &len);
                fuzz_assert((s != NULL) == (e.type == LLMQ_GGUF_STRING), "arr_str on string arrays only");
                if (s) fuzz_touch(s, len + 1);
            }
            llmq_gguf_value past;
            fuzz_assert(llmq_gguf_arr_value(g, k, v.arr.count, &past) != LLMQ_OK, "element past the end");
            int64_t kv;
            uint64_t count;
            fuzz_assert(llmq_gguf_get_array(g, key, v.arr.elem_type, &kv, &count) == LLMQ_OK && kv == k &&
                            count == v.arr.count,
                        "get_array");
        }
        /* Every getter either converts or says why; none may crash. */
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
        float f32;
        double f64;
        bool b;
        const char *str;
        size_t len;
        (void)llmq_gguf_get_u32(g, key, &u32);
        (void)llmq_gguf_get_i32(g, key, &i32);
        (void)llmq_gguf_get_u64(g, key, &u64);
        (void)llmq_gguf_get_i64(g, key, &i64);
        (void)llmq_gguf_get_f32(g, key, &f32);
        (void)llmq_gguf_get_f64(g, key, &f64);
        (void)llmq_gguf_get_bool(g, key, &b);
        if (llmq_gguf_get_str(g, key, &str, &len) == LLMQ_OK) fuzz_touch(str, len + 1);
    }
    fuzz_assert(llmq_gguf_kv_key(g, n_kv) == NULL, "key past the end");
    int64_t n_t = llmq_gguf_tensor_count(g);
    for (int64_t i = 0; i < n_t; i++) {
        const llmq_gguf_tensor *t = llmq_gguf_tensor_at(g, i);
        fuzz_assert(t != NULL, "tensor_at");
        fuzz_assert(llmq_gguf_find_tensor(g, t->name) == i, "find_tensor returns the (unique) tensor");
        fuzz_assert(llmq_gguf_get_tensor(g, t->name) == t, "get_tensor");
        fuzz_assert(t->n_dims >= 0 && t->n_dims <= LLMQ_GGUF_MAX_DIMS, "n_dims (0: a scalar, as ggml allows)");
        fuzz_assert(t->offset % llmq_gguf_alignment(g) == 0, "aligned offset");
        fuzz_assert(llmq_gguf_data_offset(g) + t->offset + t->size <= llmq_gguf_file_size(g), "data inside");
        fuzz_touch(t->data, t->size);
    }
    fuzz_assert(llmq_gguf_tensor_at(g, n_t) == NULL, "tensor past the end");
    if (llmq_gguf_get_tensor(g, "no such tensor \x01") == NULL) fuzz_check_error(NAME);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llmq_gguf *g = llmq_gguf_open_memory(data, size, NAME);
    if (!g) {
        fuzz_check_error(NAME);
        return 0;
    }
    read_everything(g);
    llmq_gguf_close(g);
    return 0;
}
