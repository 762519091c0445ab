/* The sensitivity table and the allocator behind --target-bpw. */
#include "llmq/error.h"
#include "llmq/quantize.h"
#include "llmq/sensitivity.h"
#include "synth_model.h"
#include "test_util.h"

#include <math.h>

/* A table of n tensors of the given element counts, every type's bytes and
 * KL proportional to the tensor's size (per-element KL per type in kl_per). */
static llmq_sens_table uniform_table(const int64_t *elements, int n, const llmq_type *types, const double *kl_per, int nt)
{
    llmq_sens_table tab = {0};
    tab.t = calloc((size_t)n, sizeof *tab.t);
    tab.n = n;
    for (int i = 0; i < n; i++) {
        llmq_sens_tensor *e = &tab.t[i];
        snprintf(e->name, sizeof e->name, "t%d", i);
        e->role = LLMQ_ROLE_LINEAR, e->layer = i, e->rows = elements[i] / 256, e->cols = 256;
        e->n_types = nt;
        for (int j = 0; j < nt; j++) {
            e->types[j] = types[j];
            e->bytes[j] = llmq_row_size(types[j], e->cols) * (size_t)e->rows;
            e->kld[j] = kl_per[j] * (double)elements[i];
        }
        tab.n_params += elements[i];
    }
    tab.n_params += 1000; /* norms */
    tab.fixed_bytes = 4000;
    return tab;
}

static size_t chosen_bytes(const llmq_sens_table *tab, const int *choice)
{
    size_t b = tab->fixed_bytes;
    for (int i = 0; i < tab->n; i++) b += tab->t[i].bytes[choice[i]];
    return b;
}

static const llmq_type ladder[] = {LLMQ_TYPE_Q2_K, LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q4_K, LLMQ_TYPE_Q5_K, LLMQ_TYPE_Q6_K, LLMQ_TYPE_Q8_0};
/* convex: each step up saves less KL per byte than the one before */
static const double ladder_kl[] = {1e-6, 2.5e-7, 7e-8, 2.2e-8, 8e-9, 1e-9};

Test(sensitivity, uniform_table_gives_a_uniform_choice)
{
    const int64_t el[] = {256 * 64, 256 * 256, 256 * 32, 256 * 512, 256 * 128};
    llmq_sens_table tab = uniform_table(el, 5, ladder, ladder_kl, 6);
    int choice[5];
    for (int k = 0; k < 6; k++) {
        size_t bytes = tab.fixed_bytes;
        for (int i = 0; i < tab.n; i++) bytes += tab.t[i].bytes[k];
        const double bpw = 8.0 * (double)bytes / (double)tab.n_params;
        double kl;
        cr_assert_eq(llmq_sens_allocate(&tab, bpw + 1e-9, choice, &kl), LLMQ_OK, "%s", llmq_last_error());
        for (int i = 0; i < tab.n; i++)
            cr_expect_eq(choice[i], k, "budget of uniform %s: tensor %d took %s", llmq_type_name(ladder[k]), i,
                         llmq_type_name(tab.t[i].types[choice[i]]));
        cr_expect_leq(chosen_bytes(&tab, choice), bytes);
    }
    llmq_sens_free(&tab);
}

Test(sensitivity, allocation_never_exceeds_the_budget_and_beats_every_uniform_type_that_fits)
{
    unsigned state = 7;
    for (int round = 0; round < 40; round++) {
        int64_t el[12];
        for (int i = 0; i < 12; i++) el[i] = 256 * (int64_t)(1 + (int)((synth_uniform(&state) + 1.0f) * 200));
        llmq_sens_table tab = uniform_table(el, 12, ladder, ladder_kl, 6);
        /* per-tensor sensitivities that differ by up to 100× */
        for (int i = 0; i < tab.n; i++) {
            const double f = pow(10.0, 2.0 * (synth_uniform(&state) + 1.0f) / 2.0);
            for (int j = 0; j < 6; j++) tab.t[i].kld[j] *= f * (1.0 + 0.3 * synth_uniform(&state));
        }
        const double bpw = 2.7 + 6.0 * (synth_uniform(&state) + 1.0f) / 2.0;
        int choice[12];
        double predicted;
        cr_assert_eq(llmq_sens_allocate(&tab, bpw, choice, &predicted), LLMQ_OK, "%s", llmq_last_error());
        const double budget = bpw * (double)tab.n_params / 8.0;
        cr_assert_leq((double)chosen_bytes(&tab, choice), budget, "round %d: %zu bytes over a budget of %.0f", round, chosen_bytes(&tab, choice),
                      budget);
        double sum = 0;
        for (int i = 0; i < tab.n; i++) sum += tab.t[i].kld[choice[i]];
        cr_expect_float_eq(sum, predicted, 1e-12 * fabs(sum) + 1e-30);
        for (int k = 0; k < 6; k++) {
            size_t bytes = tab.fixed_bytes;
            double uk = 0;
            for (int i = 0; i < tab.n; i++) bytes += tab.t[i].bytes[k], uk += tab.t[i].kld[k];
            if ((double)bytes <= budget) cr_expect_leq(predicted, uk * (1 + 1e-12), "round %d: uniform %s is better", round, llmq_type_name(ladder[k]));
        }
        llmq_sens_free(&tab);
    }
}

Test(sensitivity, a_budget_below_the_smallest_types_is_refused)
{
    const int64_t el[] = {256 * 64, 256 * 64};
    llmq_sens_table tab = uniform_table(el, 2, ladder, ladder_kl, 6);
    int choice[2];
    cr_assert_eq(llmq_sens_allocate(&tab, 1.5, choice, NULL), LLMQ_ERR);
    cr_expect(strstr(llmq_last_error(), "--target-bpw 1.5") && strstr(llmq_last_error(), "smallest"), "%s", llmq_last_error());
    cr_assert_eq(llmq_sens_allocate(&tab, -1, choice, NULL), LLMQ_ERR);
    llmq_sens_free(&tab);
}

/* A small model: embedding, 2 layers, head; rows of 256 so every K-quant fits. */
static llmq_model *small_model(void)
{
    synth_spec s = {"llama", 2, 256, 4, 2, 512, 384, false, false, 11};
    return synth_model(&s);
}

static llmq_calib small_calib(int vocab)
{
    llmq_calib c = {0};
    c.n_samples = 2, c.seqlen = 32;
    c.tokens = malloc(sizeof *c.tokens * 64);
    for (int i = 0; i < 64; i++) c.tokens[i] = (int32_t)((i * 37 + 11) % vocab);
    snprintf(c.sha256, sizeof c.sha256, "%064d", 0);
    return c;
}

Test(sensitivity, measured_table_lists_every_tensor_and_more_bits_cost_less_kl, .timeout = 300)
{
    llmq_model *m = small_model();
    llmq_calib c = small_calib(m->cfg.vocab_size);
    int nt;
    const llmq_type *types = llmq_sens_default_types(&nt);
    llmq_sens_table tab;
    cr_assert_eq(llmq_sens_measure(m, &c, types, nt, NULL, NULL, &tab), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(tab.n, 1 + 2 * LLMQ_LIN_COUNT + 1, "embedding, 14 linears, head");
    cr_expect_str_eq(tab.t[0].name, "token_embd.weight");
    cr_expect_str_eq(tab.t[1].name, "blk.0.attn_q.weight");
    cr_expect_str_eq(tab.t[tab.n - 1].name, "output.weight");
    cr_expect_eq(tab.n_params, llmq_model_n_params(m));
    for (int i = 0; i < tab.n; i++) {
        const llmq_sens_tensor *e = &tab.t[i];
        cr_assert_eq(e->n_types, nt);
        double kl_q2 = -1, kl_q8 = -1, kl_f16 = -1;
        for (int j = 0; j < e->n_types; j++) {
            cr_expect_eq(e->bytes[j], llmq_row_size(e->types[j], e->cols) * (size_t)e->rows);
            cr_expect(e->kld[j] >= 0 && isfinite(e->kld[j]));
            if (e->types[j] == LLMQ_TYPE_Q2_K) kl_q2 = e->kld[j];
            if (e->types[j] == LLMQ_TYPE_Q8_0) kl_q8 = e->kld[j];
            if (e->types[j] == LLMQ_TYPE_F16) kl_f16 = e->kld[j];
        }
        cr_expect_gt(kl_q2, 10 * kl_q8, "%s: q2_k %g against q8_0 %g", e->name, kl_q2, kl_q8);
        cr_expect_gt(kl_q2, 0);
        cr_expect_lt(kl_f16, 1e-3 * kl_q2, "%s: f16 %g", e->name, kl_f16);
    }
    /* the JSON round trip keeps every value; a broken file is refused */
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir, "sens");
    snprintf(path, sizeof path, "%s/m.gguf.sens.json", dir);
    cr_assert_eq(llmq_sens_save(&tab, path), LLMQ_OK, "%s", llmq_last_error());
    llmq_sens_table back;
    cr_assert_eq(llmq_sens_load(path, &back), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(back.n, tab.n);
    cr_expect_eq(back.n_params, tab.n_params);
    cr_expect_eq(back.fixed_bytes, tab.fixed_bytes);
    cr_expect_str_eq(back.windows_sha256, tab.windows_sha256);
    char id[65];
    llmq_sens_windows_id(&c, id);
    cr_expect_str_eq(tab.windows_sha256, id);
    for (int i = 0; i < tab.n; i++) {
        cr_expect_str_eq(back.t[i].name, tab.t[i].name);
        for (int j = 0; j < tab.t[i].n_types; j++) {
            cr_expect_eq(back.t[i].types[j], tab.t[i].types[j]);
            cr_expect_eq(back.t[i].bytes[j], tab.t[i].bytes[j]);
            cr_expect_float_eq(back.t[i].kld[j], tab.t[i].kld[j], 1e-9 * tab.t[i].kld[j] + 1e-300);
        }
    }
    llmq_sens_free(&back);
    FILE *f = fopen(path, "w");
    fputs("{\"version\": 1, \"tensors\": [{\"name\": \"x\"", f);
    fclose(f);
    cr_expect_eq(llmq_sens_load(path, &back), LLMQ_ERR);
    cr_expect(strstr(llmq_last_error(), path), "%s", llmq_last_error());
    llmq_sens_free(&tab);
    free(c.tokens);
    llmq_model_free(m);
}

/* --target-bpw's policy hook: the written file has the chosen types and the bytes the table predicted. */
typedef struct {
    const llmq_sens_table *tab;
    const int *choice;
} pick;

static llmq_type pick_type(void *user, const struct llmq_tensor_desc *d)
{
    const pick *p = user;
    for (int i = 0; i < p->tab->n; i++) {
        const llmq_sens_tensor *e = &p->tab->t[i];
        if (e->role == d->role && (d->role != LLMQ_ROLE_LINEAR || (e->layer == d->layer && e->linear == d->linear)))
            return e->types[p->choice[i]];
    }
    return LLMQ_TYPE_COUNT;
}

Test(sensitivity, written_file_has_the_chosen_types_and_predicted_bytes, .timeout = 300)
{
    llmq_model *m = small_model();
    llmq_tokenizer *tok = synth_tokenizer(m->cfg.vocab_size);
    llmq_calib c = small_calib(m->cfg.vocab_size);
    int nt;
    const llmq_type *types = llmq_sens_default_types(&nt);
    llmq_sens_table tab;
    cr_assert_eq(llmq_sens_measure(m, &c, types, nt, NULL, NULL, &tab), LLMQ_OK, "%s", llmq_last_error());
    int choice[32];
    cr_assert_eq(llmq_sens_allocate(&tab, 4.5, choice, NULL), LLMQ_OK, "%s", llmq_last_error());
    pick p = {&tab, choice};
    llmq_quant_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(llmq_quant_scheme_parse("q4_k", &o.policy.scheme), LLMQ_OK);
    o.policy.keep_output = o.policy.keep_embed = -1;
    o.policy.tensor_type = pick_type;
    o.policy.tensor_type_user = &p;
    o.model_name = "synthetic";
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir, "sens-file");
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    llmq_quant_report rep;
    cr_assert_eq(llmq_quantize_model(m, tok, path, &o, &rep), LLMQ_OK, "%s", llmq_last_error());
    size_t tensor_bytes = 0, predicted = tab.fixed_bytes;
    int matched = 0;
    for (int i = 0; i < tab.n; i++) predicted += tab.t[i].bytes[choice[i]];
    for (int r = 0; r < rep.n_tensors; r++) {
        tensor_bytes += rep.tensors[r].bytes;
        for (int i = 0; i < tab.n; i++)
            if (!strcmp(rep.tensors[r].name, tab.t[i].name)) {
                cr_expect_eq(rep.tensors[r].type, tab.t[i].types[choice[i]], "%s", tab.t[i].name);
                cr_expect_eq(rep.tensors[r].bytes, tab.t[i].bytes[choice[i]], "%s", tab.t[i].name);
                matched++;
            }
    }
    cr_expect_eq(matched, tab.n);
    cr_expect_eq(tensor_bytes, predicted, "written %zu, predicted %zu", tensor_bytes, predicted);
    cr_expect_leq(8.0 * (double)tensor_bytes / (double)tab.n_params, 4.5);
    llmq_quant_report_free(&rep);
    llmq_sens_free(&tab);
    free(c.tokens);
    llmq_tokenizer_free(tok);
    llmq_model_free(m);
}
