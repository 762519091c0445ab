#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf.h"
#include "llmq/types.h"
#include "test_util.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define assert_error_has(substr)                                                                    \
    cr_assert(strstr(llmq_last_error(), (substr)) != NULL, "error \"%s\" lacks \"%s\"", llmq_last_error(), \
              (substr))

/* ------------------------------------------------------- byte builder */

typedef struct {
    unsigned char *p;
    size_t len, cap;
} blob;

static void put(blob *b, const void *src, size_t n)
{
    if (b->cap - b->len < n) {
        b->cap = (b->cap + n) * 2;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u8(blob *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(blob *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(blob *b, uint64_t v) { put(b, &v, 8); }
static void put_str(blob *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void put_header(blob *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

static void put_kv_u32(blob *b, const char *key, uint32_t v)
{
    put_str(b, key);
    put_u32(b, LLMQ_GGUF_U32);
    put_u32(b, v);
}

static void put_tensor_info(blob *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                            uint64_t offset)
{
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) put_u64(b, ne[d]);
    put_u32(b, type);
    put_u64(b, offset);
}

static void pad_to(blob *b, size_t alignment)
{
    while (b->len % alignment) put_u8(b, 0);
}

static void put_zeros(blob *b, size_t n)
{
    for (size_t i = 0; i < n; i++) put_u8(b, 0);
}

/* Opens b from an exact-size heap copy (so ASan sees any read past the end)
 * and expects failure with a message naming "t.gguf" and holding substr. */
static void expect_rejected(const blob *b, const char *substr)
{
    unsigned char *copy = malloc(b->len ? b->len : 1);
    if (b->len) memcpy(copy, b->p, b->len);
    llmq_clear_error();
    llmq_gguf *g = llmq_gguf_open_memory(copy, b->len, "t.gguf");
    cr_assert_null(g, "a file that should fail with \"%s\" was accepted", substr);
    cr_assert(strncmp(llmq_last_error(), "t.gguf: ", 8) == 0, "error \"%s\" does not name the file",
              llmq_last_error());
    assert_error_has(substr);
    free(copy);
}

/* One tensor of type and dims with zeroed data, at offset 0. */
static blob one_tensor_file(uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset, size_t data_bytes)
{
    blob b = {0};
    put_header(&b, 3, 1, 0);
    put_tensor_info(&b, "w", n_dims, ne, type, offset);
    pad_to(&b, 32);
    put_zeros(&b, data_bytes);
    return b;
}

/* ------------------------------------------------------- round trip */

static char *slurp(const char *path, size_t *n)
{
    char *p = llmq_read_file(path, 0, n);
    cr_assert_not_null(p, "%s", llmq_last_error());
    return p;
}

static size_t count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

typedef struct {
    const char *name;
    llmq_type type;
    int n_dims;
    int64_t ne[4];
    size_t bytes; /* expected, from ggml's block sizes */
} tensor_spec;

/* F32, F16, BF16, Q4_0 and Q8_0; the last tensor's size is a multiple of 32 so
 * that the file ends exactly where its data does. */
static const tensor_spec specs[] = {
    {"token_embd.weight", LLMQ_TYPE_F16, 2, {16, 3}, 96},
    {"blk.0.attn_q.weight", LLMQ_TYPE_Q4_0, 2, {64, 3}, 108},
    {"blk.0.attn_norm.weight", LLMQ_TYPE_F32, 1, {7}, 28},
    {"blk.0.ffn_up.weight", LLMQ_TYPE_Q8_0, 4, {32, 2, 1, 2}, 136},
    {"output.weight", LLMQ_TYPE_BF16, 3, {8, 2, 4}, 128},
};
#define N_SPECS ((int)(sizeof specs / sizeof specs[0]))

static void fill_pattern(unsigned char *p, size_t n, int seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + (size_t)seed * 7 + 1);
}

/* Writes a file holding every value type and the tensors of specs. */
static void write_sample(const char *path)
{
    llmq_gguf_writer *w = llmq_gguf_writer_new(path);
    cr_assert_not_null(w);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    cr_assert_eq(llmq_gguf_writer_add_str(w, "general.architecture", "llama"), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_scalar(w, "t.u8", LLMQ_GGUF_U8, &u8), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_scalar(w, "t.i8", LLMQ_GGUF_I8, &i8), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_scalar(w, "t.u16", LLMQ_GGUF_U16, &u16), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_scalar(w, "t.i16", LLMQ_GGUF_I16, &i16), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_u32(w, "t.u32", 4000000000u), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_i32(w, "t.i32", -2000000000), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_f32(w, "t.f32", 1e-5f), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_bool(w, "t.bool", true), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_str(w, "t.string", "h\xc3\xa9llo"), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_u64(w, "t.u64", 18000000000000000000ull), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_i64(w, "t.i64", -9000000000000000000ll), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_f64(w, "t.f64", 0.1), LLMQ_OK);

    const uint8_t au8[] = {0, 255};
    const int8_t ai8[] = {-128, 127};
    const uint16_t au16[] = {1, 65535};
    const int16_t ai16[] = {-32768, 32767};
    const uint32_t au32[] = {7, 4294967295u};
    const int32_t ai32[] = {-1, 2, -3};
    const float af32[] = {0.5f, -1.25f, 3e38f};
    const bool abool[] = {true, false, true, true};
    const char *astr[] = {"<unk>", "", "\xe7\xbb\x99", "a b"};
    const uint64_t au64[] = {UINT64_MAX};
    const int64_t ai64[] = {INT64_MIN, 5};
    const double af64[] = {-0.0, 1e300};
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.u8", LLMQ_GGUF_U8, au8, 2), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.i8", LLMQ_GGUF_I8, ai8, 2), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.u16", LLMQ_GGUF_U16, au16, 2), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.i16", LLMQ_GGUF_I16, ai16, 2), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.u32", LLMQ_GGUF_U32, au32, 2), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.i32", LLMQ_GGUF_I32, ai32, 3), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.f32", LLMQ_GGUF_F32, af32, 3), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.bool", LLMQ_GGUF_BOOL, abool, 4), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.string", LLMQ_GGUF_STRING, astr, 4), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.u64", LLMQ_GGUF_U64, au64, 1), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.i64", LLMQ_GGUF_I64, ai64, 2), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.f64", LLMQ_GGUF_F64, af64, 2), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "a.empty", LLMQ_GGUF_I32, NULL, 0), LLMQ_OK);

    for (int i = 0; i < N_SPECS; i++) {
        cr_assert_eq(llmq_gguf_writer_add_tensor(w, specs[i].name, specs[i].type, specs[i].n_dims, specs[i].ne),
                     LLMQ_OK, "%s", llmq_last_error());
        cr_assert_eq(llmq_gguf_writer_tensor_size(w, specs[i].name), specs[i].bytes, "%s", specs[i].name);
    }
    cr_assert_eq(llmq_gguf_writer_begin(w), LLMQ_OK, "%s", llmq_last_error());
    /* Out of declaration order on purpose. */
    for (int k = 0; k < N_SPECS; k++) {
        int i = (k * 3) % N_SPECS;
        unsigned char buf[256];
        fill_pattern(buf, specs[i].bytes, i);
        cr_assert_eq(llmq_gguf_writer_write_tensor(w, specs[i].name, buf, specs[i].bytes), LLMQ_OK, "%s",
                     llmq_last_error());
    }
    cr_assert_eq(llmq_gguf_writer_finish(w), LLMQ_OK, "%s", llmq_last_error());
}

static void check_value(const llmq_gguf *g, const char *key, llmq_gguf_value *v)
{
    int64_t kv = llmq_gguf_find_key(g, key);
    cr_assert_geq(kv, 0, "key %s missing", key);
    cr_assert_eq(llmq_gguf_kv_value(g, kv, v), LLMQ_OK);
}

Test(gguf, round_trip_every_value_type_and_tensor)
{
    char dir[128], path[200];
    test_tmpdir(dir, sizeof dir, "gguf-rt");
    snprintf(path, sizeof path, "%s/sample.gguf", dir);
    write_sample(path);

    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert_not_null(g, "%s", llmq_last_error());
    cr_assert_eq(llmq_gguf_version(g), 3);
    cr_assert_eq(llmq_gguf_alignment(g), 32);
    cr_assert_eq(llmq_gguf_kv_count(g), 26);
    cr_assert_str_eq(llmq_gguf_kv_key(g, 0), "general.architecture");
    cr_assert_str_eq(llmq_gguf_kv_key(g, 25), "a.empty");
    cr_assert_eq(llmq_gguf_kv_type(g, 7), LLMQ_GGUF_F32);

    llmq_gguf_value v;
    check_value(g, "t.u8", &v);
    cr_assert(v.type == LLMQ_GGUF_U8 && v.u == 200);
    check_value(g, "t.i8", &v);
    cr_assert(v.type == LLMQ_GGUF_I8 && v.i == -100);
    check_value(g, "t.u16", &v);
    cr_assert(v.type == LLMQ_GGUF_U16 && v.u == 60000);
    check_value(g, "t.i16", &v);
    cr_assert(v.type == LLMQ_GGUF_I16 && v.i == -30000);
    check_value(g, "t.u32", &v);
    cr_assert(v.type == LLMQ_GGUF_U32 && v.u == 4000000000u);
    check_value(g, "t.i32", &v);
    cr_assert(v.type == LLMQ_GGUF_I32 && v.i == -2000000000);
    check_value(g, "t.f32", &v);
    cr_assert(v.type == LLMQ_GGUF_F32 && v.f == (double)1e-5f);
    check_value(g, "t.bool", &v);
    cr_assert(v.type == LLMQ_GGUF_BOOL && v.b);
    check_value(g, "t.string", &v);
    cr_assert(v.type == LLMQ_GGUF_STRING && v.str.len == 6);
    cr_assert_str_eq(v.str.ptr, "h\xc3\xa9llo");
    check_value(g, "t.u64", &v);
    cr_assert(v.type == LLMQ_GGUF_U64 && v.u == 18000000000000000000ull);
    check_value(g, "t.i64", &v);
    cr_assert(v.type == LLMQ_GGUF_I64 && v.i == -9000000000000000000ll);
    check_value(g, "t.f64", &v);
    cr_assert(v.type == LLMQ_GGUF_F64 && v.f == 0.1);

    /* Arrays: element type, count and the elements. */
    int64_t kv;
    uint64_t n;
    cr_assert_eq(llmq_gguf_get_array(g, "a.i32", LLMQ_GGUF_I32, &kv, &n), LLMQ_OK);
    cr_assert_eq(n, 3);
    const int64_t want_i32[] = {-1, 2, -3};
    for (uint64_t i = 0; i < n; i++) {
        cr_assert_eq(llmq_gguf_arr_value(g, kv, i, &v), LLMQ_OK);
        cr_assert(v.type == LLMQ_GGUF_I32 && v.i == want_i32[i]);
    }
    cr_assert_eq(llmq_gguf_arr_value(g, kv, 3, &v), LLMQ_ERR);
    assert_error_has("element 3 out of range");

    struct { const char *key; llmq_gguf_type t; uint64_t n; uint64_t last_u; int64_t last_i; double last_f; } arrays[] = {
        {"a.u8", LLMQ_GGUF_U8, 2, 255, 0, 0},           {"a.i8", LLMQ_GGUF_I8, 2, 0, 127, 0},
        {"a.u16", LLMQ_GGUF_U16, 2, 65535, 0, 0},       {"a.i16", LLMQ_GGUF_I16, 2, 0, 32767, 0},
        {"a.u32", LLMQ_GGUF_U32, 2, 4294967295u, 0, 0}, {"a.f32", LLMQ_GGUF_F32, 3, 0, 0, (double)3e38f},
        {"a.u64", LLMQ_GGUF_U64, 1, UINT64_MAX, 0, 0},  {"a.i64", LLMQ_GGUF_I64, 2, 0, 5, 0},
        {"a.f64", LLMQ_GGUF_F64, 2, 0, 0, 1e300},       {"a.empty", LLMQ_GGUF_I32, 0, 0, 0, 0},
    };
    for (size_t a = 0; a < sizeof arrays / sizeof arrays[0]; a++) {
        cr_assert_eq(llmq_gguf_get_array(g, arrays[a].key, arrays[a].t, &kv, &n), LLMQ_OK, "%s", llmq_last_error());
        cr_assert_eq(n, arrays[a].n, "%s", arrays[a].key);
        check_value(g, arrays[a].key, &v);
        cr_assert(v.type == LLMQ_GGUF_ARRAY && v.arr.elem_type == arrays[a].t && v.arr.count == arrays[a].n);
        if (n == 0) continue;
        cr_assert_eq(llmq_gguf_arr_value(g, kv, n - 1, &v), LLMQ_OK);
        cr_assert_eq(v.type, arrays[a].t);
        switch (v.type) {
        case LLMQ_GGUF_F32: case LLMQ_GGUF_F64: cr_assert_eq(v.f, arrays[a].last_f, "%s", arrays[a].key); break;
        case LLMQ_GGUF_I8: case LLMQ_GGUF_I16: case LLMQ_GGUF_I64: cr_assert_eq(v.i, arrays[a].last_i, "%s", arrays[a].key); break;
        default: cr_assert_eq(v.u, arrays[a].last_u, "%s", arrays[a].key); break;
        }
    }
    cr_assert_eq(llmq_gguf_get_array(g, "a.i64", LLMQ_GGUF_I64, &kv, &n), LLMQ_OK);
    llmq_gguf_arr_value(g, kv, 0, &v);
    cr_assert_eq(v.i, INT64_MIN);
    cr_assert_eq(llmq_gguf_get_array(g, "a.f64", LLMQ_GGUF_F64, &kv, &n), LLMQ_OK);
    llmq_gguf_arr_value(g, kv, 0, &v);
    cr_assert(v.f == 0.0 && signbit(v.f));
    cr_assert_eq(llmq_gguf_get_array(g, "a.bool", LLMQ_GGUF_BOOL, &kv, &n), LLMQ_OK);
    const bool want_bool[] = {true, false, true, true};
    for (uint64_t i = 0; i < n; i++) {
        llmq_gguf_arr_value(g, kv, i, &v);
        cr_assert_eq(v.b, want_bool[i]);
    }
    cr_assert_eq(llmq_gguf_get_array(g, "a.string", LLMQ_GGUF_STRING, &kv, &n), LLMQ_OK);
    cr_assert_eq(n, 4);
    const char *want_str[] = {"<unk>", "", "\xe7\xbb\x99", "a b"};
    for (uint64_t i = 0; i < n; i++) {
        size_t len;
        const char *s = llmq_gguf_arr_str(g, kv, i, &len);
        cr_assert_not_null(s);
        cr_assert_str_eq(s, want_str[i]);
        cr_assert_eq(len, strlen(want_str[i]));
    }
    cr_assert_null(llmq_gguf_arr_str(g, kv, 4, NULL));

    /* Tensors: in declaration order, dims, sizes, data, alignment. */
    cr_assert_eq(llmq_gguf_tensor_count(g), N_SPECS);
    size_t size;
    char *bytes = slurp(path, &size);
    cr_assert_eq(llmq_gguf_file_size(g), size);
    cr_assert_eq(llmq_gguf_data_offset(g) % 32, 0);
    for (int i = 0; i < N_SPECS; i++) {
        const llmq_gguf_tensor *t = llmq_gguf_tensor_at(g, i);
        cr_assert_str_eq(t->name, specs[i].name);
        cr_assert_eq(llmq_gguf_find_tensor(g, specs[i].name), i);
        cr_assert_eq(llmq_gguf_get_tensor(g, specs[i].name), t);
        cr_assert_eq(t->type, specs[i].type);
        cr_assert_eq(t->n_dims, specs[i].n_dims);
        int64_t n_el = 1;
        for (int d = 0; d < 4; d++) {
            int64_t want = d < specs[i].n_dims ? specs[i].ne[d] : 1;
            cr_assert_eq(t->ne[d], want, "%s ne[%d]", t->name, d);
            n_el *= want;
        }
        cr_assert_eq(t->n_elements, n_el);
        cr_assert_eq(t->size, specs[i].bytes, "%s: %zu bytes", t->name, t->size);
        cr_assert_eq(t->offset % 32, 0, "%s offset %" PRIu64, t->name, t->offset);
        size_t file_off = llmq_gguf_data_offset(g) + t->offset;
        cr_assert_eq(file_off % 32, 0);
        unsigned char want[256];
        fill_pattern(want, specs[i].bytes, i);
        cr_assert_eq(memcmp(t->data, want, t->size), 0, "%s data", t->name);
        cr_assert_eq(memcmp(bytes + file_off, want, t->size), 0);
        /* The padding after each tensor is zeros. */
        for (size_t k = t->size; k % 32; k++) cr_assert_eq(bytes[file_off + k], 0);
    }
    cr_assert_eq(size, llmq_gguf_data_offset(g) + llmq_gguf_tensor_at(g, N_SPECS - 1)->offset + 128);
    cr_assert_null(llmq_gguf_tensor_at(g, N_SPECS));
    cr_assert_eq(llmq_gguf_find_tensor(g, "nope"), -1);
    cr_assert_null(llmq_gguf_get_tensor(g, "nope"));
    assert_error_has("sample.gguf: tensor 'nope' is missing");
    free(bytes);
    llmq_gguf_close(g);
    cr_assert_eq(count_dir_entries(dir), 1, "only the final file remains");
}

Test(gguf, block_sizes_match_ggml)
{
    /* Whichever table is linked (blocks.c or the fallback above), the sizes
     * the writer uses are ggml's. */
    cr_assert_eq(llmq_row_size(LLMQ_TYPE_Q4_0, 64), 36);
    cr_assert_eq(llmq_row_size(LLMQ_TYPE_Q8_0, 64), 68);
    cr_assert_eq(llmq_row_size(LLMQ_TYPE_BF16, 8), 16);
}

Test(gguf, typed_getters_convert_only_losslessly)
{
    char dir[128], path[200];
    test_tmpdir(dir, sizeof dir, "gguf-get");
    snprintf(path, sizeof path, "%s/g.gguf", dir);
    write_sample(path);
    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert_not_null(g, "%s", llmq_last_error());

    uint32_t u32 = 0;
    int32_t i32 = 0;
    uint64_t u64 = 0;
    int64_t i64 = 0;
    float f32 = 0;
    double f64 = 0;
    bool b = false;
    const char *s = NULL;
    size_t len = 0;
    cr_assert_eq(llmq_gguf_get_u32(g, "t.u8", &u32), LLMQ_OK);
    cr_assert_eq(u32, 200);
    cr_assert_eq(llmq_gguf_get_i32(g, "t.i16", &i32), LLMQ_OK);
    cr_assert_eq(i32, -30000);
    cr_assert_eq(llmq_gguf_get_i64(g, "t.u32", &i64), LLMQ_OK);
    cr_assert_eq(i64, 4000000000ll);
    cr_assert_eq(llmq_gguf_get_u64(g, "t.u64", &u64), LLMQ_OK);
    cr_assert_eq(u64, 18000000000000000000ull);
    cr_assert_eq(llmq_gguf_get_f32(g, "t.f32", &f32), LLMQ_OK);
    cr_assert_eq(f32, 1e-5f);
    cr_assert_eq(llmq_gguf_get_f64(g, "t.f32", &f64), LLMQ_OK);
    cr_assert_eq(f64, (double)1e-5f);
    cr_assert_eq(llmq_gguf_get_bool(g, "t.bool", &b), LLMQ_OK);
    cr_assert(b);
    cr_assert_eq(llmq_gguf_get_str(g, "general.architecture", &s, &len), LLMQ_OK);
    cr_assert_str_eq(s, "llama");
    cr_assert_eq(len, 5);

    /* Out of range, wrong type, inexact, missing. */
    cr_assert_eq(llmq_gguf_get_u32(g, "t.i8", &u32), LLMQ_ERR);
    assert_error_has("g.gguf: key 't.i8': value -100 does not fit in u32");
    cr_assert_eq(llmq_gguf_get_i32(g, "t.u32", &i32), LLMQ_ERR);
    assert_error_has("value 4000000000 does not fit in i32");
    cr_assert_eq(llmq_gguf_get_i64(g, "t.u64", &i64), LLMQ_ERR);
    cr_assert_eq(llmq_gguf_get_u64(g, "t.i64", &u64), LLMQ_ERR);
    cr_assert_eq(llmq_gguf_get_u32(g, "t.string", &u32), LLMQ_ERR);
    assert_error_has("key 't.string': has type string, expected u32");
    cr_assert_eq(llmq_gguf_get_f32(g, "t.f64", &f32), LLMQ_ERR);
    assert_error_has("not exactly representable as f32");
    cr_assert_eq(llmq_gguf_get_bool(g, "t.u8", &b), LLMQ_ERR);
    cr_assert_eq(llmq_gguf_get_str(g, "a.string", &s, NULL), LLMQ_ERR);
    assert_error_has("is an array, expected a scalar");
    int64_t kv;
    cr_assert_eq(llmq_gguf_get_array(g, "a.f32", LLMQ_GGUF_I32, &kv, NULL), LLMQ_ERR);
    assert_error_has("key 'a.f32': has type array of f32, expected array of i32");
    cr_assert_eq(llmq_gguf_get_array(g, "t.u8", LLMQ_GGUF_U8, &kv, NULL), LLMQ_ERR);

    u32 = 77; /* a default survives a missing key */
    cr_assert_eq(llmq_gguf_get_u32(g, "llama.nope", &u32), LLMQ_GGUF_ABSENT);
    cr_assert_eq(u32, 77);
    assert_error_has("g.gguf: key 'llama.nope' is missing");
    cr_assert_eq(llmq_gguf_get_array(g, "nope", LLMQ_GGUF_STRING, &kv, NULL), LLMQ_GGUF_ABSENT);
    cr_assert_eq(llmq_gguf_find_key(g, "nope"), -1);
    cr_assert_null(llmq_gguf_kv_key(g, 26));
    cr_assert_str_eq(llmq_gguf_type_name(LLMQ_GGUF_F64), "f64");
    cr_assert_str_eq(llmq_gguf_type_name(13), "?");
    llmq_gguf_close(g);
}

Test(gguf, custom_alignment_is_honoured)
{
    char dir[128], path[200];
    test_tmpdir(dir, sizeof dir, "gguf-align");
    snprintf(path, sizeof path, "%s/a.gguf", dir);
    llmq_gguf_writer *w = llmq_gguf_writer_new(path);
    cr_assert_eq(llmq_gguf_writer_add_u32(w, "general.alignment", 64), LLMQ_OK);
    const int64_t ne[] = {3};
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "a", LLMQ_TYPE_F32, 1, ne), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "b", LLMQ_TYPE_F32, 1, ne), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_begin(w), LLMQ_OK);
    const float x[] = {1, 2, 3}, y[] = {4, 5, 6};
    cr_assert_eq(llmq_gguf_writer_write_tensor(w, "a", x, sizeof x), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_write_tensor(w, "b", y, sizeof y), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_finish(w), LLMQ_OK, "%s", llmq_last_error());
    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert_not_null(g, "%s", llmq_last_error());
    cr_assert_eq(llmq_gguf_alignment(g), 64);
    cr_assert_eq(llmq_gguf_data_offset(g) % 64, 0);
    cr_assert_eq(llmq_gguf_tensor_at(g, 1)->offset, 64);
    float got[3];
    memcpy(got, llmq_gguf_tensor_at(g, 1)->data, sizeof got);
    cr_assert(got[0] == 4 && got[2] == 6);
    llmq_gguf_close(g);
}

/* ------------------------------------------------------- llama.cpp vocab files */

Test(gguf, reads_llamacpp_vocab_llama_spm)
{
    char path[512];
    REQUIRE_SHARED(path, "tokenizers/llamacpp-vocab-tests/ggml-vocab-llama-spm.gguf");
    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert_not_null(g, "%s", llmq_last_error());
    /* Expected values from tests/tools/gguf_summary.py (an independent Python reader). */
    cr_assert_eq(llmq_gguf_version(g), 3);
    cr_assert_eq(llmq_gguf_kv_count(g), 22);
    cr_assert_eq(llmq_gguf_tensor_count(g), 0);
    const char *s;
    cr_assert_eq(llmq_gguf_get_str(g, "tokenizer.ggml.model", &s, NULL), LLMQ_OK);
    cr_assert_str_eq(s, "llama");
    cr_assert_eq(llmq_gguf_get_str(g, "tokenizer.ggml.pre", &s, NULL), LLMQ_OK);
    cr_assert_str_eq(s, "default");
    uint32_t u;
    cr_assert_eq(llmq_gguf_get_u32(g, "llama.feed_forward_length", &u), LLMQ_OK);
    cr_assert_eq(u, 11008);
    cr_assert_eq(llmq_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u), LLMQ_OK);
    cr_assert_eq(u, 1);
    float eps;
    cr_assert_eq(llmq_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps), LLMQ_OK);
    cr_assert_eq(eps, 1e-5f);
    bool add_bos = false, add_eos = true;
    cr_assert_eq(llmq_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos), LLMQ_OK);
    cr_assert_eq(llmq_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos), LLMQ_OK);
    cr_assert(add_bos && !add_eos);

    int64_t tokens, scores, types;
    uint64_t n;
    cr_assert_eq(llmq_gguf_get_array(g, "tokenizer.ggml.tokens", LLMQ_GGUF_STRING, &tokens, &n), LLMQ_OK);
    cr_assert_eq(n, 32000);
    cr_assert_str_eq(llmq_gguf_arr_str(g, tokens, 0, NULL), "<unk>");
    cr_assert_str_eq(llmq_gguf_arr_str(g, tokens, 31999, NULL), "\xe7\xbb\x99"); /* 给 */
    cr_assert_eq(llmq_gguf_get_array(g, "tokenizer.ggml.scores", LLMQ_GGUF_F32, &scores, &n), LLMQ_OK);
    cr_assert_eq(n, 32000);
    llmq_gguf_value v;
    cr_assert_eq(llmq_gguf_arr_value(g, scores, 31999, &v), LLMQ_OK);
    cr_assert_eq(v.f, -31740.0);
    cr_assert_eq(llmq_gguf_get_array(g, "tokenizer.ggml.token_type", LLMQ_GGUF_I32, &types, &n), LLMQ_OK);
    cr_assert_eq(n, 32000);
    cr_assert_eq(llmq_gguf_arr_value(g, types, 0, &v), LLMQ_OK);
    cr_assert_eq(v.i, 2);
    llmq_gguf_close(g);
}

Test(gguf, reads_every_llamacpp_vocab_file)
{
    /* name, tokenizer.ggml.model, token count, merge count (0: none), from
     * tests/tools/gguf_summary.py. */
    static const struct {
        const char *name, *model;
        uint64_t tokens, merges;
    } vocabs[] = {
        {"baichuan", "llama", 64000, 0},        {"bert-bge", "bert", 30522, 0},
        {"deepseek-coder", "gpt2", 32256, 31757}, {"deepseek-llm", "gpt2", 102400, 99757},
        {"falcon", "gpt2", 65024, 64784},       {"gpt-2", "gpt2", 50257, 50000},
        {"gpt-neox", "gpt2", 50432, 50009},     {"llama-spm", "llama", 32000, 0},
        {"mpt", "gpt2", 50432, 50009},          {"phi-3", "llama", 32064, 0},
        {"refact", "gpt2", 49216, 48891},       {"starcoder", "gpt2", 49152, 48872},
    };
    for (size_t i = 0; i < sizeof vocabs / sizeof vocabs[0]; i++) {
        char rel[256], path[512];
        snprintf(rel, sizeof rel, "tokenizers/llamacpp-vocab-tests/ggml-vocab-%s.gguf", vocabs[i].name);
        REQUIRE_SHARED(path, rel);
        llmq_gguf *g = llmq_gguf_open(path);
        cr_assert_not_null(g, "%s", llmq_last_error());
        const char *model;
        cr_assert_eq(llmq_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL), LLMQ_OK);
        cr_assert_str_eq(model, vocabs[i].model, "%s", vocabs[i].name);
        int64_t kv;
        uint64_t n;
        cr_assert_eq(llmq_gguf_get_array(g, "tokenizer.ggml.tokens", LLMQ_GGUF_STRING, &kv, &n), LLMQ_OK);
        cr_assert_eq(n, vocabs[i].tokens, "%s", vocabs[i].name);
        int rc = llmq_gguf_get_array(g, "tokenizer.ggml.merges", LLMQ_GGUF_STRING, &kv, &n);
        if (vocabs[i].merges) {
            cr_assert_eq(rc, LLMQ_OK, "%s", llmq_last_error());
            cr_assert_eq(n, vocabs[i].merges, "%s", vocabs[i].name);
        } else {
            cr_assert_eq(rc, LLMQ_GGUF_ABSENT, "%s", vocabs[i].name);
        }
        llmq_gguf_close(g);
    }
}

Test(gguf, gpt2_merges_content)
{
    char path[512];
    REQUIRE_SHARED(path, "tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf");
    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert_not_null(g, "%s", llmq_last_error());
    int64_t kv;
    uint64_t n;
    cr_assert_eq(llmq_gguf_get_array(g, "tokenizer.ggml.merges", LLMQ_GGUF_STRING, &kv, &n), LLMQ_OK);
    cr_assert_str_eq(llmq_gguf_arr_str(g, kv, 0, NULL), "\xc4\xa0 t"); /* "Ġ t" */
    cr_assert_str_eq(llmq_gguf_arr_str(g, kv, n - 1, NULL), "\xc4\xa0g azed");
    cr_assert_eq(llmq_gguf_get_array(g, "tokenizer.ggml.tokens", LLMQ_GGUF_STRING, &kv, &n), LLMQ_OK);
    cr_assert_str_eq(llmq_gguf_arr_str(g, kv, n - 1, NULL), "<|endoftext|>");
    uint32_t eos;
    cr_assert_eq(llmq_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos), LLMQ_OK);
    cr_assert_eq(eos, 50256);
    llmq_gguf_close(g);
}

/* ------------------------------------------------------- hostile files */

Test(gguf, rejects_bad_magic_and_versions)
{
    blob b = {0};
    expect_rejected(&b, "header: file ends while reading the magic");
    put(&b, "GGML", 4);
    put_u32(&b, 3);
    expect_rejected(&b, "not a GGUF file (magic 'GGML'");
    free(b.p);

    b = (blob){0};
    put_header(&b, 1, 0, 0);
    expect_rejected(&b, "version 1 is not supported");
    free(b.p);
    b = (blob){0};
    put_header(&b, 4, 0, 0);
    expect_rejected(&b, "unsupported version 4");
    free(b.p);
    b = (blob){0};
    put_header(&b, 0x03000000u, 0, 0);
    expect_rejected(&b, "big-endian GGUF files are not supported");
    free(b.p);
}

Test(gguf, accepts_version_2_and_empty_files)
{
    blob b = {0};
    put_header(&b, 2, 0, 1);
    put_kv_u32(&b, "general.file_type", 15);
    llmq_gguf *g = llmq_gguf_open_memory(b.p, b.len, "v2.gguf");
    cr_assert_not_null(g, "%s", llmq_last_error());
    cr_assert_eq(llmq_gguf_version(g), 2);
    uint32_t ft;
    cr_assert_eq(llmq_gguf_get_u32(g, "general.file_type", &ft), LLMQ_OK);
    cr_assert_eq(ft, 15);
    llmq_gguf_close(g);
    free(b.p);
}

Test(gguf, rejects_lying_counts)
{
    blob b = {0};
    put_header(&b, 3, 0, 1ull << 40);
    put_kv_u32(&b, "k", 1);
    expect_rejected(&b, "header: kv count 1099511627776 cannot fit");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, UINT64_MAX, 0);
    expect_rejected(&b, "header: tensor count 18446744073709551615 cannot fit");
    free(b.p);

    /* Counts that fit the file size but promise more entries than exist. */
    b = (blob){0};
    put_header(&b, 3, 0, 3);
    put_kv_u32(&b, "a", 1);
    put_kv_u32(&b, "b", 2);
    put_zeros(&b, 5);
    expect_rejected(&b, "key #2: file ends while reading key (5 bytes left");
    free(b.p);
}

Test(gguf, rejects_huge_strings_and_arrays)
{
    blob b = {0};
    put_header(&b, 3, 0, 1);
    put_u64(&b, UINT64_MAX); /* key length */
    put_zeros(&b, 16);
    expect_rejected(&b, "key #0: key: string length 18446744073709551615 exceeds the 16 bytes left");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "general.name");
    put_u32(&b, LLMQ_GGUF_STRING);
    put_u64(&b, 1ull << 62);
    put(&b, "abc", 3);
    expect_rejected(&b, "key 'general.name': value: string length 4611686018427387904 exceeds the 3 bytes left");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "tokenizer.ggml.scores");
    put_u32(&b, LLMQ_GGUF_ARRAY);
    put_u32(&b, LLMQ_GGUF_F32);
    put_u64(&b, UINT64_MAX / 2);
    put_zeros(&b, 64);
    expect_rejected(&b, "key 'tokenizer.ggml.scores': 9223372036854775807 f32 values need more than");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, LLMQ_GGUF_ARRAY);
    put_u32(&b, LLMQ_GGUF_STRING);
    put_u64(&b, 1000000);
    put_str(&b, "a");
    expect_rejected(&b, "key 'tokenizer.ggml.tokens': 1000000 strings cannot fit in the 9 bytes left");
    free(b.p);

    /* The count fits, one element's length lies. */
    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, LLMQ_GGUF_ARRAY);
    put_u32(&b, LLMQ_GGUF_STRING);
    put_u64(&b, 3);
    put_str(&b, "a");
    put_str(&b, "b");
    put_u64(&b, 1000);
    put_zeros(&b, 8);
    expect_rejected(&b, "key 'tokenizer.ggml.tokens': element 2: string length 1000 exceeds the 8 bytes left");
    free(b.p);
}

Test(gguf, rejects_bad_value_types)
{
    blob b = {0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "x.y");
    put_u32(&b, 13);
    put_u32(&b, 0);
    expect_rejected(&b, "key 'x.y': unknown value type 13");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "x.y");
    put_u32(&b, LLMQ_GGUF_ARRAY);
    put_u32(&b, 0xdeadbeefu);
    put_u64(&b, 0);
    expect_rejected(&b, "key 'x.y': unknown array element type 3735928559");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "x.nested");
    put_u32(&b, LLMQ_GGUF_ARRAY);
    put_u32(&b, LLMQ_GGUF_ARRAY);
    put_u64(&b, 1);
    put_u32(&b, LLMQ_GGUF_U8);
    put_u64(&b, 1);
    put_u8(&b, 1);
    expect_rejected(&b, "key 'x.nested': arrays of arrays are not supported");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "x.flag");
    put_u32(&b, LLMQ_GGUF_BOOL);
    put_u8(&b, 2);
    expect_rejected(&b, "key 'x.flag': bool value 2 is not 0 or 1");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "x.flags");
    put_u32(&b, LLMQ_GGUF_ARRAY);
    put_u32(&b, LLMQ_GGUF_BOOL);
    put_u64(&b, 3);
    put_u8(&b, 0);
    put_u8(&b, 1);
    put_u8(&b, 255);
    expect_rejected(&b, "key 'x.flags': element 2: bool value 255 is not 0 or 1");
    free(b.p);
}

Test(gguf, rejects_duplicates)
{
    blob b = {0};
    put_header(&b, 3, 0, 3);
    put_kv_u32(&b, "a", 1);
    put_kv_u32(&b, "general.alignment", 32);
    put_kv_u32(&b, "a", 2);
    expect_rejected(&b, "key 'a': duplicate key (first defined by key #0)");
    free(b.p);

    b = (blob){0};
    const uint64_t ne[] = {8};
    put_header(&b, 3, 2, 0);
    put_tensor_info(&b, "w", 1, ne, LLMQ_TYPE_F32, 0);
    put_tensor_info(&b, "w", 1, ne, LLMQ_TYPE_F32, 32);
    pad_to(&b, 32);
    put_zeros(&b, 64);
    expect_rejected(&b, "tensor 'w': duplicate tensor name (first used by tensor #0)");
    free(b.p);
}

Test(gguf, rejects_bad_alignment)
{
    blob b = {0};
    put_header(&b, 3, 0, 1);
    put_kv_u32(&b, "general.alignment", 48);
    expect_rejected(&b, "key 'general.alignment': alignment 48 is not a power of two");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_kv_u32(&b, "general.alignment", 0);
    expect_rejected(&b, "alignment 0 is not a power of two");
    free(b.p);

    b = (blob){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, LLMQ_GGUF_U64);
    put_u64(&b, 32);
    expect_rejected(&b, "key 'general.alignment': has type u64, expected u32");
    free(b.p);
}

Test(gguf, rejects_bad_tensor_shapes_and_types)
{
    const uint64_t five[] = {1, 1, 1, 1, 1};
    blob b = one_tensor_file(5, five, LLMQ_TYPE_F32, 0, 32);
    expect_rejected(&b, "tensor 'w': n_dims is 5, at most 4 are allowed");
    free(b.p);

    const uint64_t ne8[] = {8};
    b = one_tensor_file(1, ne8, 99, 0, 32);
    expect_rejected(&b, "tensor 'w': unknown tensor type id 99");
    free(b.p);
    b = one_tensor_file(1, ne8, 0x80000000u, 0, 32);
    expect_rejected(&b, "unknown tensor type id 2147483648");
    free(b.p);

    const uint64_t zero[] = {8, 0};
    b = one_tensor_file(2, zero, LLMQ_TYPE_F32, 0, 32);
    expect_rejected(&b, "tensor 'w': ne[1] is 0");
    free(b.p);

    const uint64_t huge[] = {1ull << 62};
    b = one_tensor_file(1, huge, LLMQ_TYPE_F32, 0, 32);
    expect_rejected(&b, "tensor 'w': 4611686018427387904 f32 elements need more bytes than the file has");
    free(b.p);

    const uint64_t overflow[] = {1ull << 32, 1ull << 32};
    b = one_tensor_file(2, overflow, LLMQ_TYPE_F32, 0, 32);
    expect_rejected(&b, "tensor 'w': the element count overflows 64 bits");
    free(b.p);

    const uint64_t negative[] = {1ull << 63};
    b = one_tensor_file(1, negative, LLMQ_TYPE_F32, 0, 32);
    expect_rejected(&b, "tensor 'w': ne[0] is 9223372036854775808, too large");
    free(b.p);

    const uint64_t ne33[] = {33, 2};
    b = one_tensor_file(2, ne33, LLMQ_TYPE_Q8_0, 0, 128);
    expect_rejected(&b, "tensor 'w': row length ne[0]=33 is not a multiple of the q8_0 block size 32");
    free(b.p);

    char long_name[65];
    memset(long_name, 'x', 64);
    long_name[64] = '\0';
    b = (blob){0};
    put_header(&b, 3, 1, 0);
    put_tensor_info(&b, long_name, 1, ne8, LLMQ_TYPE_F32, 0);
    pad_to(&b, 32);
    put_zeros(&b, 32);
    expect_rejected(&b, "tensor #0: name is 64 bytes long, the limit is 63");
    free(b.p);
}

Test(gguf, rejects_bad_offsets)
{
    const uint64_t ne8[] = {8};
    blob b = one_tensor_file(1, ne8, LLMQ_TYPE_F32, 16, 64);
    expect_rejected(&b, "tensor 'w': offset 16 is not a multiple of the alignment 32");
    free(b.p);

    b = one_tensor_file(1, ne8, LLMQ_TYPE_F32, 32, 48);
    expect_rejected(&b, "tensor 'w': offset 32 + 32 bytes runs past the end of the file (the data section holds 48 bytes)");
    free(b.p);

    b = one_tensor_file(1, ne8, LLMQ_TYPE_F32, UINT64_MAX - 31, 32);
    expect_rejected(&b, "tensor 'w': offset 18446744073709551584 + 32 bytes runs past the end");
    free(b.p);

    /* The tensor infos end off the alignment and the file stops before the
     * padded start of the data section. */
    b = (blob){0};
    put_header(&b, 3, 1, 0);
    put_tensor_info(&b, "w", 1, ne8, LLMQ_TYPE_F32, 0);
    expect_rejected(&b, "data section: starts at offset 64, past the end of the file (57 bytes)");
    free(b.p);

    const uint64_t ne16[] = {16};
    b = (blob){0};
    put_header(&b, 3, 3, 0);
    put_tensor_info(&b, "a", 1, ne16, LLMQ_TYPE_F32, 64);
    put_tensor_info(&b, "b", 1, ne16, LLMQ_TYPE_F32, 0);
    put_tensor_info(&b, "c", 1, ne16, LLMQ_TYPE_F32, 32);
    pad_to(&b, 32);
    put_zeros(&b, 128);
    expect_rejected(&b, "tensor 'c': data at offset 32 overlaps tensor 'b' (offset 0, 64 bytes)");
    free(b.p);
}

Test(gguf, names_with_control_bytes_are_quoted)
{
    blob b = {0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "bad\nkey");
    put_u32(&b, 77);
    expect_rejected(&b, "key 'bad?key': unknown value type 77");
    free(b.p);
}

Test(gguf, rejects_nul_bytes_in_names)
{
    /* A NUL would make the name unreachable through the C-string lookups. */
    blob b = {0};
    put_header(&b, 3, 0, 1);
    put_u64(&b, 3);
    put(&b, "a\0b", 3);
    put_u32(&b, LLMQ_GGUF_U8);
    put_u8(&b, 1);
    expect_rejected(&b, "key 'a?b': the key contains a NUL byte");
    free(b.p);

    b = (blob){0};
    const uint64_t ne8[] = {8};
    put_header(&b, 3, 1, 0);
    put_u64(&b, 2);
    put(&b, "w\0", 2);
    put_u32(&b, 1);
    put_u64(&b, ne8[0]);
    put_u32(&b, LLMQ_TYPE_F32);
    put_u64(&b, 0);
    pad_to(&b, 32);
    put_zeros(&b, 32);
    expect_rejected(&b, "tensor 'w?': the name contains a NUL byte");
    free(b.p);
}

Test(gguf, every_truncation_of_a_valid_file_fails_cleanly)
{
    char dir[128], path[200];
    test_tmpdir(dir, sizeof dir, "gguf-trunc");
    snprintf(path, sizeof path, "%s/t.gguf", dir);
    write_sample(path);
    size_t size;
    char *full = slurp(path, &size);
    cr_assert_gt(size, 600);
    for (size_t n = 0; n < size; n++) {
        unsigned char *copy = malloc(n ? n : 1);
        memcpy(copy, full, n);
        llmq_clear_error();
        llmq_gguf *g = llmq_gguf_open_memory(copy, n, "cut.gguf");
        cr_assert_null(g, "a file cut to %zu of %zu bytes was accepted", n, size);
        cr_assert(strncmp(llmq_last_error(), "cut.gguf: ", 10) == 0, "cut at %zu: \"%s\"", n, llmq_last_error());
        free(copy);
    }
    llmq_gguf *g = llmq_gguf_open_memory(full, size, "whole.gguf");
    cr_assert_not_null(g, "%s", llmq_last_error());
    llmq_gguf_close(g);
    free(full);
}

/* Reads everything an opened file offers, so ASan sees any bad pointer. */
static void walk(const llmq_gguf *g)
{
    llmq_gguf_value v;
    for (int64_t kv = 0; kv < llmq_gguf_kv_count(g); kv++) {
        cr_assert_not_null(llmq_gguf_kv_key(g, kv));
        cr_assert_eq(llmq_gguf_kv_value(g, kv, &v), LLMQ_OK);
        if (v.type != LLMQ_GGUF_ARRAY) continue;
        for (uint64_t i = 0; i < v.arr.count; i++) {
            llmq_gguf_value e;
            cr_assert_eq(llmq_gguf_arr_value(g, kv, i, &e), LLMQ_OK);
            if (e.type == LLMQ_GGUF_STRING) cr_assert_eq(strlen(e.str.ptr) <= e.str.len, 1);
        }
    }
    for (int64_t i = 0; i < llmq_gguf_tensor_count(g); i++) {
        const llmq_gguf_tensor *t = llmq_gguf_tensor_at(g, i);
        const unsigned char *d = t->data;
        volatile unsigned char sink = d[0] ^ d[t->size - 1];
        (void)sink;
        cr_assert_eq(llmq_gguf_find_tensor(g, t->name), i);
    }
}

Test(gguf, random_corruptions_fail_cleanly_or_read_safely)
{
    char dir[128], path[200];
    test_tmpdir(dir, sizeof dir, "gguf-fuzz");
    snprintf(path, sizeof path, "%s/f.gguf", dir);
    write_sample(path);
    size_t size;
    char *full = slurp(path, &size);
    uint64_t state = 0x9e3779b97f4a7c15ull; /* xorshift64: deterministic */
    int opened = 0, rejected = 0;
    for (int iter = 0; iter < 4000; iter++) {
        unsigned char *copy = malloc(size);
        memcpy(copy, full, size);
        int edits = 1 + iter % 4;
        for (int e = 0; e < edits; e++) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            size_t at = (size_t)(state % (size - 8));
            switch ((state >> 32) % 4) {
            case 0: copy[at] ^= (unsigned char)(1u << ((state >> 40) % 8)); break; /* a bit */
            case 1: copy[at] = (unsigned char)(state >> 48); break;                 /* a byte */
            case 2: memset(copy + at, 0xff, 8); break;                              /* a huge u64 */
            default: { uint64_t small = (state >> 44) % 80; memcpy(copy + at, &small, 8); } break;
            }
        }
        llmq_clear_error();
        llmq_gguf *g = llmq_gguf_open_memory(copy, size, "fz.gguf");
        if (g) {
            walk(g);
            llmq_gguf_close(g);
            opened++;
        } else {
            cr_assert(strncmp(llmq_last_error(), "fz.gguf: ", 9) == 0, "\"%s\"", llmq_last_error());
            rejected++;
        }
        free(copy);
    }
    cr_log_info("corruptions: %d opened, %d rejected", opened, rejected);
    /* Edits to tensor data or to values leave valid files; most others do not. */
    cr_assert_gt(opened, 100);
    cr_assert_gt(rejected, 1000);
    free(full);
}

Test(gguf, open_reports_missing_file)
{
    cr_assert_null(llmq_gguf_open("build/tmp/does-not-exist.gguf"));
    assert_error_has("build/tmp/does-not-exist.gguf: cannot open");
}

/* ------------------------------------------------------- writer failures */

Test(gguf, writer_rejects_bad_declarations)
{
    char dir[128], path[200];
    test_tmpdir(dir, sizeof dir, "gguf-wdecl");
    snprintf(path, sizeof path, "%s/w.gguf", dir);
    llmq_gguf_writer *w = llmq_gguf_writer_new(path);
    cr_assert_eq(llmq_gguf_writer_add_u32(w, "a", 1), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_str(w, "a", "x"), LLMQ_ERR);
    assert_error_has("w.gguf: key 'a' added twice");
    cr_assert_eq(llmq_gguf_writer_add_u32(w, "general.alignment", 24), LLMQ_ERR);
    assert_error_has("alignment 24 is not a power of two");
    cr_assert_eq(llmq_gguf_writer_add_i32(w, "general.alignment", 32), LLMQ_ERR);
    cr_assert_eq(llmq_gguf_writer_add_array(w, "nested", LLMQ_GGUF_ARRAY, NULL, 0), LLMQ_ERR);
    cr_assert_eq(llmq_gguf_writer_add_scalar(w, "s", LLMQ_GGUF_STRING, "x"), LLMQ_ERR);
    const char *with_null[] = {"a", NULL};
    cr_assert_eq(llmq_gguf_writer_add_array(w, "strs", LLMQ_GGUF_STRING, with_null, 2), LLMQ_ERR);
    assert_error_has("key 'strs': string 1 is NULL");

    char name64[65];
    memset(name64, 'n', 64);
    name64[64] = '\0';
    const int64_t ne[] = {32, 2};
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, name64, LLMQ_TYPE_F32, 2, ne), LLMQ_ERR);
    assert_error_has("name is 64 bytes long, the limit is 63");
    name64[63] = '\0';
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, name64, LLMQ_TYPE_F32, 2, ne), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, name64, LLMQ_TYPE_F16, 2, ne), LLMQ_ERR);
    assert_error_has("declared twice");
    const int64_t ne48[] = {48};
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "q", LLMQ_TYPE_Q4_0, 1, ne48), LLMQ_ERR);
    assert_error_has("tensor 'q': row length ne[0]=48 is not a multiple of the q4_0 block size 32");
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "q", (llmq_type)5, 1, ne48), LLMQ_ERR);
    assert_error_has("unknown type id 5");
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "q", LLMQ_TYPE_F32, 5, ne48), LLMQ_ERR);
    const int64_t neg[] = {-4};
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "q", LLMQ_TYPE_F32, 1, neg), LLMQ_ERR);

    float data[64] = {0};
    cr_assert_eq(llmq_gguf_writer_write_tensor(w, name64, data, sizeof data), LLMQ_ERR);
    assert_error_has("begin has not been called");
    cr_assert_eq(llmq_gguf_writer_begin(w), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(llmq_gguf_writer_add_u32(w, "late", 1), LLMQ_ERR);
    assert_error_has("after writing has begun");
    cr_assert_eq(llmq_gguf_writer_write_tensor(w, name64, data, 100), LLMQ_ERR);
    assert_error_has("got 100 bytes of data, its shape and type need 256");
    cr_assert_eq(llmq_gguf_writer_write_tensor(w, "other", data, 256), LLMQ_ERR);
    assert_error_has("tensor 'other' was not declared");
    cr_assert_eq(llmq_gguf_writer_write_tensor(w, name64, data, sizeof data), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_write_tensor(w, name64, data, sizeof data), LLMQ_ERR);
    assert_error_has("written twice");
    cr_assert_eq(llmq_gguf_writer_finish(w), LLMQ_OK, "%s", llmq_last_error());

    /* The failed calls left no trace: the file holds exactly what succeeded. */
    llmq_gguf *g = llmq_gguf_open(path);
    cr_assert_not_null(g, "%s", llmq_last_error());
    cr_assert_eq(llmq_gguf_kv_count(g), 1);
    cr_assert_eq(llmq_gguf_tensor_count(g), 1);
    cr_assert_eq(llmq_gguf_tensor_at(g, 0)->size, 256);
    llmq_gguf_close(g);
}

Test(gguf, writer_rejects_absurd_sizes)
{
    char dir[128], path[200];
    test_tmpdir(dir, sizeof dir, "gguf-wsize");
    snprintf(path, sizeof path, "%s/w.gguf", dir);
    llmq_gguf_writer *w = llmq_gguf_writer_new(path);
    const int64_t too_big[] = {INT64_MAX / 2, 2};
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "a", LLMQ_TYPE_F32, 2, too_big), LLMQ_ERR);
    assert_error_has("tensor 'a': the byte size overflows");
    const int64_t overflow[] = {1ll << 32, 1ll << 32};
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "a", LLMQ_TYPE_F32, 2, overflow), LLMQ_ERR);
    assert_error_has("the element count overflows 64 bits");
    const int64_t big[] = {1ll << 59}; /* 2^61 bytes each: three exceed the 2^62 limit */
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "a", LLMQ_TYPE_F32, 1, big), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "b", LLMQ_TYPE_F32, 1, big), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_add_tensor(w, "c", LLMQ_TYPE_F32, 1, big), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_begin(w), LLMQ_ERR);
    assert_error_has("w.gguf: the tensor data would take more than 2^62 bytes");
    llmq_gguf_writer_abort(w);
    cr_assert_eq(count_dir_entries(dir), 0);
}

Test(gguf, aborted_writer_leaves_no_file)
{
    char dir[128], path[200];
    test_tmpdir(dir, sizeof dir, "gguf-abort");
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    const int64_t ne[] = {32};
    float data[32] = {0};

    /* Abort after one of two tensors. */
    llmq_gguf_writer *w = llmq_gguf_writer_new(path);
    llmq_gguf_writer_add_str(w, "general.architecture", "llama");
    llmq_gguf_writer_add_tensor(w, "a", LLMQ_TYPE_F32, 1, ne);
    llmq_gguf_writer_add_tensor(w, "b", LLMQ_TYPE_F32, 1, ne);
    cr_assert_eq(llmq_gguf_writer_begin(w), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_write_tensor(w, "a", data, sizeof data), LLMQ_OK);
    cr_assert_eq(count_dir_entries(dir), 1, "the temp file exists while writing");
    cr_assert(!llmq_file_exists(path), "nothing at the final path before finish");
    llmq_gguf_writer_abort(w);
    cr_assert_eq(count_dir_entries(dir), 0, "abort removes the temp file");

    /* finish with a tensor never written: an error, and no file either. */
    w = llmq_gguf_writer_new(path);
    llmq_gguf_writer_add_tensor(w, "a", LLMQ_TYPE_F32, 1, ne);
    llmq_gguf_writer_add_tensor(w, "b", LLMQ_TYPE_F32, 1, ne);
    cr_assert_eq(llmq_gguf_writer_begin(w), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_write_tensor(w, "b", data, sizeof data), LLMQ_OK);
    cr_assert_eq(llmq_gguf_writer_finish(w), LLMQ_ERR);
    assert_error_has("model.gguf: tensor 'a' was declared but its data was never written");
    cr_assert_eq(count_dir_entries(dir), 0);

    /* finish without begin, and an abort before begin. */
    w = llmq_gguf_writer_new(path);
    cr_assert_eq(llmq_gguf_writer_finish(w), LLMQ_ERR);
    llmq_gguf_writer_abort(llmq_gguf_writer_new(path));
    llmq_gguf_writer_abort(NULL);
    cr_assert_eq(count_dir_entries(dir), 0);

    /* An existing file at the path survives an aborted rewrite untouched. */
    FILE *fp = fopen(path, "wb");
    fputs("old", fp);
    fclose(fp);
    w = llmq_gguf_writer_new(path);
    llmq_gguf_writer_add_tensor(w, "a", LLMQ_TYPE_F32, 1, ne);
    cr_assert_eq(llmq_gguf_writer_begin(w), LLMQ_OK);
    llmq_gguf_writer_abort(w);
    size_t n;
    char *old = slurp(path, &n);
    cr_assert_str_eq(old, "old");
    free(old);
    cr_assert_eq(count_dir_entries(dir), 1);
}

/* In a child process with a 64 KiB file-size limit (SIGXFSZ ignored, so
 * writes fail with EFBIG as they would on a full disk): exit status 0 when the
 * writer reported the failure and left no file behind. */
static int write_past_limit(const char *dir, const char *path)
{
    struct rlimit lim = {64 * 1024, 64 * 1024};
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 10;
    static unsigned char big[1 << 20];
    const int64_t ne[] = {(int64_t)sizeof big / 4};
    llmq_gguf_writer *w = llmq_gguf_writer_new(path);
    if (llmq_gguf_writer_add_tensor(w, "big", LLMQ_TYPE_F32, 1, ne) || llmq_gguf_writer_begin(w)) return 11;
    int rc = llmq_gguf_writer_write_tensor(w, "big", big, sizeof big);
    if (rc == LLMQ_OK) {
        rc = llmq_gguf_writer_finish(w);
    } else {
        if (!strstr(llmq_last_error(), "write.gguf: writing tensor 'big' failed: File too large")) return 12;
        if (llmq_gguf_writer_finish(w) == LLMQ_OK) return 13; /* a failed writer cannot commit */
    }
    if (rc == LLMQ_OK) return 14;
    if (llmq_file_exists(path)) return 15;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) return 16; /* a temp file was left */
    closedir(d);
    return 0;
}

Test(gguf, write_error_gives_message_and_no_file)
{
    char dir[128], path[200];
    test_tmpdir(dir, sizeof dir, "gguf-full");
    snprintf(path, sizeof path, "%s/write.gguf", dir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) _exit(write_past_limit(dir, path));
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "the child died (status %d)", status);
    cr_assert_eq(WEXITSTATUS(status), 0, "child check %d failed", WEXITSTATUS(status));
}
