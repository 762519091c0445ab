/* Sensitivity table and type allocation for --target-bpw (see llmq/sensitivity.h). */
#include "llmq/sensitivity.h"
#include "llmq/digest.h"
#include "llmq/error.h"
#include "llmq/gguf_model.h"
#include "llmq/types.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const llmq_type *llmq_sens_default_types(int *n)
{
    static const llmq_type types[] = {LLMQ_TYPE_Q2_K, LLMQ_TYPE_Q3_K, LLMQ_TYPE_Q4_K, LLMQ_TYPE_IQ4_XS,
                                      LLMQ_TYPE_Q5_K, LLMQ_TYPE_Q6_K, LLMQ_TYPE_Q8_0, LLMQ_TYPE_F16};
    *n = (int)(sizeof types / sizeof types[0]);
    return types;
}

void llmq_sens_windows_id(const llmq_calib *c, char out[65])
{
    llmq_sha256_hex(c->tokens, (size_t)c->n_samples * c->seqlen * sizeof *c->tokens, out);
}

void llmq_sens_free(llmq_sens_table *tab)
{
    if (!tab) return;
    free(tab->t);
    memset(tab, 0, sizeof *tab);
}

/* ------------------------------------------------------------ the tensors */

static bool fits(llmq_type t, int64_t cols)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    return tr && cols % tr->block_size == 0;
}

/* The model's weight view for tensor e (the embedding also serves as the head when tied). */
static const llmq_weight *weight_of(const llmq_model *m, const llmq_sens_tensor *e)
{
    switch (e->role) {
    case LLMQ_ROLE_EMBED: return &m->embed;
    case LLMQ_ROLE_OUTPUT: return &m->lm_head;
    default: return &m->layers[e->layer].lin[e->linear];
    }
}

static int add_tensor(llmq_sens_table *tab, const char *name, llmq_tensor_role role, llmq_linear lin, int layer, const llmq_weight *w,
                      const llmq_type *types, int n_types)
{
    llmq_sens_tensor *e = &tab->t[tab->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->role = role, e->linear = lin, e->layer = layer, e->rows = w->rows, e->cols = w->cols;
    for (int j = 0; j < n_types && e->n_types < LLMQ_SENS_MAX_TYPES; j++) {
        if (!fits(types[j], w->cols)) continue;
        e->types[e->n_types] = types[j];
        e->bytes[e->n_types] = llmq_row_size(types[j], w->cols) * (size_t)w->rows;
        e->n_types++;
    }
    if (e->n_types == 0) return llmq_error("sensitivity: %s: no candidate type fits its rows of %lld", name, (long long)w->cols);
    return LLMQ_OK;
}

/* Lists the tensors that take part, with their candidate types and sizes. */
static int list_tensors(const llmq_model *m, const llmq_type *types, int n_types, llmq_sens_table *tab)
{
    const llmq_config *c = &m->cfg;
    const bool tied = c->tie_word_embeddings;
    tab->t = calloc((size_t)c->n_layers * LLMQ_LIN_COUNT + 2, sizeof *tab->t);
    if (!tab->t) return llmq_error("sensitivity: out of memory");
    tab->n_params = llmq_model_n_params(m);
    if (add_tensor(tab, "token_embd.weight", LLMQ_ROLE_EMBED, 0, -1, &m->embed, types, n_types)) return LLMQ_ERR;
    int64_t chosen = m->embed.rows * m->embed.cols;
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            char name[64];
            llmq_gguf_layer_tensor_name(name, sizeof name, l, llmq_gguf_linear_name((llmq_linear)k), "weight");
            const llmq_weight *w = &m->layers[l].lin[k];
            if (add_tensor(tab, name, LLMQ_ROLE_LINEAR, (llmq_linear)k, l, w, types, n_types)) return LLMQ_ERR;
            chosen += w->rows * w->cols;
        }
    if (!tied) {
        if (add_tensor(tab, "output.weight", LLMQ_ROLE_OUTPUT, 0, -1, &m->lm_head, types, n_types)) return LLMQ_ERR;
        chosen += m->lm_head.rows * m->lm_head.cols;
    }
    /* everything else (norms, biases) is stored as F32 */
    tab->fixed_bytes = (size_t)(tab->n_params - chosen) * sizeof(float);
    return LLMQ_OK;
}

int llmq_sens_list(const llmq_model *m, const llmq_type *types, int n_types, llmq_sens_table *out)
{
    memset(out, 0, sizeof *out);
    if (list_tensors(m, types, n_types, out)) {
        llmq_sens_free(out);
        return LLMQ_ERR;
    }
    return LLMQ_OK;
}

/* ------------------------------------------------------------ measuring */

/* Rows of logits to log-probabilities, in place. */
static void log_softmax_rows(float *x, size_t rows, int v)
{
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float *p = x + r * v, mx = p[0];
        for (int i = 1; i < v; i++) mx = p[i] > mx ? p[i] : mx;
        double s = 0;
        for (int i = 0; i < v; i++) s += exp((double)p[i] - mx);
        const float lse = mx + (float)log(s);
        for (int i = 0; i < v; i++) p[i] -= lse;
    }
}

/* Mean over rows of KL(base ‖ q), each row in double, added in row order. */
static double mean_kl(const float *base, const float *q, size_t rows, int v)
{
    double *row_kl = malloc(rows * sizeof *row_kl), total = 0;
    if (!row_kl) return NAN;
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        const float *b = base + r * v, *a = q + r * v;
        double s = 0;
        for (int i = 0; i < v; i++) s += exp((double)b[i]) * ((double)b[i] - a[i]);
        row_kl[r] = s;
    }
    for (size_t r = 0; r < rows; r++) total += row_kl[r];
    free(row_kl);
    return total / (double)rows;
}

/* Runs the windows from layer `start` on (0 = from the embedding; n_layers =
 * the head alone) into log-probabilities lp. acts[l] holds every window's
 * input of layer l (l = 0..n_layers) as the original model computes it: on
 * the base run (record) they are written, afterwards the layers before the
 * tensor that changed are not run again. */
static int forward_from(const llmq_model *m, const llmq_calib *c, int start, float **acts, bool record, float *lp, float *x)
{
    const int v = m->cfg.vocab_size, d = m->cfg.hidden_size, T = c->seqlen, L = m->cfg.n_layers;
    for (int s = 0; s < c->n_samples; s++) {
        const size_t off = (size_t)s * T * d;
        if (start == 0) {
            if (llmq_embed(m, c->tokens + (size_t)s * T, T, x) != LLMQ_OK) return LLMQ_ERR;
        } else {
            memcpy(x, acts[start] + off, (size_t)T * d * sizeof(float));
        }
        if (record) memcpy(acts[0] + off, x, (size_t)T * d * sizeof(float));
        for (int l = start; l < L; l++) {
            if (llmq_layer_forward(m, &m->layers[l], l, x, T, NULL, NULL) != LLMQ_OK) return LLMQ_ERR;
            if (record) memcpy(acts[l + 1] + off, x, (size_t)T * d * sizeof(float));
        }
        if (llmq_head_forward(m, x, T, lp + (size_t)s * T * v) != LLMQ_OK) return LLMQ_ERR;
    }
    log_softmax_rows(lp, (size_t)c->n_samples * T, v);
    return LLMQ_OK;
}

int llmq_sens_measure(const llmq_model *m, const llmq_calib *c, const llmq_type *types, int n_types, llmq_sens_progress progress,
                      void *user, llmq_sens_table *out)
{
    memset(out, 0, sizeof *out);
    if (m->cfg.fused_linears || m->cfg.n_experts > 0)
        return llmq_error("sensitivity: %s (%s) is not yet measured by --target-bpw", m->cfg.architecture,
                          m->cfg.n_experts > 0 ? "a mixture of experts" : "gate and up stored as one tensor");
    if (!c || c->n_samples <= 0 || c->seqlen <= 0) return llmq_error("sensitivity: no calibration windows");
    if (list_tensors(m, types, n_types, out)) {
        llmq_sens_free(out);
        return LLMQ_ERR;
    }
    out->n_samples = c->n_samples, out->seqlen = c->seqlen;
    llmq_sens_windows_id(c, out->windows_sha256);
    const int v = m->cfg.vocab_size, d = m->cfg.hidden_size, L = m->cfg.n_layers;
    const size_t rows = (size_t)c->n_samples * c->seqlen;
    float *base = malloc(rows * v * sizeof(float)), *q = malloc(rows * v * sizeof(float));
    float *x = malloc((size_t)c->seqlen * d * sizeof(float));
    float **acts = calloc((size_t)L + 1, sizeof *acts);
    llmq_layer *layers = malloc((size_t)L * sizeof *layers);
    int rc = LLMQ_ERR, total = 0, done = 0;
    for (int i = 0; i < out->n; i++) total += out->t[i].n_types;
    bool ok = base && q && x && acts && layers;
    for (int l = 0; ok && l <= L; l++) ok = (acts[l] = malloc(rows * d * sizeof(float))) != NULL;
    if (!ok) {
        llmq_error("sensitivity: out of memory for %zu × %d log-probabilities and %d layers' inputs", rows, v, L + 1);
        goto end;
    }
    if (forward_from(m, c, 0, acts, true, base, x)) goto end;
    for (int i = 0; i < out->n; i++) {
        llmq_sens_tensor *e = &out->t[i];
        const llmq_weight *w = weight_of(m, e);
        const llmq_type_traits *src = llmq_type_get(w->type);
        const size_t src_row = llmq_row_size(w->type, w->cols);
        size_t most = 0;
        for (int j = 0; j < e->n_types; j++) most = e->bytes[j] > most ? e->bytes[j] : most;
        float *f32 = malloc((size_t)(e->rows * e->cols) * sizeof(float));
        void *packed = malloc(most);
        if (!f32 || !packed || !src || !src->to_float) {
            free(f32); free(packed);
            llmq_error("sensitivity: %s: out of memory or unreadable type", e->name);
            goto end;
        }
        for (int64_t r = 0; r < e->rows; r++) src->to_float((const char *)w->data + r * src_row, f32 + r * e->cols, e->cols);
        for (int j = 0; j < e->n_types; j++) {
            if (progress) progress(user, done, total, e->name);
            if (llmq_quantize_rows(e->types[j], f32, e->rows, (int)e->cols, 0, true, packed) != LLMQ_OK) {
                free(f32); free(packed);
                llmq_error_prefix("sensitivity: %s", e->name);
                goto end;
            }
            /* the model with this one tensor replaced (a struct copy: its own workspace) */
            llmq_model mq = *m;
            mq.ws = NULL, mq.ws_busy = 0;
            memcpy(layers, m->layers, (size_t)m->cfg.n_layers * sizeof *layers);
            mq.layers = layers;
            const llmq_weight qw = {packed, e->types[j], w->rows, w->cols};
            if (e->role == LLMQ_ROLE_EMBED) {
                mq.embed = qw;
                if (m->cfg.tie_word_embeddings) mq.lm_head = qw;
            } else if (e->role == LLMQ_ROLE_OUTPUT) {
                mq.lm_head = qw;
            } else {
                layers[e->layer].lin[e->linear] = qw;
            }
            const int start = e->role == LLMQ_ROLE_EMBED ? 0 : e->role == LLMQ_ROLE_OUTPUT ? L : e->layer;
            const int frc = forward_from(&mq, c, start, acts, false, q, x);
            llmq_model_release_workspace(&mq);
            if (frc) {
                free(f32); free(packed);
                goto end;
            }
            const double kl = mean_kl(base, q, rows, v);
            e->kld[j] = kl > 0 ? kl : 0.0; /* rounding noise of a near-lossless type can dip below 0 */
            done++;
        }
        free(f32);
        free(packed);
    }
    if (progress) progress(user, done, total, "");
    rc = LLMQ_OK;
end:
    for (int l = 0; acts && l <= L; l++) free(acts[l]);
    free(acts); free(base); free(q); free(x); free(layers);
    if (rc) llmq_sens_free(out);
    return rc;
}

/* ------------------------------------------------------------ allocation */

/* Each tensor's type minimising kld + λ·bytes (ties: fewer bytes); returns the bytes. */
static size_t choose_at(const llmq_sens_table *tab, double lambda, int *choice)
{
    size_t bytes = 0;
    for (int i = 0; i < tab->n; i++) {
        const llmq_sens_tensor *e = &tab->t[i];
        int best = 0;
        for (int j = 1; j < e->n_types; j++) {
            const double cj = e->kld[j] + lambda * (double)e->bytes[j], cb = e->kld[best] + lambda * (double)e->bytes[best];
            if (cj < cb || (cj == cb && e->bytes[j] < e->bytes[best])) best = j;
        }
        choice[i] = best;
        bytes += e->bytes[best];
    }
    return bytes;
}

int llmq_sens_allocate(const llmq_sens_table *tab, double target_bpw, int *choice, double *predicted_kld)
{
    if (!(target_bpw > 0)) return llmq_error("--target-bpw %g: must be positive", target_bpw);
    const double budget_d = target_bpw * (double)tab->n_params / 8.0 - (double)tab->fixed_bytes;
    size_t least = 0;
    for (int i = 0; i < tab->n; i++) {
        size_t mn = tab->t[i].bytes[0];
        for (int j = 1; j < tab->t[i].n_types; j++) mn = tab->t[i].bytes[j] < mn ? tab->t[i].bytes[j] : mn;
        least += mn;
    }
    if (budget_d < (double)least)
        return llmq_error("--target-bpw %g: below the smallest file these types make (%.3f bits per weight)", target_bpw,
                          8.0 * ((double)least + (double)tab->fixed_bytes) / (double)tab->n_params);
    const size_t budget = (size_t)budget_d;
    /* λ = 0 takes the lowest KL everywhere; raise λ until the bytes fit, then bisect */
    if (choose_at(tab, 0.0, choice) > budget) {
        double lo = 0.0, hi = 1e-12;
        while (choose_at(tab, hi, choice) > budget && hi < 1e30) hi *= 4;
        for (int it = 0; it < 200; it++) {
            const double mid = 0.5 * (lo + hi);
            if (choose_at(tab, mid, choice) > budget) lo = mid;
            else hi = mid;
        }
        choose_at(tab, hi, choice);
    }
    /* the bytes left: upgrades with the most KL saved per byte first */
    size_t used = 0;
    for (int i = 0; i < tab->n; i++) used += tab->t[i].bytes[choice[i]];
    for (;;) {
        int bi = -1, bj = -1;
        double best_rate = 0;
        for (int i = 0; i < tab->n; i++) {
            const llmq_sens_tensor *e = &tab->t[i];
            const int c = choice[i];
            for (int j = 0; j < e->n_types; j++) {
                if (e->bytes[j] <= e->bytes[c] || e->kld[j] >= e->kld[c] || used - e->bytes[c] + e->bytes[j] > budget) continue;
                const double rate = (e->kld[c] - e->kld[j]) / (double)(e->bytes[j] - e->bytes[c]);
                if (rate > best_rate) best_rate = rate, bi = i, bj = j;
            }
        }
        if (bi < 0) break;
        used = used - tab->t[bi].bytes[choice[bi]] + tab->t[bi].bytes[bj];
        choice[bi] = bj;
    }
    if (predicted_kld) {
        double s = 0;
        for (int i = 0; i < tab->n; i++) s += tab->t[i].kld[choice[i]];
        *predicted_kld = s;
    }
    return LLMQ_OK;
}

/* ------------------------------------------------------------ JSON */

static const char *role_name(llmq_tensor_role r) { return r == LLMQ_ROLE_EMBED ? "embed" : r == LLMQ_ROLE_OUTPUT ? "output" : "linear"; }

int llmq_sens_save(const llmq_sens_table *tab, const char *path)
{
    json_t *root = json_object(), *arr = json_array();
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "windows_sha256", json_string(tab->windows_sha256));
    json_object_set_new(root, "n_samples", json_integer(tab->n_samples));
    json_object_set_new(root, "seqlen", json_integer(tab->seqlen));
    json_object_set_new(root, "n_params", json_integer(tab->n_params));
    json_object_set_new(root, "fixed_bytes", json_integer((json_int_t)tab->fixed_bytes));
    for (int i = 0; i < tab->n; i++) {
        const llmq_sens_tensor *e = &tab->t[i];
        json_t *o = json_object(), *ts = json_array();
        json_object_set_new(o, "name", json_string(e->name));
        json_object_set_new(o, "role", json_string(role_name(e->role)));
        json_object_set_new(o, "layer", json_integer(e->layer));
        json_object_set_new(o, "linear", json_integer(e->role == LLMQ_ROLE_LINEAR ? (int)e->linear : -1));
        json_object_set_new(o, "rows", json_integer(e->rows));
        json_object_set_new(o, "cols", json_integer(e->cols));
        for (int j = 0; j < e->n_types; j++) {
            json_t *c = json_object();
            json_object_set_new(c, "type", json_string(llmq_type_get(e->types[j])->name));
            json_object_set_new(c, "bytes", json_integer((json_int_t)e->bytes[j]));
            json_object_set_new(c, "kld", json_real(e->kld[j]));
            json_array_append_new(ts, c);
        }
        json_object_set_new(o, "types", ts);
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "tensors", arr);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = json_dump_file(root, tmp, JSON_INDENT(1));
    json_decref(root);
    if (rc != 0 || rename(tmp, path) != 0) {
        remove(tmp);
        return llmq_error("%s: cannot write the sensitivity table", path);
    }
    return LLMQ_OK;
}

int llmq_sens_load(const char *path, llmq_sens_table *out)
{
    memset(out, 0, sizeof *out);
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) return llmq_error("%s: line %d: %s", path, err.line, err.text);
    json_t *arr = json_object_get(root, "tensors");
    const char *sha = json_string_value(json_object_get(root, "windows_sha256"));
    int rc = LLMQ_ERR;
    if (json_integer_value(json_object_get(root, "version")) != 1 || !json_is_array(arr) || !sha) {
        llmq_error("%s: not an llmq sensitivity table (version 1)", path);
        goto end;
    }
    out->n_samples = (int)json_integer_value(json_object_get(root, "n_samples"));
    out->seqlen = (int)json_integer_value(json_object_get(root, "seqlen"));
    out->n_params = json_integer_value(json_object_get(root, "n_params"));
    out->fixed_bytes = (size_t)json_integer_value(json_object_get(root, "fixed_bytes"));
    snprintf(out->windows_sha256, sizeof out->windows_sha256, "%s", sha);
    out->t = calloc(json_array_size(arr) + 1, sizeof *out->t);
    if (!out->t) {
        llmq_error("%s: out of memory", path);
        goto end;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *o = json_array_get(arr, i), *ts = json_object_get(o, "types");
        const char *name = json_string_value(json_object_get(o, "name")), *role = json_string_value(json_object_get(o, "role"));
        llmq_sens_tensor *e = &out->t[out->n++];
        if (!name || !role || !json_is_array(ts) || json_array_size(ts) == 0 || json_array_size(ts) > LLMQ_SENS_MAX_TYPES) {
            llmq_error("%s: tensor %zu: missing name, role or types", path, i);
            goto end;
        }
        snprintf(e->name, sizeof e->name, "%s", name);
        e->role = !strcmp(role, "embed") ? LLMQ_ROLE_EMBED : !strcmp(role, "output") ? LLMQ_ROLE_OUTPUT : LLMQ_ROLE_LINEAR;
        e->layer = (int)json_integer_value(json_object_get(o, "layer"));
        e->linear = (llmq_linear)json_integer_value(json_object_get(o, "linear"));
        e->rows = json_integer_value(json_object_get(o, "rows"));
        e->cols = json_integer_value(json_object_get(o, "cols"));
        for (size_t j = 0; j < json_array_size(ts); j++) {
            json_t *c = json_array_get(ts, j);
            const char *tn = json_string_value(json_object_get(c, "type"));
            const int t = tn ? llmq_type_from_name(tn) : -1;
            const double kl = json_number_value(json_object_get(c, "kld"));
            if (t < 0 || llmq_type_internal(t) || !isfinite(kl) || kl < 0) {
                llmq_error("%s: %s: type %zu ('%s') or its kld is not valid", path, name, j, tn ? tn : "");
                goto end;
            }
            e->types[e->n_types] = (llmq_type)t;
            e->bytes[e->n_types] = llmq_row_size((llmq_type)t, e->cols) * (size_t)e->rows;
            e->kld[e->n_types] = kl;
            e->n_types++;
        }
    }
    rc = LLMQ_OK;
end:
    json_decref(root);
    if (rc) llmq_sens_free(out);
    return rc;
}
