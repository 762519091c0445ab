#include "llmq/error.h"
#include "llmq/model.h"
#include "llmq/safetensors.h"
#include "test_util.h"

#include <jansson.h>
#include <math.h>

static json_t *load_json(const char *path)
{
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    cr_assert_not_null(j, "%s: %s", path, e.text);
    return j;
}

static int32_t *json_ids(json_t *arr, int *n)
{
    *n = (int)json_array_size(arr);
    int32_t *ids = malloc((size_t)(*n + 64) * sizeof *ids);
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

static double nll_at(const float *row, int vocab, int target)
{
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < vocab; i++) mx = row[i] > mx ? row[i] : mx;
    for (int i = 0; i < vocab; i++) sum += exp(row[i] - mx);
    return -(row[target] - mx - log(sum));
}

static int argmax(const float *row, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (row[i] > row[best]) best = i;
    return best;
}

/* Checks logits, mean NLL and greedy continuation of reference.json's sequence. */
static void check_stories260k(const char *model_rel)
{
    char model_dir[512], ref_path[512];
    REQUIRE_SHARED(model_dir, model_rel);
    REQUIRE_SHARED(ref_path, "models/stories260K/reference.json");
    llmq_model *m = llmq_model_load(model_dir);
    cr_assert_not_null(m, "%s", llmq_last_error());
    json_t *ref = load_json(ref_path);
    json_t *seq = json_object_get(ref, "sequence");
    int n;
    int32_t *ids = json_ids(json_object_get(seq, "ids"), &n);
    int vocab = m->cfg.vocab_size;
    float *logits = malloc((size_t)(n + 32) * vocab * sizeof(float));
    cr_assert_eq(llmq_forward(m, ids, n, logits), LLMQ_OK, "%s", llmq_last_error());

    json_t *first16 = json_object_get(seq, "last_position_logits_first16");
    double max_diff = 0;
    for (int i = 0; i < 16; i++) {
        double d = fabs(logits[(size_t)(n - 1) * vocab + i] - json_real_value(json_array_get(first16, (size_t)i)));
        max_diff = d > max_diff ? d : max_diff;
    }
    cr_assert_leq(max_diff, 1e-4, "last-position logits differ by %g", max_diff);
    cr_assert_eq(argmax(logits + (size_t)(n - 1) * vocab, vocab), json_integer_value(json_object_get(seq, "last_position_argmax")));

    double nll = 0;
    for (int t = 1; t < n; t++) nll += nll_at(logits + (size_t)(t - 1) * vocab, vocab, ids[t]);
    nll /= n - 1;
    double want = json_real_value(json_object_get(seq, "mean_nll"));
    cr_assert_leq(fabs(nll - want), 1e-5, "mean NLL %.8f, reference %.8f", nll, want);

    /* Greedy: recompute the whole prefix each step (positions 64..95). */
    json_t *greedy = json_object_get(seq, "greedy_continuation_ids");
    for (size_t g = 0; g < json_array_size(greedy); g++) {
        cr_assert_eq(llmq_forward(m, ids, n, logits), LLMQ_OK);
        int next = argmax(logits + (size_t)(n - 1) * vocab, vocab);
        cr_assert_eq(next, json_integer_value(json_array_get(greedy, g)), "greedy step %zu: %d", g, next);
        ids[n++] = next;
    }
    free(logits);
    free(ids);
    json_decref(ref);
    llmq_model_free(m);
}

Test(model, stories260k_reference_logits_nll_greedy) { check_stories260k("models/stories260K"); }
Test(model, stories260k_untied_same_reference) { check_stories260k("models/stories260K-untied"); }

Test(model, stories7m_prompt_logits)
{
    char model_dir[512], ref_path[512];
    REQUIRE_SHARED(model_dir, "models/stories-llama-7m");
    REQUIRE_SHARED(ref_path, "models/stories-llama-7m/reference.json");
    llmq_model *m = llmq_model_load(model_dir);
    cr_assert_not_null(m, "%s", llmq_last_error());
    cr_assert_eq(m->embed.type, LLMQ_TYPE_BF16);
    json_t *ref = load_json(ref_path);
    json_t *g = json_object_get(ref, "greedy");
    int n;
    int32_t *ids = json_ids(json_object_get(g, "prompt_ids"), &n);
    int vocab = m->cfg.vocab_size;
    float *logits = malloc((size_t)(n + 48) * vocab * sizeof(float));
    cr_assert_eq(llmq_forward(m, ids, n, logits), LLMQ_OK, "%s", llmq_last_error());
    json_t *first16 = json_object_get(g, "last_prompt_position_logits_first16");
    for (int i = 0; i < 16; i++) {
        double want = json_real_value(json_array_get(first16, (size_t)i));
        cr_assert_leq(fabs(logits[(size_t)(n - 1) * vocab + i] - want), 1e-4, "logit %d: %f vs %f", i, logits[(size_t)(n - 1) * vocab + i], want);
    }
    json_t *greedy = json_object_get(g, "greedy_ids");
    for (size_t s = 0; s < json_array_size(greedy); s++) {
        cr_assert_eq(llmq_forward(m, ids, n, logits), LLMQ_OK);
        int next = argmax(logits + (size_t)(n - 1) * vocab, vocab);
        cr_assert_eq(next, json_integer_value(json_array_get(greedy, s)), "greedy step %zu", s);
        ids[n++] = next;
    }
    free(logits);
    free(ids);
    json_decref(ref);
    llmq_model_free(m);
}

/* The forward keeps its buffers in the model between calls: a repeated call
 * after a shorter one, and a call after releasing them, give the first call's
 * bits, and a struct copy of the model (a view) works beside it without
 * touching its cache. */
Test(model, workspace_cache_gives_the_same_bits)
{
    char model_dir[512];
    REQUIRE_SHARED(model_dir, "models/stories260K");
    llmq_model *m = llmq_model_load(model_dir);
    cr_assert_not_null(m, "%s", llmq_last_error());
    const int n = 96, vocab = m->cfg.vocab_size;
    int32_t ids[96];
    for (int i = 0; i < n; i++) ids[i] = (i * 37 + 5) % vocab;
    float *first = malloc(sizeof(float) * n * vocab), *again = malloc(sizeof(float) * n * vocab);
    cr_assert_eq(llmq_forward(m, ids, n, first), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_not_null(m->ws, "no workspace kept");
    /* a shorter call reuses (and dirties) the cache; its logits are the prefix's up to summation order */
    cr_assert_eq(llmq_forward(m, ids, 40, again), LLMQ_OK);
    for (int i = 0; i < 40 * vocab; i++) cr_assert(fabsf(again[i] - first[i]) < 1e-4f, "40-token prefix differs at %d", i);
    cr_assert_eq(llmq_forward(m, ids, n, again), LLMQ_OK); /* the same call again: the same bits */
    cr_assert_arr_eq(again, first, sizeof(float) * n * vocab);
    llmq_model view = *m; /* shares the cache pointer but must not use or free it */
    cr_assert_eq(llmq_forward(&view, ids, n, again), LLMQ_OK);
    cr_assert_arr_eq(again, first, sizeof(float) * n * vocab);
    llmq_model_release_workspace(&view);
    cr_assert_not_null(m->ws, "releasing a copy freed the original's cache");
    llmq_model_release_workspace(m);
    cr_assert_null(m->ws);
    cr_assert_eq(llmq_forward(m, ids, n, again), LLMQ_OK);
    cr_assert_arr_eq(again, first, sizeof(float) * n * vocab);
    free(first);
    free(again);
    llmq_model_free(m);
}

/* llmq_layers_forward with keep0: the wanted rows, the last layer skipping
 * the others' feed-forward half, equal every layer run in full (to summation
 * order: fewer rows may take another sgemm blocking), rows before keep0 hold
 * the last attention half's output, and a keep0 outside the rows is refused. */
Test(model, layers_forward_keeps_the_wanted_rows)
{
    char model_dir[512];
    REQUIRE_SHARED(model_dir, "models/stories260K");
    llmq_model *m = llmq_model_load(model_dir);
    cr_assert_not_null(m, "%s", llmq_last_error());
    const int n = 64, d = m->cfg.hidden_size, keep0 = 40;
    int32_t ids[64];
    for (int i = 0; i < n; i++) ids[i] = (i * 29 + 3) % m->cfg.vocab_size;
    float *full = malloc(sizeof(float) * n * d), *part = malloc(sizeof(float) * n * d);
    cr_assert_eq(llmq_embed(m, ids, n, full), LLMQ_OK);
    memcpy(part, full, sizeof(float) * n * d);
    cr_assert_eq(llmq_layers_forward(m, full, n, 0), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(llmq_layers_forward(m, part, n, keep0), LLMQ_OK, "%s", llmq_last_error());
    int differ_before = 0;
    for (int i = 0; i < n * d; i++) {
        if (i >= keep0 * d) cr_assert(fabsf(part[i] - full[i]) <= 1e-5f * (1 + fabsf(full[i])), "row %d col %d: %g vs %g", i / d, i % d, part[i], full[i]);
        else differ_before += part[i] != full[i];
    }
    cr_assert_gt(differ_before, 0, "rows before keep0 went through the last feed-forward half too");
    cr_assert_eq(llmq_layers_forward(m, part, n, n), LLMQ_ERR);
    cr_assert_eq(llmq_layers_forward(m, part, n, -1), LLMQ_ERR);
    free(full);
    free(part);
    llmq_model_free(m);
}

/* ------------------------------------------------------------------ Qwen3 */

#include "llmq/synth.h"

static llmq_model *qwen3_demo(char *dir, size_t cap)
{
    llmq_model *m;
    test_synth_arch_model(dir, cap, "qwen3", "qwen3", 2, 40000, 20000, &m, NULL);
    return m;
}

static double *f64_matrix(const llmq_weight *w)
{
    float *row = malloc((size_t)w->cols * sizeof *row);
    double *out = malloc((size_t)w->rows * w->cols * sizeof *out);
    size_t rb = llmq_row_size(w->type, w->cols);
    for (int r = 0; r < w->rows; r++) {
        llmq_type_get(w->type)->to_float((const char *)w->data + (size_t)r * rb, row, w->cols);
        for (int c = 0; c < w->cols; c++) out[(size_t)r * w->cols + c] = row[c];
    }
    free(row);
    return out;
}

/* transformers' Qwen3Attention written out in double, loop by loop: q/k/v
 * projections, RMSNorm over each head of q and k (q_norm, k_norm), RoPE by
 * rotate_half, causal softmax attention with GQA. llmq_attention_mix must
 * give the same o_proj input. */
Test(model, qwen3_attention_matches_a_reference)
{
    char dir[256];
    llmq_model *m = qwen3_demo(dir, sizeof dir);
    const llmq_config *c = &m->cfg;
    cr_assert(c->qk_norm && !strcmp(c->model_type, "qwen3"));
    cr_assert_eq(c->head_dim, 128);
    cr_assert_eq(c->n_heads * c->head_dim, 2 * c->hidden_size, "q wider than the hidden state, as in Qwen3-32B");
    const int n = 12, d = c->hidden_size, hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads, qd = H * hd;
    const llmq_layer *L = &m->layers[1];
    float *xn = malloc(sizeof(float) * n * d), *att = malloc(sizeof(float) * n * qd);
    for (int i = 0; i < n * d; i++) xn[i] = sinf(0.37f * (float)i) * (1.0f + (float)(i % 7));
    cr_assert_eq(llmq_attention_mix(m, L, 1, xn, n, att), LLMQ_OK, "%s", llmq_last_error());

    double *W[3], *q[3];
    const int width[3] = {qd, KV * hd, KV * hd};
    for (int p = 0; p < 3; p++) {
        W[p] = f64_matrix(&L->lin[p]);
        q[p] = calloc((size_t)n * width[p], sizeof(double));
        for (int t = 0; t < n; t++)
            for (int r = 0; r < width[p]; r++)
                for (int i = 0; i < d; i++) q[p][(size_t)t * width[p] + r] += W[p][(size_t)r * d + i] * xn[(size_t)t * d + i];
    }
    for (int p = 0; p < 2; p++) { /* per-head RMSNorm, then RoPE */
        const float *g = p ? L->k_norm.data : L->q_norm.data;
        for (int t = 0; t < n; t++)
            for (int h = 0; h < width[p] / hd; h++) {
                double *v = q[p] + (size_t)t * width[p] + (size_t)h * hd, ss = 0, rot[128];
                for (int i = 0; i < hd; i++) ss += v[i] * v[i];
                double r = 1.0 / sqrt(ss / hd + c->rms_norm_eps);
                for (int i = 0; i < hd; i++) v[i] = g[i] * (v[i] * r);
                for (int i = 0; i < hd; i++) {
                    int j = i % (hd / 2);
                    double ang = t * pow(c->rope_theta, -2.0 * j / hd);
                    double other = i < hd / 2 ? -v[i + hd / 2] : v[i - hd / 2];
                    rot[i] = v[i] * cos(ang) + other * sin(ang);
                }
                memcpy(v, rot, sizeof(double) * hd);
            }
    }
    double worst = 0, scale = 0;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            const int kvh = h / (H / KV);
            double s[16], mx = -INFINITY, sum = 0;
            for (int u = 0; u <= t; u++) {
                s[u] = 0;
                for (int i = 0; i < hd; i++) s[u] += q[0][(size_t)t * qd + h * hd + i] * q[1][(size_t)u * KV * hd + kvh * hd + i];
                s[u] /= sqrt((double)hd);
                mx = s[u] > mx ? s[u] : mx;
            }
            for (int u = 0; u <= t; u++) sum += (s[u] = exp(s[u] - mx));
            for (int i = 0; i < hd; i++) {
                double o = 0;
                for (int u = 0; u <= t; u++) o += s[u] / sum * q[2][(size_t)u * KV * hd + kvh * hd + i];
                double got = att[(size_t)t * qd + h * hd + i];
                worst = fmax(worst, fabs(got - o));
                scale = fmax(scale, fabs(o));
            }
        }
    cr_assert_gt(scale, 0.01);
    cr_assert_lt(worst, 2e-4 * scale, "attention differs from the reference by %g (scale %g)", worst, scale);
    for (int p = 0; p < 3; p++) free(W[p]), free(q[p]);
    free(xn);
    free(att);
    llmq_model_free(m);
}

/* The per-head norms make a Qwen3 layer blind to the scale of W_q and W_k
 * (what they are for); without them the same scaling changes the logits. */
Test(model, qwen3_q_k_norms_make_the_projections_scale_free)
{
    char dir[256];
    llmq_model *m = qwen3_demo(dir, sizeof dir);
    const int n = 48, vocab = m->cfg.vocab_size;
    int32_t ids[48];
    for (int i = 0; i < n; i++) ids[i] = (i * 37 + 5) % vocab;
    float *base = malloc(sizeof(float) * n * vocab), *scaled = malloc(sizeof(float) * n * vocab);
    cr_assert_eq(llmq_forward(m, ids, n, base), LLMQ_OK, "%s", llmq_last_error());
    for (int p = 0; p < 2; p++) { /* W_q × 7, W_k × 0.25 in every layer, as F32 copies */
        for (int l = 0; l < m->cfg.n_layers; l++) {
            llmq_weight *w = &m->layers[l].lin[p];
            double *v = f64_matrix(w);
            float *f = llmq_model_own(m, malloc(sizeof(float) * w->rows * w->cols));
            for (size_t i = 0; i < (size_t)w->rows * w->cols; i++) f[i] = (float)(v[i] * (p ? 0.25 : 7.0));
            free(v);
            *w = (llmq_weight){f, LLMQ_TYPE_F32, w->rows, w->cols};
        }
    }
    cr_assert_eq(llmq_forward(m, ids, n, scaled), LLMQ_OK);
    double worst = 0;
    for (int i = 0; i < n * vocab; i++) worst = fmax(worst, fabs(scaled[i] - base[i]));
    cr_assert_lt(worst, 2e-3, "scaled W_q/W_k moved a logit by %g", worst);
    const double with_norms = worst;
    for (int l = 0; l < m->cfg.n_layers; l++) m->layers[l].q_norm.data = m->layers[l].k_norm.data = NULL;
    cr_assert_eq(llmq_forward(m, ids, n, scaled), LLMQ_OK);
    worst = 0;
    for (int i = 0; i < n * vocab; i++) worst = fmax(worst, fabs(scaled[i] - base[i]));
    cr_log_info("W_q x 7, W_k x 0.25: logits move %g with the norms, %g without", with_norms, worst);
    cr_assert_gt(worst, 20 * with_norms + 1e-3, "without the norms the scaling should matter (moved %g, %g with them)", worst, with_norms);
    free(base);
    free(scaled);
    llmq_model_free(m);
}

/* ------------------------------------------------------- Gemma 3 multimodal */

#include "llmq/file.h"

#include <sys/stat.h>

/* Gemma 3's 4B-27B checkpoints are Gemma3ForConditionalGeneration: the text
 * model's fields under text_config (those equal to Gemma3TextConfig's
 * defaults left out), its tensors under language_model.model. (or, as newer
 * transformers save them, model.language_model.), a vision tower beside. The
 * demo model rewritten that way loads to the same logits as written plainly. */
Test(model, gemma3_multimodal_checkpoint_loads_its_text_model)
{
    char dir[256];
    llmq_model *plain;
    test_synth_arch_model(dir, sizeof dir, "gemma3-mm", "gemma3", 6, 40000, 20000, &plain, NULL);
    const int n = 96, vocab = plain->cfg.vocab_size;
    int32_t ids[96];
    for (int i = 0; i < n; i++) ids[i] = (i * 37 + 5) % vocab;
    float *want = malloc(sizeof(float) * n * vocab), *got = malloc(sizeof(float) * n * vocab);
    cr_assert_eq(llmq_forward(plain, ids, n, want), LLMQ_OK);

    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    llmq_safetensors *st = llmq_st_open(path);
    cr_assert_not_null(st, "%s", llmq_last_error());
    json_t *text = load_json((snprintf(path, sizeof path, "%s/config.json", dir), path));
    /* as the hub's files have it: the defaults Gemma3TextConfig already has are left out */
    cr_assert_eq(json_integer_value(json_object_get(text, "head_dim")), 128);
    json_object_del(text, "rms_norm_eps"); /* 1e-5 here: must stay */
    json_object_set_new(text, "rms_norm_eps", json_real(1e-5));
    json_object_del(text, "rope_local_base_freq"); /* 10000: the default */
    json_object_del(text, "sliding_window_pattern"); /* 6: the default */
    json_object_del(text, "architectures");
    const char *prefixes[] = {"language_model.model.", "model.language_model."};
    for (int p = 0; p < 2; p++) {
        char mm[300];
        snprintf(mm, sizeof mm, "%s/mm%d", dir, p);
        cr_assert(mkdir(mm, 0755) == 0);
        size_t count = llmq_st_count(st);
        llmq_st_tensor *t = calloc(count + 1, sizeof *t);
        for (size_t i = 0; i < count; i++) {
            t[i] = *llmq_st_at(st, i);
            const char *name = t[i].name;
            char renamed[256];
            if (!strncmp(name, "model.", 6)) snprintf(renamed, sizeof renamed, "%s%s", prefixes[p], name + 6);
            else snprintf(renamed, sizeof renamed, "%s", name); /* lm_head */
            t[i].name = strdup(renamed);
        }
        t[count] = *llmq_st_at(st, 0); /* a vision tower tensor beside, which the text model does not read */
        t[count].name = strdup("vision_tower.vision_model.embeddings.patch_embedding.weight");
        snprintf(path, sizeof path, "%s/model.safetensors", mm);
        cr_assert_eq(llmq_st_write(path, t, count + 1, NULL), LLMQ_OK, "%s", llmq_last_error());
        for (size_t i = 0; i <= count; i++) free(t[i].name);
        free(t);
        json_t *cfg = json_pack("{s:[s], s:s, s:O, s:i, s:i}", "architectures", "Gemma3ForConditionalGeneration", "model_type", "gemma3",
                                "text_config", text, "bos_token_id", 1, "eos_token_id", 2);
        snprintf(path, sizeof path, "%s/config.json", mm);
        cr_assert_eq(json_dump_file(cfg, path, 0), 0);
        json_decref(cfg);
        llmq_model *m = llmq_model_load(mm);
        cr_assert_not_null(m, "%s: %s", prefixes[p], llmq_last_error());
        cr_assert_str_eq(m->cfg.tensor_prefix, prefixes[p]);
        cr_assert(m->cfg.rope_local_theta == 10000.0 && m->cfg.swa_pattern == 6 && m->cfg.rms_norm_eps == 1e-5f);
        cr_assert_eq(llmq_forward(m, ids, n, got), LLMQ_OK, "%s", llmq_last_error());
        cr_assert_arr_eq(got, want, sizeof(float) * n * vocab, "%s: other logits than the plain checkpoint's", prefixes[p]);
        llmq_model_free(m);
    }
    json_decref(text);
    llmq_st_close(st);
    free(want);
    free(got);
    llmq_model_free(plain);
}
