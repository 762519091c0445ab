/* Hugging Face GPTQ / AWQ checkpoints from a quantize run: packing, the
 * directory writer (a sink of the quantize driver) and the converting layer
 * method. See llmq/hf_quant.h. */
#include "llmq/hf_quant.h"

#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/hf_grid.h"
#include "llmq/rtn.h"
#include "llmq/safetensors.h"
#include "llmq/version.h"

#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const lin_group[LLMQ_LIN_COUNT] = {"self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp"};

void llmq_hf_packed_free(llmq_hf_packed *p)
{
    if (!p) return;
    free(p->qweight);
    free(p->qzeros);
    free(p->g_idx);
    free(p->scales);
    memset(p, 0, sizeof *p);
}

int llmq_hf_pack_linear(const llmq_hf_qconfig *q, llmq_type type, const void *rows, int out, int in, llmq_hf_packed *p)
{
    memset(p, 0, sizeof *p);
    const int bits = q->bits, pf = 32 / bits, gs = q->group_size ? q->group_size : in;
    const uint32_t mask = (1u << bits) - 1;
    const bool awq = q->method == LLMQ_HF_AWQ;
    if (type != llmq_hf_grid_type(bits, q->sym))
        return llmq_error("pack %s: weights in %s, not the %d-bit %s grid", awq ? "awq" : "gptq", llmq_type_get(type)->name, bits,
                          q->sym ? "symmetric" : "asymmetric");
    if (in % LLMQ_QK || gs % LLMQ_QK || out % pf || (awq && in % gs))
        return llmq_error("pack %s: a %d × %d weight in groups of %d does not pack (rows and groups must be multiples of 32, "
                          "outputs of %d%s)", awq ? "awq" : "gptq", out, in, gs, pf, awq ? ", inputs of the group size" : "");
    const int ng = (in + gs - 1) / gs;
    const size_t row_bytes = llmq_row_size(type, in);
    const size_t n_qw = (size_t)in * out / pf, n_qz = (size_t)ng * out / pf, n_sc = (size_t)ng * out;
    p->qweight = calloc(n_qw, sizeof *p->qweight);
    p->qzeros = calloc(n_qz, sizeof *p->qzeros);
    p->scales = malloc(n_sc * sizeof *p->scales);
    p->g_idx = awq ? NULL : malloc((size_t)in * sizeof *p->g_idx);
    if (!p->qweight || !p->qzeros || !p->scales || (!awq && !p->g_idx)) {
        llmq_hf_packed_free(p);
        return llmq_error("pack: out of memory for a %d × %d weight", out, in);
    }
    uint32_t *qw = (uint32_t *)p->qweight, *qz = (uint32_t *)p->qzeros;
    /* Threads take runs of 8 output rows: every word packed along the output
     * (AWQ's, the zeros) then belongs to one thread. */
    int bad_o = -1, bad_g = 0, bad_z = 0;
    #pragma omp parallel for schedule(static)
    for (int ob = 0; ob < (out + 7) / 8; ob++) {
        for (int o = 8 * ob; o < 8 * ob + 8 && o < out; o++) {
            const void *row = (const char *)rows + (size_t)o * row_bytes;
            for (int i = 0; i < in; i++) {
                const uint32_t c = (uint32_t)llmq_hf_block_code(type, row, i);
                if (awq) qw[(size_t)i * (out / 8) + o / 8] |= c << (4 * llmq_awq_slot[o % 8]);
                else qw[(size_t)(i / pf) * out + o] |= c << (bits * (i % pf));
            }
            for (int g = 0; g < ng; g++) {
                uint16_t d, d2;
                int z, z2;
                llmq_hf_block_fields(type, row, g * gs / LLMQ_QK, &d, &z);
                /* every block of the group carries its fields: else the weights were quantized in other groups */
                bool same = true;
                for (int b = g * gs / LLMQ_QK + 1; b < (g + 1) * gs / LLMQ_QK && b < in / LLMQ_QK; b++) {
                    llmq_hf_block_fields(type, row, b, &d2, &z2);
                    same = same && d2 == d && z2 == z;
                }
                const int stored = awq || q->v2 ? z : z - 1;
                if (!same || stored < 0 || stored > (int)mask) {
                    #pragma omp critical(llmq_hf_pack)
                    if (bad_o < 0 || o < bad_o) bad_o = o, bad_g = g, bad_z = same ? z : -1;
                    continue;
                }
                p->scales[(size_t)g * out + o] = d;
                if (awq) qz[(size_t)g * (out / 8) + o / 8] |= (uint32_t)stored << (4 * llmq_awq_slot[o % 8]);
                else qz[(size_t)g * (out / pf) + o / pf] |= (uint32_t)stored << (bits * (o % pf));
            }
        }
    }
    if (bad_o >= 0) {
        llmq_hf_packed_free(p);
        if (bad_z < 0)
            return llmq_error("pack %s: row %d, group %d: its 32-element blocks have different scales or zeros (not quantized in groups of %d)",
                              awq ? "awq" : "gptq", bad_o, bad_g, gs);
        return llmq_error("pack %s: zero %d of row %d, group %d cannot be stored%s", awq ? "awq" : "gptq", bad_z, bad_o, bad_g,
                          bad_z - !(awq || q->v2) < 0 ? " in GPTQ v1 (zero − 1 < 0; use checkpoint format v2)" : "");
    }
    if (!awq)
        for (int i = 0; i < in; i++) p->g_idx[i] = i / gs;
    p->qweight_shape[0] = awq ? in : in / pf;
    p->qweight_shape[1] = awq ? out / 8 : out;
    p->qzeros_shape[0] = ng;
    p->qzeros_shape[1] = out / pf;
    p->scales_shape[0] = ng;
    p->scales_shape[1] = out;
    return LLMQ_OK;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    char *name;
    llmq_type type;
    int n_dims;
    int64_t shape[2];
    size_t offset, bytes;
    int shard;
} spooled;

struct llmq_hf_writer {
    llmq_hf_write_opts o;
    char *out_dir, *tmp_dir, *spool_path, *src_dir;
    FILE *spool;
    spooled *t;
    int n, cap;
    size_t offset;
    int n_shards;
    llmq_type dtype; /* the checkpoint's float type: norms, biases */
    llmq_type grid;
    bool gemma_norms; /* Gemma: post-norms named as transformers names them, weights stored as w for 1 + w */
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_tree(const char *path)
{
    if (path && (llmq_is_dir(path) || llmq_file_exists(path))) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

llmq_hf_writer *llmq_hf_writer_new(const char *out_dir, const llmq_hf_write_opts *opts)
{
    llmq_hf_writer *w = calloc(1, sizeof *w);
    if (!w) {
        llmq_error("%s: out of memory", out_dir);
        return NULL;
    }
    w->o = *opts;
    w->out_dir = strdup(out_dir);
    w->src_dir = opts->src_dir ? strdup(opts->src_dir) : NULL;
    w->o.src_dir = w->src_dir;
    if (!w->o.shard_bytes) w->o.shard_bytes = (size_t)5000000000ULL;
    char tmp[64];
    snprintf(tmp, sizeof tmp, ".tmp.%d", (int)getpid());
    size_t len = strlen(out_dir);
    while (len > 1 && out_dir[len - 1] == '/') len--;
    w->tmp_dir = malloc(len + sizeof tmp);
    if (w->tmp_dir) snprintf(w->tmp_dir, len + sizeof tmp, "%.*s%s", (int)len, out_dir, tmp);
    w->spool_path = w->tmp_dir ? llmq_path_join(w->tmp_dir, ".llmq-spool") : NULL;
    if (!w->out_dir || !w->tmp_dir || !w->spool_path) {
        llmq_hf_writer_free(w);
        llmq_error("%s: out of memory", out_dir);
        return NULL;
    }
    return w;
}

void llmq_hf_writer_free(llmq_hf_writer *w)
{
    if (!w) return;
    if (w->spool) fclose(w->spool);
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    free(w->out_dir);
    free(w->tmp_dir);
    free(w->spool_path);
    free(w->src_dir);
    free(w);
}

size_t llmq_hf_writer_bytes(const llmq_hf_writer *w) { return w->offset; }
int llmq_hf_writer_shards(const llmq_hf_writer *w) { return w->n_shards; }

/* An existing output directory is replaced only when it is empty or an earlier export. */
static int check_replaceable(const char *dir)
{
    if (!llmq_file_exists(dir) && !llmq_is_dir(dir)) return LLMQ_OK;
    if (!llmq_is_dir(dir)) return llmq_error("%s: exists and is not a directory", dir);
    llmq_hf_qconfig q;
    bool found;
    if (llmq_hf_qconfig_load(dir, &q, &found) == LLMQ_OK && found) return LLMQ_OK;
    if (rmdir(dir) == 0 || errno == ENOENT) return LLMQ_OK;
    return llmq_error("%s: exists and is not a GPTQ/AWQ checkpoint; refusing to replace it (remove it first)", dir);
}

static int sink_begin(void *state, const llmq_model *src)
{
    llmq_hf_writer *w = state;
    const llmq_hf_qconfig *q = &w->o.q;
    if (q->method != LLMQ_HF_GPTQ && q->method != LLMQ_HF_AWQ) return llmq_error("%s: no GPTQ/AWQ method", w->out_dir);
    if ((q->bits != 4 && q->bits != 8) || (q->method == LLMQ_HF_AWQ && q->bits != 4))
        return llmq_error("%s: %d-bit %s is not a Hugging Face packing (GPTQ: 4 or 8 bits, AWQ: 4)", w->out_dir, q->bits,
                          q->method == LLMQ_HF_AWQ ? "AWQ" : "GPTQ");
    if (!w->src_dir) return llmq_error("%s: the source checkpoint directory (config.json) is needed", w->out_dir);
    if (src->cfg.n_experts > 0)
        return llmq_error("%s: %s: Hugging Face GPTQ/AWQ output of a mixture of experts is not supported yet (GGUF is)", w->out_dir,
                          src->cfg.architecture);
    if (src->cfg.fused_linears)
        return llmq_error("%s: %s: Hugging Face GPTQ/AWQ output of fused qkv_proj/gate_up_proj is not supported yet (GGUF is)",
                          w->out_dir, src->cfg.architecture);
    if (strcmp(src->cfg.tensor_prefix, "model."))
        return llmq_error("%s: %s: a multimodal checkpoint's text model is written as GGUF only (-o FILE.gguf)", w->out_dir,
                          src->cfg.architecture);
    if (q->group_size <= 0 || q->group_size % LLMQ_QK)
        return llmq_error("%s: group size %d: llmq writes groups of a positive multiple of 32 columns", w->out_dir, q->group_size);
    if (check_replaceable(w->out_dir)) return LLMQ_ERR;
    w->grid = llmq_hf_grid_type(q->bits, q->sym);
    w->gemma_norms = src->cfg.norm_plus_one;
    const llmq_type et = src->embed.type;
    w->dtype = et == LLMQ_TYPE_F32 || et == LLMQ_TYPE_BF16 ? et : LLMQ_TYPE_F16;
    remove_tree(w->tmp_dir);
    if (mkdir(w->tmp_dir, 0755) != 0) return llmq_error("%s: cannot create: %s", w->tmp_dir, strerror(errno));
    if (!(w->spool = fopen(w->spool_path, "w+b"))) {
        remove_tree(w->tmp_dir);
        return llmq_error("%s: cannot create: %s", w->spool_path, strerror(errno));
    }
    return LLMQ_OK;
}

static int spool_add(llmq_hf_writer *w, const char *name, llmq_type type, int n_dims, int64_t d0, int64_t d1, const void *data,
                     size_t bytes)
{
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 256;
        spooled *g = realloc(w->t, (size_t)cap * sizeof *g);
        if (!g) return llmq_error("%s: out of memory", w->out_dir);
        w->t = g;
        w->cap = cap;
    }
    spooled *s = &w->t[w->n];
    *s = (spooled){strdup(name), type, n_dims, {d0, d1}, w->offset, bytes, 0};
    if (!s->name) return llmq_error("%s: out of memory", w->out_dir);
    w->n++;
    if (fwrite(data, 1, bytes, w->spool) != bytes) return llmq_error("%s: write failed: %s", w->spool_path, strerror(errno));
    w->offset += bytes;
    return LLMQ_OK;
}

/* A vector of f32 stored in the checkpoint's float type. */
static int spool_vector(llmq_hf_writer *w, const char *name, const float *v, int64_t n)
{
    const size_t es = w->dtype == LLMQ_TYPE_F32 ? 4 : 2;
    void *buf = malloc((size_t)n * es);
    if (!buf) return llmq_error("%s: out of memory", w->out_dir);
    llmq_type_get(w->dtype)->from_float(v, buf, n);
    int rc = spool_add(w, name, w->dtype, 1, n, 0, buf, (size_t)n * es);
    free(buf);
    return rc;
}

static int sink_write(void *state, const char *gguf_name, const llmq_tensor_desc *d, llmq_type type, const void *data, size_t bytes)
{
    llmq_hf_writer *w = state;
    char name[256];
    char prefix[200] = "";
    if (d->role == LLMQ_ROLE_LINEAR || d->role == LLMQ_ROLE_BIAS)
        snprintf(prefix, sizeof prefix, "model.layers.%d.%s.%s", d->layer, lin_group[d->linear], llmq_linear_names[d->linear]);
    switch (d->role) {
    case LLMQ_ROLE_EMBED:
    case LLMQ_ROLE_OUTPUT:
        return spool_add(w, d->role == LLMQ_ROLE_EMBED ? "model.embed_tokens.weight" : "lm_head.weight", type, 2, d->rows, d->cols, data,
                         bytes);
    case LLMQ_ROLE_NORM: {
        if (d->layer < 0) snprintf(name, sizeof name, "model.norm.weight");
        else
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", d->layer,
                     strstr(gguf_name, "attn_norm")             ? "input_layernorm"
                     : strstr(gguf_name, "attn_q_norm")         ? "self_attn.q_norm"
                     : strstr(gguf_name, "attn_k_norm")         ? "self_attn.k_norm"
                     : strstr(gguf_name, "post_attention_norm") ? "post_attention_layernorm"
                     : strstr(gguf_name, "post_ffw_norm")       ? "post_feedforward_layernorm"
                     : w->gemma_norms                           ? "pre_feedforward_layernorm"
                                                                : "post_attention_layernorm");
        if (!w->gemma_norms) return spool_vector(w, name, data, d->cols);
        float *v = malloc((size_t)d->cols * sizeof *v);
        if (!v) return llmq_error("%s: out of memory", w->out_dir);
        for (int64_t i = 0; i < d->cols; i++) v[i] = ((const float *)data)[i] - 1.0f; /* back to transformers' w */
        int rc = spool_vector(w, name, v, d->cols);
        free(v);
        return rc;
    }
    case LLMQ_ROLE_BIAS:
        snprintf(name, sizeof name, "%s.bias", prefix);
        return spool_vector(w, name, data, d->cols);
    case LLMQ_ROLE_ROPE_FREQS:
        return LLMQ_OK; /* computed from config.json by the loaders */
    case LLMQ_ROLE_LINEAR:
        break;
    }
    if (type != w->grid)
        return llmq_error("%s: stored as %s, not the %d-bit grid (its row length %lld is not a multiple of 32?)", gguf_name,
                          llmq_type_get(type)->name, w->o.q.bits, (long long)d->cols);
    llmq_hf_packed p;
    if (llmq_hf_pack_linear(&w->o.q, type, data, (int)d->rows, (int)d->cols, &p)) return llmq_error_prefix("%s", prefix);
    int rc = LLMQ_OK;
    snprintf(name, sizeof name, "%s.qweight", prefix);
    rc = spool_add(w, name, LLMQ_TYPE_I32, 2, p.qweight_shape[0], p.qweight_shape[1], p.qweight,
                   (size_t)(p.qweight_shape[0] * p.qweight_shape[1]) * 4);
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    if (!rc) rc = spool_add(w, name, LLMQ_TYPE_I32, 2, p.qzeros_shape[0], p.qzeros_shape[1], p.qzeros, (size_t)(p.qzeros_shape[0] * p.qzeros_shape[1]) * 4);
    snprintf(name, sizeof name, "%s.scales", prefix);
    if (!rc) rc = spool_add(w, name, LLMQ_TYPE_F16, 2, p.scales_shape[0], p.scales_shape[1], p.scales, (size_t)(p.scales_shape[0] * p.scales_shape[1]) * 2);
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    if (!rc && p.g_idx) rc = spool_add(w, name, LLMQ_TYPE_I32, 1, d->cols, 0, p.g_idx, (size_t)d->cols * 4);
    llmq_hf_packed_free(&p);
    return rc;
}

typedef struct {
    llmq_hf_writer *w;
    const spooled *first;
} shard_fill;

static int fill_from_spool(void *user, size_t i, size_t offset, void *buf, size_t len)
{
    shard_fill *f = user;
    const spooled *s = &f->first[i];
    if (pread(fileno(f->w->spool), buf, len, (off_t)(s->offset + offset)) != (ssize_t)len)
        return llmq_error("%s: read failed", f->w->spool_path);
    return LLMQ_OK;
}

static char *shard_name(int k, int n)
{
    char *s = malloc(64);
    if (!s) return NULL;
    if (n == 1) snprintf(s, 64, "model.safetensors");
    else snprintf(s, 64, "model-%05d-of-%05d.safetensors", k + 1, n);
    return s;
}

static int write_shards(llmq_hf_writer *w)
{
    if (fflush(w->spool) != 0) return llmq_error("%s: write failed", w->spool_path);
    /* Shards in file order, a new one when the next tensor would pass the limit (transformers' rule). */
    size_t in_shard = 0;
    int k = 0;
    for (int i = 0; i < w->n; i++) {
        if (in_shard > 0 && in_shard + w->t[i].bytes > w->o.shard_bytes) {
            k++;
            in_shard = 0;
        }
        w->t[i].shard = k;
        in_shard += w->t[i].bytes;
    }
    w->n_shards = k + 1;
    static const char *const meta[] = {"format", "pt", NULL};
    int rc = LLMQ_OK;
    json_t *map = json_object();
    for (int s = 0, i0 = 0; s < w->n_shards && rc == LLMQ_OK; s++) {
        int i1 = i0;
        while (i1 < w->n && w->t[i1].shard == s) i1++;
        llmq_st_tensor *st = calloc((size_t)(i1 - i0), sizeof *st);
        char *sn = shard_name(s, w->n_shards), *path = sn ? llmq_path_join(w->tmp_dir, sn) : NULL;
        if (!st || !path) rc = llmq_error("%s: out of memory", w->out_dir);
        for (int i = i0; rc == LLMQ_OK && i < i1; i++) {
            llmq_st_tensor *t = &st[i - i0];
            t->name = w->t[i].name;
            t->type = w->t[i].type;
            t->n_dims = w->t[i].n_dims;
            t->shape[0] = w->t[i].shape[0];
            t->shape[1] = w->t[i].shape[1];
            t->n_bytes = w->t[i].bytes;
            json_object_set_new(map, w->t[i].name, json_string(sn));
        }
        shard_fill f = {w, &w->t[i0]};
        if (rc == LLMQ_OK) rc = llmq_st_write_stream(path, st, (size_t)(i1 - i0), meta, fill_from_spool, &f);
        free(st);
        free(sn);
        free(path);
        i0 = i1;
    }
    if (rc == LLMQ_OK && w->n_shards > 1) {
        json_t *idx = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)w->offset, "weight_map", map);
        char *path = llmq_path_join(w->tmp_dir, "model.safetensors.index.json");
        if (!idx || json_dump_file(idx, path, JSON_INDENT(2)) != 0) rc = llmq_error("%s: cannot write", path);
        json_decref(idx);
        free(path);
    }
    json_decref(map);
    return rc;
}

static json_t *qconfig_json(const llmq_hf_write_opts *o)
{
    const llmq_hf_qconfig *q = &o->q;
    if (q->method == LLMQ_HF_AWQ)
        return json_pack("{s:s, s:i, s:i, s:b, s:s, s:n}", "quant_method", "awq", "bits", q->bits, "group_size",
                         q->group_size ? q->group_size : -1, "zero_point", 1, "version", "gemm", "modules_to_not_convert");
    return json_pack("{s:s, s:i, s:i, s:b, s:b, s:b, s:f, s:b, s:s, s:{s:[s]}}", "quant_method", "gptq", "bits", q->bits, "group_size",
                     q->group_size ? q->group_size : -1, "desc_act", q->desc_act, "static_groups", q->static_groups, "sym", q->sym,
                     "damp_percent", o->damp, "true_sequential", 1, "checkpoint_format", q->v2 ? "gptq_v2" : "gptq", "meta",
                     "quantizer", "llmq:" LLMQ_VERSION);
}

static int copy_file(const char *from, const char *to)
{
    size_t len;
    char *data = llmq_read_file(from, (size_t)1 << 30, &len);
    if (!data) return LLMQ_ERR;
    FILE *fp = fopen(to, "wb");
    int ok = fp && fwrite(data, 1, len, fp) == len;
    if (fp && fclose(fp) != 0) ok = 0;
    free(data);
    return ok ? LLMQ_OK : llmq_error("%s: cannot write", to);
}

static int write_meta(llmq_hf_writer *w)
{
    char *src_cfg = llmq_path_join(w->src_dir, "config.json"), *cfg = llmq_path_join(w->tmp_dir, "config.json");
    json_t *root = llmq_json_object_load(src_cfg);
    int rc = root ? LLMQ_OK : LLMQ_ERR;
    if (root) {
        json_object_set_new(root, "quantization_config", qconfig_json(&w->o));
        json_object_set_new(root, "torch_dtype", json_string(w->dtype == LLMQ_TYPE_F32 ? "float32" : w->dtype == LLMQ_TYPE_BF16 ? "bfloat16" : "float16"));
        if (json_dump_file(root, cfg, JSON_INDENT(2)) != 0) rc = llmq_error("%s: cannot write", cfg);
    }
    json_decref(root);
    free(src_cfg);
    free(cfg);
    if (rc == LLMQ_OK && w->o.q.method == LLMQ_HF_GPTQ) {
        json_t *qc = qconfig_json(&w->o);
        char *path = llmq_path_join(w->tmp_dir, "quantize_config.json");
        if (json_dump_file(qc, path, JSON_INDENT(2)) != 0) rc = llmq_error("%s: cannot write", path);
        json_decref(qc);
        free(path);
    }
    static const char *const files[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                                        "added_tokens.json", "generation_config.json", NULL};
    for (int i = 0; rc == LLMQ_OK && files[i]; i++) {
        char *from = llmq_path_join(w->src_dir, files[i]), *to = llmq_path_join(w->tmp_dir, files[i]);
        if (llmq_file_exists(from)) rc = copy_file(from, to);
        free(from);
        free(to);
    }
    return rc;
}

/* Puts tmp_dir at out_dir: an earlier export there is moved aside first and removed after. */
static int commit_dir(llmq_hf_writer *w)
{
    char old[4200] = "";
    if (llmq_is_dir(w->out_dir)) {
        snprintf(old, sizeof old, "%s.old", w->tmp_dir);
        remove_tree(old);
        if (rename(w->out_dir, old) != 0) return llmq_error("%s: cannot move the earlier export aside: %s", w->out_dir, strerror(errno));
    }
    if (rename(w->tmp_dir, w->out_dir) != 0) {
        int e = errno;
        if (*old) rename(old, w->out_dir);
        return llmq_error("%s: cannot rename %s into place: %s", w->out_dir, w->tmp_dir, strerror(e));
    }
    if (*old) remove_tree(old);
    return LLMQ_OK;
}

static void sink_abort(void *state)
{
    llmq_hf_writer *w = state;
    if (w->spool) fclose(w->spool);
    w->spool = NULL;
    remove_tree(w->tmp_dir);
}

static int sink_finish(void *state)
{
    llmq_hf_writer *w = state;
    int rc = write_shards(w);
    if (rc == LLMQ_OK) rc = write_meta(w);
    if (w->spool) fclose(w->spool);
    w->spool = NULL;
    remove(w->spool_path);
    if (rc == LLMQ_OK) rc = commit_dir(w);
    if (rc != LLMQ_OK) remove_tree(w->tmp_dir);
    return rc;
}

llmq_tensor_sink llmq_hf_writer_sink(llmq_hf_writer *w)
{
    llmq_tensor_sink s = {w, sink_begin, sink_write, sink_finish, sink_abort};
    return s;
}

/* ------------------------------------------------------------------ read */

/* Linear sw re-encoded block by block in type tt, when its grid maps onto tt's blocks. */
static bool convert_exact(const llmq_weight *sw, llmq_type tt, void *dst)
{
    const llmq_type st = sw->type;
    const size_t bytes = llmq_row_size(st, sw->cols) * (size_t)sw->rows;
    if (st == tt && (st == LLMQ_TYPE_Q4_0 || st == LLMQ_TYPE_Q8_0)) {
        memcpy(dst, sw->data, bytes);
        return true;
    }
    if (tt != LLMQ_TYPE_Q4_1 || (st != LLMQ_TYPE_HF_U4 && st != LLMQ_TYPE_Q4_0)) return false;
    const int64_t nb = (int64_t)sw->rows * (sw->cols / LLMQ_QK);
    llmq_block_q4_1 *y = dst;
    for (int64_t b = 0; b < nb; b++) {
        uint16_t d;
        int z = 8; /* Q4_0 */
        if (st == LLMQ_TYPE_HF_U4) {
            const llmq_block_hf_u4 *x = (const llmq_block_hf_u4 *)sw->data + b;
            d = x->d;
            z = x->z;
            memcpy(y[b].qs, x->qs, 16);
        } else {
            const llmq_block_q4_0 *x = (const llmq_block_q4_0 *)sw->data + b;
            d = x->d;
            memcpy(y[b].qs, x->qs, 16);
        }
        y[b].d = d;
        y[b].m = llmq_f32_to_f16(-(llmq_f16_to_f32(d) * (float)z));
    }
    return true;
}

static int conv_quantize_layer(void *state, const llmq_model *src, int layer, llmq_layer_f32 *w,
                               const llmq_quant_target targets[LLMQ_LIN_COUNT], void *const packed[LLMQ_LIN_COUNT])
{
    llmq_hf_convert_stats *stats = state;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
        if (!packed[k]) continue;
        const llmq_weight *sw = &src->layers[layer].lin[k];
        if (convert_exact(sw, targets[k].type, packed[k])) {
            stats->converted++;
            continue;
        }
        if (llmq_quantize_rows(targets[k].type, w->lin[k], sw->rows, sw->cols, targets[k].group_size, true, packed[k]))
            return llmq_error_prefix("layer %d %s", layer, llmq_linear_names[k]);
        stats->requantized++;
    }
    return LLMQ_OK;
}

llmq_layer_method llmq_hf_convert_method(llmq_hf_convert_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    llmq_layer_method m = {"convert", stats, NULL, conv_quantize_layer, NULL, NULL, NULL, NULL};
    return m;
}
