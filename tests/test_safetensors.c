#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/model.h"
#include "llmq/safetensors.h"
#include "test_util.h"

#include <math.h>

/* Builds a safetensors file in memory from a header string and data bytes. */
static unsigned char *make_file(const char *header, size_t data_bytes, size_t *size)
{
    size_t h = strlen(header);
    *size = 8 + h + data_bytes;
    unsigned char *buf = calloc(1, *size);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    return buf;
}

static void expect_error(const char *header, size_t data_bytes, const char *needle)
{
    size_t size;
    unsigned char *buf = make_file(header, data_bytes, &size);
    llmq_safetensors *st = llmq_st_open_memory(buf, size, "bad.safetensors");
    cr_assert_null(st, "accepted: %s", header);
    cr_assert(strstr(llmq_last_error(), needle), "message '%s' lacks '%s'", llmq_last_error(), needle);
    cr_assert(strstr(llmq_last_error(), "bad.safetensors"), "message '%s' does not name the file", llmq_last_error());
    cr_assert_null(strchr(llmq_last_error(), '\n'));
    free(buf);
}

Test(safetensors, valid_minimal)
{
    size_t size;
    unsigned char *buf = make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                                   "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]},\"__metadata__\":{\"format\":\"pt\"}}",
                                   22, &size);
    float one = 1.0f;
    memcpy(buf + size - 22 + 4, &one, 4);
    llmq_safetensors *st = llmq_st_open_memory(buf, size, "ok.safetensors");
    cr_assert_not_null(st, "%s", llmq_last_error());
    cr_assert_eq(llmq_st_count(st), 2);
    const llmq_st_tensor *a = llmq_st_find(st, "a");
    cr_assert_eq(a->type, LLMQ_TYPE_F32);
    cr_assert_eq(a->shape[1], 2);
    cr_assert_eq(((const float *)a->data)[1], 1.0f);
    cr_assert_eq(llmq_st_find(st, "b")->n_bytes, 6u);
    llmq_st_close(st);
    free(buf);
}

Test(safetensors, malformed_inputs_are_named)
{
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "outside");           /* truncated data */
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "shape needs 12 bytes");
    expect_error("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "dtype 'I64' is not supported");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "JSON is invalid");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "data_offsets");
    expect_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'dtype'");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "JSON is invalid");
    expect_error("[1,2]", 0, "not a JSON object");
}

Test(safetensors, header_length_lies)
{
    unsigned char buf[16] = {0};
    buf[0] = 0xff; buf[1] = 0xff; /* 65535-byte header in a 16-byte file */
    cr_assert_null(llmq_st_open_memory(buf, sizeof buf, "short.safetensors"));
    cr_assert(strstr(llmq_last_error(), "runs past the end"), "%s", llmq_last_error());
    memset(buf, 0xff, 8); /* absurd header size */
    cr_assert_null(llmq_st_open_memory(buf, sizeof buf, "huge.safetensors"));
    cr_assert(strstr(llmq_last_error(), "exceeds"), "%s", llmq_last_error());
    cr_assert_null(llmq_st_open_memory(buf, 5, "tiny.safetensors"));
    cr_assert(strstr(llmq_last_error(), "too short"), "%s", llmq_last_error());
}

Test(safetensors, truncated_at_every_byte_of_a_real_header)
{
    size_t size;
    unsigned char *buf = make_file("{\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12, &size);
    for (size_t cut = 0; cut < size; cut++) {
        llmq_safetensors *st = llmq_st_open_memory(buf, cut, "cut.safetensors");
        cr_assert_null(st, "accepted a file cut at %zu of %zu bytes", cut, size);
    }
    llmq_safetensors *st = llmq_st_open_memory(buf, size, "whole.safetensors");
    cr_assert_not_null(st);
    llmq_st_close(st);
    free(buf);
}

Test(safetensors, missing_file_and_dir)
{
    cr_assert_null(llmq_st_open("build/does-not-exist.safetensors"));
    cr_assert(strstr(llmq_last_error(), "does-not-exist"), "%s", llmq_last_error());
    char dir[256];
    test_tmpdir(dir, sizeof dir, "st-empty");
    cr_assert_null(llmq_st_open(dir));
    cr_assert(strstr(llmq_last_error(), "no model.safetensors"), "%s", llmq_last_error());
}

/* Cuts stories260K into 3 shards + index and checks the logits are bit-identical. */
Test(safetensors, three_shards_give_identical_logits)
{
    char src[512];
    REQUIRE_SHARED(src, "models/stories260K");
    char dir[256];
    test_tmpdir(dir, sizeof dir, "shards");
    llmq_safetensors *st = llmq_st_open(src);
    cr_assert_not_null(st, "%s", llmq_last_error());
    size_t n = llmq_st_count(st);
    FILE *idx = fopen(strcat(strcpy((char[512]){0}, dir), "/model.safetensors.index.json"), "w");
    fprintf(idx, "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
    for (int s = 0; s < 3; s++) {
        size_t a = n * (size_t)s / 3, b = n * (size_t)(s + 1) / 3;
        llmq_st_tensor part[64];
        for (size_t i = a; i < b; i++) part[i - a] = *llmq_st_at(st, i);
        char name[64], path[512];
        snprintf(name, sizeof name, "model-%05d-of-00003.safetensors", s + 1);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        cr_assert_eq(llmq_st_write(path, part, b - a, NULL), LLMQ_OK, "%s", llmq_last_error());
        for (size_t i = a; i < b; i++) fprintf(idx, "%s\"%s\":\"%s\"", i ? "," : "", llmq_st_at(st, i)->name, name);
    }
    fprintf(idx, "}}\n");
    fclose(idx);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/'", src, dir);
    cr_assert_eq(system(cmd), 0);
    llmq_st_close(st);

    llmq_model *whole = llmq_model_load(src), *sharded = llmq_model_load(dir);
    cr_assert_not_null(sharded, "%s", llmq_last_error());
    int32_t ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (i * 37 + 1) % 512;
    int vocab = whole->cfg.vocab_size;
    float *la = malloc(40 * (size_t)vocab * sizeof(float)), *lb = malloc(40 * (size_t)vocab * sizeof(float));
    cr_assert_eq(llmq_forward(whole, ids, 40, la), LLMQ_OK);
    cr_assert_eq(llmq_forward(sharded, ids, 40, lb), LLMQ_OK);
    cr_assert_eq(memcmp(la, lb, 40 * (size_t)vocab * sizeof(float)), 0, "sharded logits differ");
    free(la);
    free(lb);
    llmq_model_free(whole);
    llmq_model_free(sharded);
}

Test(safetensors, shard_index_errors)
{
    char dir[256], path[512];
    test_tmpdir(dir, sizeof dir, "badindex");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"weight_map\":{\"a\":\"../evil.safetensors\"}}", f);
    fclose(f);
    cr_assert_null(llmq_st_open(dir));
    cr_assert(strstr(llmq_last_error(), "not a plain file name"), "%s", llmq_last_error());
    f = fopen(path, "w");
    fputs("{\"weight_map\":{\"a\":\"missing.safetensors\"}}", f);
    fclose(f);
    cr_assert_null(llmq_st_open(dir));
    cr_assert(strstr(llmq_last_error(), "missing.safetensors"), "%s", llmq_last_error());
}

/* A NaN in one weight: the model refuses to load and names the tensor. */
Test(safetensors, model_with_nan_weight_is_refused)
{
    char src[512];
    REQUIRE_SHARED(src, "models/stories260K");
    char dir[256], path[512], cmd[1024];
    test_tmpdir(dir, sizeof dir, "nanmodel");
    llmq_safetensors *st = llmq_st_open(src);
    cr_assert_not_null(st);
    size_t n = llmq_st_count(st);
    llmq_st_tensor *copy = malloc(n * sizeof *copy);
    float *bad = NULL;
    for (size_t i = 0; i < n; i++) {
        copy[i] = *llmq_st_at(st, i);
        if (!strcmp(copy[i].name, "model.layers.2.mlp.down_proj.weight")) {
            bad = malloc(copy[i].n_bytes);
            memcpy(bad, copy[i].data, copy[i].n_bytes);
            bad[17] = NAN;
            copy[i].data = bad;
        }
    }
    cr_assert_not_null(bad);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(llmq_st_write(path, copy, n, NULL), LLMQ_OK, "%s", llmq_last_error());
    snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/'", src, dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_null(llmq_model_load(dir));
    cr_assert(strstr(llmq_last_error(), "model.layers.2.mlp.down_proj.weight") && strstr(llmq_last_error(), "NaN"), "%s",
              llmq_last_error());
    free(bad);
    free(copy);
    llmq_st_close(st);
}

/* Streamed writing: the same bytes as llmq_st_write, the fill called chunk by
 * chunk in order (a 40 MiB tensor spans three chunks), and a failing fill
 * leaves no file and keeps its message. */
typedef struct {
    const llmq_st_tensor *t;
    size_t calls, next_i, next_offset;
    int fail_at;
} stream_src;

static int fill_from(void *user, size_t i, size_t offset, void *buf, size_t len)
{
    stream_src *s = user;
    if (i != s->next_i || offset != s->next_offset) return llmq_error("out of order: tensor %zu offset %zu", i, offset);
    if ((int)s->calls++ == s->fail_at) return llmq_error("fill refused");
    memcpy(buf, (const unsigned char *)s->t[i].data + offset, len);
    s->next_offset = offset + len;
    if (s->next_offset == s->t[i].n_bytes) s->next_i = i + 1, s->next_offset = 0;
    return LLMQ_OK;
}

Test(safetensors, streamed_write_matches_plain_write)
{
    char dir[256], a[512], b[512];
    test_tmpdir(dir, sizeof dir, "ststream");
    size_t big = (size_t)20 << 20; /* elements of BF16: 40 MiB */
    uint16_t *x = malloc(big * 2), y[6] = {1, 2, 3, 4, 5, 6};
    for (size_t i = 0; i < big; i++) x[i] = (uint16_t)(i * 2654435761u >> 7);
    llmq_st_tensor t[2] = {
        {.name = "small", .type = LLMQ_TYPE_BF16, .n_dims = 2, .shape = {2, 3}, .n_elements = 6, .data = y, .n_bytes = 12},
        {.name = "big", .type = LLMQ_TYPE_BF16, .n_dims = 2, .shape = {(int64_t)(big >> 10), 1024}, .n_elements = (int64_t)big,
         .data = x, .n_bytes = big * 2},
    };
    const char *meta[] = {"format", "pt", NULL};
    snprintf(a, sizeof a, "%s/plain.safetensors", dir);
    snprintf(b, sizeof b, "%s/stream.safetensors", dir);
    cr_assert_eq(llmq_st_write(a, t, 2, meta), LLMQ_OK, "%s", llmq_last_error());
    stream_src src = {.t = t, .fail_at = -1};
    cr_assert_eq(llmq_st_write_stream(b, t, 2, meta, fill_from, &src), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(src.calls, 1 + 3);
    size_t na, nb;
    char *fa = llmq_read_file(a, 0, &na), *fb = llmq_read_file(b, 0, &nb);
    cr_assert(fa && fb && na == nb && !memcmp(fa, fb, na), "streamed file differs (%zu vs %zu bytes)", nb, na);
    free(fa);
    free(fb);

    snprintf(b, sizeof b, "%s/failed.safetensors", dir);
    src = (stream_src){.t = t, .fail_at = 2};
    cr_assert_eq(llmq_st_write_stream(b, t, 2, meta, fill_from, &src), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "fill refused") && strstr(llmq_last_error(), "failed.safetensors"), "%s", llmq_last_error());
    cr_assert_not(llmq_file_exists(b));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls '%s' | grep tmp)\"", dir);
    cr_assert_eq(system(cmd), 0, "a temp file was left behind");
    free(x);
}

/* llmq_release_pages drops pages of llmq_map_file's read-only maps from the
 * resident set and leaves everything else alone: the mapped bytes read back
 * the same afterwards, and a malloc'd buffer (where MADV_DONTNEED would zero
 * the pages) is untouched. */
Test(safetensors, released_pages_read_back_and_other_memory_is_untouched)
{
    char dir[256];
    test_tmpdir(dir, sizeof dir, "release-pages");
    char *path = llmq_path_join(dir, "bytes.bin");
    const size_t n = 1 << 22;
    unsigned char *want = malloc(n);
    cr_assert_not_null(want);
    for (size_t i = 0; i < n; i++) want[i] = (unsigned char)(i * 2654435761u >> 13);
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    cr_assert_eq(fwrite(want, 1, n, fp), n);
    fclose(fp);

    llmq_mapped_file f;
    cr_assert_eq(llmq_map_file(path, &f), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(memcmp(f.data, want, n), 0);
    llmq_release_pages(f.data + 100, n - 200);
    cr_assert_eq(memcmp(f.data, want, n), 0, "a released map reads back its file");
    llmq_unmap_file(&f);

    unsigned char *heap = malloc(n);
    cr_assert_not_null(heap);
    memcpy(heap, want, n);
    llmq_release_pages(heap, n);
    cr_assert_eq(memcmp(heap, want, n), 0, "memory that is not a file map is left alone");
    free(heap);
    free(want);
    free(path);
}
