#include "llmq/calib.h"
#include "llmq/error.h"
#include "llmq/synth.h"
#include "test_util.h"

Test(calib, windows_are_slices_at_seeded_offsets)
{
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++) ids[i] = i;
    llmq_calib_opts o = {.n_samples = 16, .seqlen = 100, .seed = 0};
    llmq_calib a, b, c;
    cr_assert_eq(llmq_calib_sample(ids, 1000, &o, &a), LLMQ_OK);
    cr_assert_eq(llmq_calib_sample(ids, 1000, &o, &b), LLMQ_OK);
    o.seed = 1;
    cr_assert_eq(llmq_calib_sample(ids, 1000, &o, &c), LLMQ_OK);
    int differ = 0;
    for (int s = 0; s < 16; s++) {
        int32_t start = a.tokens[s * 100];
        cr_assert(start >= 0 && start <= 1000 - 100 - 1, "start %d", start);
        for (int t = 0; t < 100; t++) cr_assert_eq(a.tokens[s * 100 + t], start + t, "window %d not contiguous", s);
        differ += c.tokens[s * 100] != start;
    }
    cr_assert_eq(memcmp(a.tokens, b.tokens, 16 * 100 * sizeof(int32_t)), 0, "same seed, different windows");
    cr_assert_gt(differ, 8, "another seed should move most windows");
    llmq_calib_free(&a);
    llmq_calib_free(&b);
    llmq_calib_free(&c);
}

Test(calib, short_text_is_a_clear_error)
{
    int32_t ids[50] = {0};
    llmq_calib_opts o = {.n_samples = 4, .seqlen = 50, .seed = 0};
    llmq_calib c;
    cr_assert_eq(llmq_calib_sample(ids, 50, &o, &c), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "too few for one window of 50"), "%s", llmq_last_error());
}

Test(calib, from_file_hashes_and_tokenizes)
{
    char dir[256], path[512];
    test_tmpdir(dir, sizeof dir, "calib");
    llmq_synth_opts so;
    llmq_synth_defaults(&so);
    so.calib_bytes = 60000;
    so.eval_bytes = 1000;
    cr_assert_eq(llmq_synth_write(dir, &so), LLMQ_OK, "%s", llmq_last_error());
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    snprintf(path, sizeof path, "%s/calib.txt", dir);
    llmq_calib_opts o = {.n_samples = 8, .seqlen = 256, .seed = 0};
    llmq_calib c;
    cr_assert_eq(llmq_calib_from_file(tok, path, &o, &c), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(strlen(c.sha256), 64);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sha256sum %s | cut -c1-64 > %s/sum", path, dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(path, sizeof path, "%s/sum", dir);
    FILE *f = fopen(path, "r");
    char want[65] = {0};
    cr_assert_eq(fread(want, 1, 64, f), 64);
    fclose(f);
    cr_assert_str_eq(c.sha256, want);
    for (int i = 0; i < 8 * 256; i++) cr_assert(c.tokens[i] >= 0 && c.tokens[i] < 512);
    llmq_calib_free(&c);
    o.seqlen = 100000;
    snprintf(path, sizeof path, "%s/calib.txt", dir);
    cr_assert_eq(llmq_calib_from_file(tok, path, &o, &c), LLMQ_ERR);
    cr_assert(strstr(llmq_last_error(), "calib.txt"), "%s", llmq_last_error());
    llmq_tokenizer_free(tok);
}
