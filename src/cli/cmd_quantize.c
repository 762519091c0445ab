/* llmq quantize SRC -o OUT.gguf --method rtn --type T [options] */
#include "cli.h"
#include "live.h"
#include "llmq/calibrated.h"
#include "llmq/refine.h"
#include "llmq/digest.h"
#include "llmq/dist.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/hf_quant.h"
#include "llmq/kernels.h"
#include "llmq/quantize.h"
#include "llmq/sensitivity.h"
#include "llmq/gguf_model.h"
#include "model_arg.h"

#include <jansson.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *usage =
    "usage: llmq quantize SRC -o OUT.gguf [--method M] [--type T] [--calib FILE] [options]\n"
    "       llmq quantize SRC -o OUT_DIR --format gptq|awq [--bits N] [--sym|--asym] [--method M] [options]\n"
    "\n"
    "Quantizes SRC (a checkpoint directory, a .gguf file, or a hub id ORG/NAME[@REV]) into a GGUF file\n"
    "that llama.cpp loads unchanged, or into a Hugging Face GPTQ/AWQ checkpoint directory that vLLM,\n"
    "transformers and TGI load unchanged. SRC may itself be a GPTQ/AWQ checkpoint: with --method rtn\n"
    "its linears are converted block by block where the grids coincide (asymmetric -> q4_1, symmetric\n"
    "-> q4_0 or q4_1, 8-bit symmetric -> q8_0: lossless up to the fp16 rounding of q4_1's min) and\n"
    "re-quantized with the error-minimising grid search otherwise; a line says which.\n"
    "\n"
    "  -o, --output PATH    the GGUF file (or, with --format gptq|awq, the directory) to write\n"
    "                       (atomically: temp file or directory + rename)\n"
    "  --format F           gguf (default); gptq: qweight/qzeros/scales/g_idx per linear, 4 or 8\n"
    "                       bits (AutoGPTQ/GPTQModel packing); awq: AutoAWQ GEMM packing, 4 bits.\n"
    "                       The embedding, norms and head stay in the source dtype; tokenizer files\n"
    "                       are copied; shards of 5 GB with model.safetensors.index.json\n"
    "  --bits N             gptq/awq: 4 (default) or 8 (gptq only)\n"
    "  --sym, --asym        gptq/awq grid: scale·(q − 2^(bits−1)) or scale·(q − zero) with an integer\n"
    "                       zero per group (default: --sym for gptq, --asym for awq)\n"
    "  --gptq-format V      v1 (default, zeros stored − 1, what every GPTQ loader reads) or v2\n"
    "                       (GPTQModel's gptq_v2, true zeros)\n"
    "  --method M           rtn (default): round to nearest on grids in the type's own precision;\n"
    "                       gptq: Hessian-based error compensation (GPTQ, arXiv 2210.17323);\n"
    "                       awq: activation-aware scaling and clipping (AWQ, arXiv 2306.00978);\n"
    "                       awq+gptq: AWQ's scales and clipping, then GPTQ on the scaled weights;\n"
    "                       gptaq, awq+gptaq: GPTQ fitted to the full-precision model's outputs on\n"
    "                       its own inputs (GPTAQ, arXiv 2504.02692): a second activation stream,\n"
    "                       the calibration forward about twice GPTQ's (dense models only).\n"
    "                       gptq and gptaq also solve an untied quantized output head on the final\n"
    "                       hidden states;\n"
    "                       block, gptaq+block: gptq or gptaq, then each decoder block's rounding\n"
    "                       and grids tuned by sign-gradient descent on the block's output error\n"
    "                       against the full-precision block (AutoRound, arXiv 2309.05516; GGUF,\n"
    "                       dense Llama-shaped blocks; kept only where it lowers that error over\n"
    "                       the calibration set; each step a forward and backward of the block:\n"
    "                       30-100x GPTQ's time)\n"
    "  --type T             q4_k_m (default), q4_k_s, q5_k_m, q5_k_s, q3_k_m, q3_k_l, q2_k, iq4_xs,\n"
    "                       iq4_nl: llama.cpp's mixes (llama-quantize's rules per tensor: q4_k_m and\n"
    "                       q5_k_m give attn_v and ffn_down Q6_K in the layers its rule picks; the\n"
    "                       others raise attn_v, ffn_down (and attn_output) to Q3_K/Q4_K/Q5_K);\n"
    "                       one type for every linear: q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k,\n"
    "                       q6_k, q8_0, f16, bf16, f32 (q3_k_s = q3_k, q5_k_s = q5_k); auto: per\n"
    "                       tensor, measured (--target-bpw)\n"
    "  --group-size N       grid span of the decoder linears along the input: 0 (default for gguf)\n"
    "                       = the type's native blocks, as llama-quantize (32 for q4_0/q4_1/q5_0/\n"
    "                       q5_1/q4_k/q5_k/q8_0, 16 for q6_k/q3_k); 32, 64, 128 or 256 share one\n"
    "                       grid across blocks, which a GGUF file stores anyway: coarser costs\n"
    "                       accuracy and saves nothing.\n"
    "                       --format gptq|awq: 32, 64, 128 (default) or 256\n"
    "  --rtn-search         error-minimising grid search instead of plain min/max or absmax\n"
    "  --target-bpw B       (--type auto) choose each tensor's type (q2_k .. q8_0, iq4_xs, f16) for\n"
    "                       the lowest predicted KL at B bits per weight for the whole file: each\n"
    "                       tensor's sensitivity is measured on --calib (that tensor alone rounded to\n"
    "                       each type, KL of the next-token distribution), kept in OUT.sens.json and\n"
    "                       reused while the model and windows are the same; works with every method\n"
    "  --sens-samples N     windows of the sensitivity measurement (default 8)\n"
    "  --sens-seqlen N      tokens per window (default 256)\n"
    "\n"
    "Calibration (gptq, gptaq, awq, awq+gptq, awq+gptaq, block, gptaq+block):\n"
    "  --calib FILE         UTF-8 text, tokenized once; windows drawn at seeded random offsets\n"
    "  --calib-samples N    number of windows (default 128)\n"
    "  --calib-seqlen N     tokens per window (default 2048 for gptq, 512 for awq; at most the\n"
    "                       model's context)\n"
    "  --seed N             offsets' seed (default 0)\n"
    "  --damp F             GPTQ damping, a fraction of mean diag(H) (default 0.01; raised ×10 and\n"
    "                       retried, with a notice, when the Hessian is not positive definite)\n"
    "  --act-order          GPTQ: columns by descending diag(H), with static groups\n"
    "  --gptaq-alpha A      GPTAQ: the share of the full-precision correction applied (default 1,\n"
    "                       the exact one; 0 = GPTQ; the reference code uses 0.25 with its sweep)\n"
    "  --gptaq-form F       GPTAQ: target (default): GPTQ of W + A·W·ΔX·Xᵀ·H⁻¹, the weights closest to\n"
    "                       the full-precision output, on H (and --refine against them); sweep: the\n"
    "                       reference code's correction inside GPTQ's column sweep\n"
    "  --block-iters N      block: sign-gradient steps per decoder block (default 200, AutoRound's)\n"
    "  --block-batch N      block: calibration windows per step (default 8)\n"
    "  --block-init I       block: gptq (default): start from GPTQ's rounding; rtn: from rounding the\n"
    "                       weights on GPTQ's grids (AutoRound's own start)\n"
    "  --refine N           after GPTQ (gptq, gptaq, awq+gptq, awq+gptaq; GGUF output): N passes over each linear,\n"
    "                       each weight moved to the grid value that best cuts the layer's output\n"
    "                       error given the others (QuantEase), then each group's stored scale\n"
    "                       (and min) refitted with its codes held; never raises that error; a\n"
    "                       pass costs about one product of the weights with the Hessian (default 0)\n"
    "  --awq-duo            AWQ: s = x̄^r / w̄^(1-r) (AutoAWQ's duo scaling) instead of s = x̄^r\n"
    "  --no-clip            AWQ: skip the clipping search\n"
    "  --awq-coarse         AWQ: evaluate every 4th scale ratio and the best one's neighbours\n"
    "                       (9 of 20 forwards, about half the search time) instead of all of\n"
    "                       them; may settle on another of several near-equal minima\n"
    "  --exact-forward      the calibration forward and GPTQ's Hessians in fp32 throughout (default:\n"
    "                       where the CPU has AVX-512 VNNI, the quantized linears take int16\n"
    "                       activations: the forward ~1.5x faster, inputs and Hessians within ~2e-4\n"
    "                       of fp32; where it has AVX-512 BF16, the Hessians are summed from bf16\n"
    "                       inputs, ~1.4x faster, within ~4e-4; other bits)\n"
    "  --awq-search-tokens N  AWQ: run the attention and the MLP once per scale ratio over the\n"
    "                       first N calibration tokens (whole windows) instead of all of them;\n"
    "                       the statistics and the other searches use every token (default\n"
    "                       8192; 0 = all)\n"
    "\n"
    "  --keep-output T      type of the output head (f32, f16, bf16, q8_0, q6_k; default: Q6_K,\n"
    "                       or Q8_0 for q8_0 and for rows not a multiple of 256, as llama-quantize)\n"
    "  --keep-embed T       type of the token embedding (default: the base type; a tied\n"
    "                       embedding is also the head and follows the head's rule)\n"
    "  --name NAME          general.name (default: the source directory's name)\n"
    "  --threads N          threads (default: all cores; under mpirun, per rank: the cores shared\n"
    "                       among the ranks on each machine)\n"
    "  --resume             continue an interrupted run after its last finished layer: every run\n"
    "                       records its state in OUT.gguf.partial/ (removed on success); the same\n"
    "                       arguments plus --resume give a file byte-identical to an uninterrupted\n"
    "                       run's. A changed option, checkpoint, calibration file or llmq build is\n"
    "                       refused; without a state the run starts from the first layer\n"
    "  --json               print a JSON summary as the last line of stdout (under mpirun: \"ranks\",\n"
    "                       each rank's windows and the bytes all-reduced)\n"
    "\n"
    "Over MPI ranks (a `make MPI=1` build, Open MPI): mpirun -np N build-mpi/llmq quantize ... shares\n"
    "the calibration windows among N processes, on one machine or many (each maps the checkpoint\n"
    "itself), and rank 0 writes the same file one process writes, byte for byte: gptq (--act-order,\n"
    "--refine), awq and awq+gptq to GGUF. A rank that fails or dies ends the run; --resume continues\n"
    "it with any number of ranks. See docs/quantize.md \"Past one machine\".\n"
    "\n"
    "Norms stay F32. A tensor whose row length does not fit its type's blocks falls back as\n"
    "llama-quantize does (Q6_K->Q8_0, Q3_K->Q4_0, otherwise F16), with a one-line notice.\n";

/* More than the kinds of stage a layer goes through (load, quantize, hessian, solve, refine, awq, forward, write, record, ...). */
#define PENDING_STAGES 12

typedef struct {
    llmq_layer_report *layers; /* one per finished decoder layer (calibrated methods) */
    int n_layers;
    /* The live line (stderr a terminal): what render_line shows, under the line's lock. */
    cli_live *live;
    int n_model_layers;
    int calib_samples, calib_seqlen; /* the calibration windows (0: none) */
    bool tied;          /* no output head to write after the layers */
    int layer;          /* -1 before the decoder layers, n_model_layers for the head */
    char stage[32];         /* the stage the line shows */
    char pending[PENDING_STAGES][32]; /* stages begun since the last draw, one per kind ("solve ...") */
    int n_pending;
    double tokens_per_s;
    bool done;
    double t0, t_embed, t_layer0, t_layer; /* start of the run, the embedding, the first quantized layer, the current layer (0: not yet) */
    int layer0;    /* the first layer this run quantizes (the layers before it were restored by --resume) */
    bool restoring; /* the current layer is read back from the state */
} progress_state;

static void on_stage(void *user, int layer, const char *stage, double tokens_per_s)
{
    progress_state *st = user;
    if (!st->live) return;
    double now = cli_live_now();
    cli_live_lock(st->live);
    /* Restored layers take little time: the ETA counts from the first layer quantized. */
    if (!strcmp(stage, "restore")) st->restoring = true;
    else if (layer != st->layer) st->restoring = false;
    if (layer != st->layer && layer >= 0) {
        if (st->t_layer0 == 0 && !st->restoring) {
            st->t_layer0 = now;
            st->layer0 = layer;
        }
        st->t_layer = now;
    }
    st->layer = layer;
    if (!strcmp(stage, "embed") && st->t_embed == 0) st->t_embed = now;
    /* Every kind of stage shows at least once, however short (a small layer's solves take
     * milliseconds, the line is drawn every 100 ms, and a loaded machine may draw less often): each
     * draw takes the oldest pending one; a stage of a kind already pending replaces that one in its
     * place, so the queue holds one per kind (a layer has fewer kinds than it holds). */
    const size_t kind = strcspn(stage, " ");
    int *np = &st->n_pending, at = -1;
    for (int i = 0; i < *np && at < 0; i++)
        if (!strncmp(st->pending[i], stage, kind) && (st->pending[i][kind] == ' ' || !st->pending[i][kind])) at = i;
    if (at < 0 && *np == PENDING_STAGES) memmove(st->pending[0], st->pending[1], sizeof st->pending[0] * (PENDING_STAGES - 1)), (*np)--;
    snprintf(st->pending[at >= 0 ? at : (*np)++], sizeof st->pending[0], "%s", stage);
    st->tokens_per_s = tokens_per_s;
    cli_live_unlock(st->live);
}

/* Seconds left, or -1 before a decoder layer has finished: the mean time of
 * the finished layers for each layer left (less what the current one has run),
 * plus, when there is an output head to write, as long as the embedding took. */
static double eta_seconds(const progress_state *st, double now)
{
    int n = st->n_model_layers, done = st->layer < 0 || st->t_layer0 == 0 ? 0 : st->layer - st->layer0;
    if (done <= 0 || st->t_layer0 == 0) return -1;
    double per = (st->t_layer - st->t_layer0) / done, in = now - st->t_layer;
    double head = st->tied || st->t_embed == 0 ? 0 : st->t_layer0 - st->t_embed;
    if (st->layer >= n) return head > in ? head - in : 0;
    return per * (n - done - 1) + (per > in ? per - in : 0) + head;
}

static void duration(char *buf, size_t cap, double s)
{
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

/* layer 2/32  hessian gate,up       2710 tok/s  elapsed 1:02  ETA 14:40 */
static void render_line(void *user, double now, char *buf, size_t cap)
{
    progress_state *st = user;
    if (st->n_pending > 0) {
        snprintf(st->stage, sizeof st->stage, "%s", st->pending[0]);
        memmove(st->pending[0], st->pending[1], sizeof st->pending[0] * (PENDING_STAGES - 1));
        st->n_pending--;
    }
    int n = st->n_model_layers, shown = st->layer < 0 ? 0 : st->layer < n ? st->layer + 1 : n;
    char el[32], eta[32] = "--", tps[32] = "";
    duration(el, sizeof el, now - st->t0);
    double left = eta_seconds(st, now);
    if (left >= 0) duration(eta, sizeof eta, left);
    if (st->tokens_per_s > 0) snprintf(tps, sizeof tps, "%.0f tok/s", st->tokens_per_s);
    if (st->done) snprintf(buf, cap, "layer %d/%d  done  elapsed %s", shown, n, el);
    else snprintf(buf, cap, "layer %d/%d  %-17s %12s  elapsed %s  ETA %s", shown, n, st->stage, tps, el, eta);
}

static void on_notice(void *user, const char *line)
{
    progress_state *st = user;
    char text[512];
    snprintf(text, sizeof text, "llmq quantize: note: %s\n", line);
    cli_live_print(st->live, text);
}

/* One line per finished layer: GPTQ's error against RTN's, AWQ's ratios, time, memory. */
static void on_layer_report(void *user, const llmq_layer_report *r)
{
    progress_state *st = user;
    llmq_layer_report *grown = realloc(st->layers, (size_t)(st->n_layers + 1) * sizeof *grown);
    if (grown) {
        st->layers = grown;
        st->layers[st->n_layers++] = *r;
    }
    char text[512];
    size_t n = 0;
#define ADD(...) (n += (size_t)snprintf(text + (n < sizeof text ? n : sizeof text), n < sizeof text ? sizeof text - n : 0, __VA_ARGS__))
    ADD("layer %d/%d:", r->layer + 1, r->n_layers);
    if (r->has_awq) {
        ADD(" awq r=");
        for (int g = 0; g < LLMQ_AWQ_GROUP_COUNT; g++)
            if (r->awq.searched[g]) ADD("%s%.2f", g ? "/" : "", r->awq.ratio[g]);
    }
    double rtn = 0, gptq = 0, refined = 0;
    int k_n = 0, k_refined = 0;
    for (int k = 0; k < LLMQ_LIN_COUNT; k++)
        if (r->err_gptq[k] > 0) {
            rtn += r->err_rtn[k];
            gptq += r->err_gptq[k];
            k_n++;
            if (r->err_refine[k] > 0) {
                refined += r->err_refine[k];
                k_refined++;
            }
        }
    if (k_n) ADD(" gptq err %.5f (rtn %.5f)", gptq / k_n, rtn / k_n);
    if (k_refined) ADD(" refined %.5f", refined / k_refined);
    if (r->damp_retries) ADD(" [damp raised %d×]", r->damp_retries);
    if (r->n_experts > 0) {
        /* the calibration tokens each expert saw; the thinly reached ones were rounded */
        int64_t lo = -1, hi = 0;
        for (int e = 0; e < r->n_experts && e < LLMQ_REPORT_EXPERTS; e++) {
            lo = lo < 0 || r->expert_tokens[e] < lo ? r->expert_tokens[e] : lo;
            hi = r->expert_tokens[e] > hi ? r->expert_tokens[e] : hi;
        }
        ADD(" experts %d: %lld-%lld tokens", r->n_experts, (long long)lo, (long long)hi);
        if (r->experts_rtn) ADD(", %d rounded (< %d tokens)", r->experts_rtn, LLMQ_MOE_MIN_TOKENS);
    }
    ADD("  fwd %.1fs hess %.1fs solve %.1fs", r->seconds_forward, r->seconds_hessian, r->seconds_solver);
    if (r->seconds_refine > 0) ADD(" (refine %.1fs)", r->seconds_refine);
    if (r->has_block)
        ADD(" block mse %.3g -> %.3g%s %.1fs", r->block_mse_init, r->block_mse_final, r->block_kept ? "" : " (not kept)", r->seconds_block);
    ADD(" awq %.1fs  peak RSS %.0f MiB\n", r->seconds_awq, r->peak_rss_bytes / 1048576.0);
#undef ADD
    cli_live_print(st->live, text);
}

static int parse_type_option(const char *opt, const char *value, int *out)
{
    int t = llmq_type_from_name(value);
    if (t < 0 || t == LLMQ_TYPE_Q8_K || llmq_type_internal(t)) return cli_fail("quantize", "%s: unknown type '%s'", opt, value);
    *out = t;
    return 0;
}

/* The last path component of a directory or file, without ".gguf". */
static void default_name(const char *path, char *buf, size_t cap)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t n = len - start;
    if (n > 5 && !strncmp(path + len - 5, ".gguf", 5)) n -= 5;
    snprintf(buf, cap, "%.*s", (int)n, path + start);
}

/* Per-layer GPTQ errors, AWQ choices and timings of a calibrated method. */
static json_t *layers_json(const progress_state *st)
{
    json_t *arr = json_array();
    for (int i = 0; i < st->n_layers; i++) {
        const llmq_layer_report *r = &st->layers[i];
        json_t *e = json_object(), *lin = json_object();
        json_object_set_new(e, "layer", json_integer(r->layer));
        for (int k = 0; k < LLMQ_LIN_COUNT; k++) {
            json_t *l = json_object();
            if (r->err_gptq[k] > 0) {
                json_object_set_new(l, "err_rtn", json_real(r->err_rtn[k]));
                json_object_set_new(l, "err_gptq", json_real(r->err_gptq[k]));
                if (r->err_refine[k] > 0) json_object_set_new(l, "err_refine", json_real(r->err_refine[k]));
                json_object_set_new(l, "damp", json_real(r->damp[k]));
            }
            if (r->has_awq && r->awq.clipped[k]) json_object_set_new(l, "awq_clip_ratio", json_real(r->awq.clip_ratio[k]));
            json_object_set_new(lin, llmq_linear_names[k], l);
        }
        json_object_set_new(e, "linears", lin);
        if (r->has_awq) {
            json_t *groups = json_object();
            for (int g = 0; g < LLMQ_AWQ_GROUP_COUNT; g++)
                if (r->awq.searched[g])
                    json_object_set_new(groups, llmq_awq_group_names[g],
                                        json_pack("{s:f, s:f, s:f}", "ratio", (double)r->awq.ratio[g], "loss_rtn", r->awq.loss_rtn[g],
                                                  "loss_best", r->awq.loss_best[g]));
            json_object_set_new(e, "awq", groups);
        }
        json_object_set_new(e, "seconds", json_pack("{s:f, s:f, s:f, s:f}", "forward", r->seconds_forward, "hessian", r->seconds_hessian,
                                                     "solver", r->seconds_solver, "awq", r->seconds_awq));
        json_object_set_new(e, "peak_rss_bytes", json_integer((json_int_t)r->peak_rss_bytes));
        if (r->has_block)
            json_object_set_new(e, "block", json_pack("{s:f, s:f, s:b, s:I, s:f}", "mse_gptq", r->block_mse_init, "mse", r->block_mse_final,
                                                      "kept", (int)r->block_kept, "codes_changed", (json_int_t)r->block_codes_changed,
                                                      "seconds", r->seconds_block));
        if (r->n_experts > 0) {
            json_t *tokens = json_array();
            for (int x = 0; x < r->n_experts && x < LLMQ_REPORT_EXPERTS; x++) json_array_append_new(tokens, json_integer(r->expert_tokens[x]));
            json_object_set_new(e, "expert_tokens", tokens);
            json_object_set_new(e, "experts_rtn", json_integer(r->experts_rtn));
        }
        json_array_append_new(arr, e);
    }
    return arr;
}

/* --format gptq|awq: what the --json summary and the last line add. */
typedef struct {
    const char *format; /* "gguf", "gptq", "awq" */
    llmq_hf_qconfig q;
    size_t bytes;
    int shards;
    /* a GPTQ/AWQ source re-encoded by the convert method */
    bool converted_source;
    llmq_hf_convert_stats conv;
    /* --target-bpw */
    double target_bpw, predicted_kld;
    bool sens_reused;
} format_info;

static void print_json(const char *out, const char *method, const llmq_policy *pol, const llmq_quant_report *r, const progress_state *st,
                       const format_info *fi)
{
    json_t *o = json_object(), *arr = json_array();
    json_object_set_new(o, "output", json_string(out));
    json_object_set_new(o, "format", json_string(fi->format));
    if (fi->target_bpw > 0) {
        json_object_set_new(o, "target_bpw", json_real(fi->target_bpw));
        json_object_set_new(o, "predicted_kld", json_real(fi->predicted_kld));
        json_object_set_new(o, "sensitivity_reused", json_boolean(fi->sens_reused));
    }
    if (fi->q.method != LLMQ_HF_NONE) {
        json_object_set_new(o, "bits", json_integer(fi->q.bits));
        json_object_set_new(o, "sym", json_boolean(fi->q.sym));
        json_object_set_new(o, "desc_act", json_boolean(fi->q.desc_act));
        if (fi->q.method == LLMQ_HF_GPTQ) json_object_set_new(o, "checkpoint_format", json_string(fi->q.v2 ? "gptq_v2" : "gptq"));
        json_object_set_new(o, "shards", json_integer(fi->shards));
    }
    if (fi->converted_source)
        json_object_set_new(o, "conversion", json_pack("{s:i, s:i, s:b}", "converted_linears", fi->conv.converted, "requantized_linears",
                                                       fi->conv.requantized, "lossless", fi->conv.requantized == 0));
    json_object_set_new(o, "resumed_from_layer", json_integer(r->resumed_layers));
    json_object_set_new(o, "method", json_string(method));
    json_object_set_new(o, "type", json_string(pol->scheme.name));
    json_object_set_new(o, "group_size", json_integer(pol->group_size));
    json_object_set_new(o, "bytes", json_integer((json_int_t)(fi->q.method != LLMQ_HF_NONE ? fi->bytes : r->file_bytes)));
    /* an HF export: of the files' tensors (int32 words, fp16 scales), not of llmq's in-memory blocks */
    const double bpw = fi->q.method != LLMQ_HF_NONE && r->n_elements ? 8.0 * (double)fi->bytes / (double)r->n_elements : r->bits_per_weight;
    json_object_set_new(o, "bits_per_weight", json_real(bpw));
    json_object_set_new(o, "seconds", json_real(r->seconds));
    for (int i = 0; i < r->n_tensors; i++) {
        const llmq_tensor_report *t = &r->tensors[i];
        json_t *e = json_object(), *shape = json_array();
        json_object_set_new(e, "name", json_string(t->name));
        json_object_set_new(e, "type", json_string(llmq_type_get(t->type)->name));
        if (t->n_dims > 1) json_array_append_new(shape, json_integer(t->ne[1]));
        json_array_append_new(shape, json_integer(t->ne[0]));
        json_object_set_new(e, "shape", shape);
        if (t->group_size) json_object_set_new(e, "group_size", json_integer(t->group_size));
        json_object_set_new(e, "bytes", json_integer((json_int_t)t->bytes));
        json_object_set_new(e, "rel_error", json_real(t->rel_error));
        json_array_append_new(arr, e);
    }
    json_object_set_new(o, "tensors", arr);
    if (st->n_layers) json_object_set_new(o, "layers", layers_json(st));
    json_object_set_new(o, "peak_rss_bytes", json_integer((json_int_t)llmq_peak_rss()));
    if (llmq_dist_size() > 1) {
        /* the run over ranks: each one's calibration windows, and what rank 0 all-reduced */
        json_t *shares = json_array();
        for (int r = 0; r < llmq_dist_size(); r++) {
            int first, count;
            llmq_dist_windows_of(r, llmq_dist_size(), st->calib_samples, st->calib_seqlen, &first, &count);
            json_array_append_new(shares, json_pack("{s:i, s:i}", "first", first, "count", count));
        }
        json_object_set_new(o, "ranks", json_pack("{s:i, s:o, s:I, s:f}", "count", llmq_dist_size(), "windows", shares, "bytes_all_reduced",
                                                  (json_int_t)llmq_dist_bytes_reduced(), "seconds_in_collectives", llmq_dist_seconds()));
    }
    cli_print_json_object(o);
}

/* --target-bpw: the chosen type of each tensor, by GGUF name. */
typedef struct {
    const llmq_sens_table *tab;
    const int *choice;
} bpw_choice;

static llmq_type chosen_type(void *user, const llmq_tensor_desc *d)
{
    const bpw_choice *c = user;
    char name[64];
    if (d->role == LLMQ_ROLE_EMBED) snprintf(name, sizeof name, "token_embd.weight");
    else if (d->role == LLMQ_ROLE_OUTPUT) snprintf(name, sizeof name, "output.weight");
    else llmq_gguf_layer_tensor_name(name, sizeof name, d->layer, llmq_gguf_linear_name(d->linear), "weight");
    for (int i = 0; i < c->tab->n; i++)
        if (!strcmp(c->tab->t[i].name, name)) return c->tab->t[i].types[c->choice[i]];
    return LLMQ_TYPE_COUNT;
}

static void on_sens_progress(void *user, int done, int total, const char *tensor)
{
    int *last = user;
    const int pct = total ? 100 * done / total : 100;
    if (pct / 10 == *last / 10 && done != total) return;
    *last = pct;
    fprintf(stderr, "llmq quantize: sensitivity %3d%% (%d of %d tensor × type measurements)%s%s\n", pct, done, total, *tensor ? ", at " : "",
            tensor);
}

/* Does a saved table describe this model's tensors, measured on these windows? */
static bool sens_matches(const llmq_sens_table *saved, const llmq_sens_table *want)
{
    if (saved->n != want->n || saved->n_samples != want->n_samples || saved->seqlen != want->seqlen ||
        saved->n_params != want->n_params || strcmp(saved->windows_sha256, want->windows_sha256))
        return false;
    for (int i = 0; i < saved->n; i++)
        if (strcmp(saved->t[i].name, want->t[i].name) || saved->t[i].rows != want->t[i].rows || saved->t[i].cols != want->t[i].cols)
            return false;
    return true;
}

/* Measures (or reuses OUT.sens.json), allocates, and points the policy at the choice. */
static int plan_target_bpw(cli_model *cm, const char *out, const char *calib_path, int samples, int seqlen, int seed, double target,
                           llmq_sens_table *tab, int **choice, bpw_choice *bc, llmq_policy *pol, format_info *fi)
{
    char path[4096];
    snprintf(path, sizeof path, "%s.sens.json", out);
    llmq_calib cal = {0};
    const int max_ctx = cm->model->cfg.max_position_embeddings;
    llmq_calib_opts cop = {samples, seqlen < max_ctx ? seqlen : max_ctx, (uint64_t)seed};
    if (llmq_calib_from_file(cm->tokenizer, calib_path, &cop, &cal) != LLMQ_OK) return LLMQ_ERR;
    int n_types;
    const llmq_type *types = llmq_sens_default_types(&n_types);
    llmq_sens_table saved;
    fi->sens_reused = false;
    if (llmq_file_exists(path) && llmq_sens_load(path, &saved) == LLMQ_OK) {
        /* reused only when it lists this model's tensors, measured on these windows */
        llmq_sens_table want;
        if (llmq_sens_list(cm->model, types, n_types, &want) == LLMQ_OK) {
            want.n_samples = cal.n_samples, want.seqlen = cal.seqlen;
            llmq_sens_windows_id(&cal, want.windows_sha256);
            fi->sens_reused = sens_matches(&saved, &want);
            llmq_sens_free(&want);
        }
        if (fi->sens_reused) {
            *tab = saved;
            fprintf(stderr, "llmq quantize: sensitivity: reusing %s\n", path);
        } else {
            fprintf(stderr, "llmq quantize: sensitivity: %s is for another model or calibration: measuring again\n", path);
            llmq_sens_free(&saved);
        }
    }
    if (!fi->sens_reused) {
        int last = -10;
        fprintf(stderr, "llmq quantize: sensitivity of %d types per tensor on %d × %d tokens of %s\n", n_types, cal.n_samples, cal.seqlen,
                calib_path);
        if (llmq_sens_measure(cm->model, &cal, types, n_types, on_sens_progress, &last, tab) != LLMQ_OK ||
            llmq_sens_save(tab, path) != LLMQ_OK) {
            llmq_calib_free(&cal);
            return LLMQ_ERR;
        }
    }
    llmq_calib_free(&cal);
    if (!(*choice = malloc(sizeof **choice * (size_t)tab->n))) return llmq_error("out of memory");
    if (llmq_sens_allocate(tab, target, *choice, &fi->predicted_kld) != LLMQ_OK) return LLMQ_ERR;
    bc->tab = tab, bc->choice = *choice;
    pol->tensor_type = chosen_type;
    pol->tensor_type_user = bc;
    /* general.file_type: the uniform file type of the type holding the most parameters */
    int64_t per_type[LLMQ_TYPE_COUNT] = {0};
    for (int i = 0; i < tab->n; i++) per_type[tab->t[i].types[(*choice)[i]]] += tab->t[i].rows * tab->t[i].cols;
    int major = LLMQ_TYPE_Q4_K;
    for (int t = 0; t < LLMQ_TYPE_COUNT; t++)
        if (per_type[t] > per_type[major]) major = t;
    if (llmq_quant_scheme_parse(llmq_type_get(major)->name, &pol->scheme) != LLMQ_OK) llmq_quant_scheme_parse("q4_k", &pol->scheme);
    pol->scheme.name = "auto";
    pol->scheme.mix = false;
    fi->target_bpw = target;
    fprintf(stderr, "llmq quantize: --target-bpw %g: predicted KL %.6f (sum over tensors); types:", target, fi->predicted_kld);
    for (int t = 0; t < LLMQ_TYPE_COUNT; t++) {
        int count = 0;
        for (int i = 0; i < tab->n; i++) count += (int)tab->t[i].types[(*choice)[i]] == t;
        if (count) fprintf(stderr, " %s ×%d", llmq_type_get(t)->name, count);
    }
    fputc('\n', stderr);
    return LLMQ_OK;
}

int cmd_quantize(int argc, char **argv)
{
    const char *src = NULL, *out = NULL, *method = "rtn", *type = "q4_k_m", *name = NULL, *keep_out = NULL, *keep_emb = NULL;
    int group_size = -1, threads = 0, calib_samples = 128, calib_seqlen = 0, seed = 0, refine = 0; /* -1: the format's default */
    const char *calib_path = NULL, *format = "gguf", *gptq_format = "v1", *gptaq_form = "target", *block_init = "gptq";
    double gptaq_alpha = 1.0;
    bool gptaq_option = false; /* --gptaq-alpha or --gptaq-form given */
    int bits = 4, sym = -1; /* -1: the format's default */
    bool type_given = false;
    double damp = 0.01;
    llmq_awq_opts awq_defaults;
    llmq_awq_defaults(&awq_defaults);
    int awq_search_tokens = awq_defaults.search_tokens;
    bool json = false, search = false, act_order = false, awq_duo = false, no_clip = false, awq_coarse = false, resume = false;
    bool exact_forward = false;
    double target_bpw = 0;
    int sens_samples = 8, sens_seqlen = 256;
    const llmq_block_opts block_defaults = llmq_block_default_opts();
    int block_iters = block_defaults.iters, block_batch = block_defaults.batch;
    bool block_option = false; /* --block-iters or --block-batch given */
    for (cli_args a = cli_begin("quantize", argc, argv); cli_next(&a);) {
        if (cli_flag(&a, "--help") || cli_flag(&a, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (cli_flag(&a, "--json")) json = true;
        else if (cli_flag(&a, "--rtn-search")) search = true;
        else if (cli_flag(&a, "--act-order")) act_order = true;
        else if (cli_flag(&a, "--awq-duo")) awq_duo = true;
        else if (cli_flag(&a, "--no-clip")) no_clip = true;
        else if (cli_flag(&a, "--awq-coarse")) awq_coarse = true;
        else if (cli_flag(&a, "--exact-forward")) exact_forward = true;
        else if (cli_flag(&a, "--resume")) resume = true;
        else if (cli_flag(&a, "--sym")) sym = 1;
        else if (cli_flag(&a, "--asym")) sym = 0;
        else if (cli_value(&a, "--format", &format) || cli_value(&a, "--gptq-format", &gptq_format) || cli_int(&a, "--bits", 1, &bits)) {
            if (a.failed) return 2;
        } else if (cli_value(&a, "--gptaq-form", &gptaq_form) || cli_double(&a, "--gptaq-alpha", 0.0, 4.0, &gptaq_alpha)) {
            if (a.failed) return 2;
            gptaq_option = true;
        } else if (cli_int(&a, "--block-iters", 0, &block_iters) || cli_int(&a, "--block-batch", 1, &block_batch) ||
                   cli_value(&a, "--block-init", &block_init)) {
            if (a.failed) return 2;
            block_option = true;
        } else if (cli_value(&a, "--type", &type)) {
            if (a.failed) return 2;
            type_given = true;
        }
        else if (cli_value(&a, "-o", &out) || cli_value(&a, "--output", &out) || cli_value(&a, "--method", &method) ||
                 cli_value(&a, "--name", &name) ||
                 cli_value(&a, "--keep-output", &keep_out) || cli_value(&a, "--keep-embed", &keep_emb) ||
                 cli_int(&a, "--group-size", 0, &group_size) || cli_int(&a, "--threads", 0, &threads) ||
                 cli_value(&a, "--calib", &calib_path) || cli_int(&a, "--calib-samples", 1, &calib_samples) ||
                 cli_int(&a, "--calib-seqlen", 2, &calib_seqlen) || cli_int(&a, "--seed", 0, &seed) ||
                 cli_int(&a, "--awq-search-tokens", 0, &awq_search_tokens) || cli_int(&a, "--refine", 0, &refine) ||
                 cli_double(&a, "--damp", 0.0, 10.0, &damp) || cli_double(&a, "--target-bpw", 1.0, 32.0, &target_bpw) ||
                 cli_int(&a, "--sens-samples", 1, &sens_samples) || cli_int(&a, "--sens-seqlen", 2, &sens_seqlen)) {
            if (a.failed) return 2;
        } else if (a.positional && !src) src = a.positional;
        else {
            cli_unknown(&a);
            return 2;
        }
    }
    if (!src || !out) {
        fputs(usage, stderr);
        return 2;
    }
    const bool asymmetric = !strcmp(method, "gptaq") || !strcmp(method, "awq+gptaq") || !strcmp(method, "gptaq+block");
    const bool block = !strcmp(method, "block") || !strcmp(method, "gptaq+block");
    int kind = !strcmp(method, "rtn") ? -1 : !strcmp(method, "gptq") || !strcmp(method, "gptaq") || block ? LLMQ_CAL_GPTQ
             : !strcmp(method, "awq") ? LLMQ_CAL_AWQ : !strcmp(method, "awq+gptq") || !strcmp(method, "awq+gptaq") ? LLMQ_CAL_AWQ_GPTQ : -2;
    if (kind == -2) {
        cli_fail("quantize", "--method must be rtn, gptq, gptaq, awq, awq+gptq, awq+gptaq, block or gptaq+block, not '%s'", method);
        return 2;
    }
    if (block_option && !block) {
        cli_fail("quantize", "--block-iters, --block-batch and --block-init apply to --method block or gptaq+block, not %s", method);
        return 2;
    }
    if (strcmp(block_init, "gptq") && strcmp(block_init, "rtn")) {
        cli_fail("quantize", "--block-init must be gptq or rtn, not '%s'", block_init);
        return 2;
    }
    if (block && strcmp(format, "gguf")) {
        cli_fail("quantize", "--method %s tunes ggml blocks: it applies to --format gguf only", method);
        return 2;
    }
    if (gptaq_option && !asymmetric) {
        cli_fail("quantize", "--gptaq-alpha and --gptaq-form apply to --method gptaq, awq+gptaq or gptaq+block, not %s", method);
        return 2;
    }
    if (strcmp(gptaq_form, "target") && strcmp(gptaq_form, "sweep")) {
        cli_fail("quantize", "--gptaq-form must be target or sweep, not '%s'", gptaq_form);
        return 2;
    }
    if (refine > LLMQ_REFINE_MAX_PASSES) {
        cli_fail("quantize", "--refine takes 0 to %d passes, not %d", LLMQ_REFINE_MAX_PASSES, refine);
        return 2;
    }
    if (refine && kind != LLMQ_CAL_GPTQ && kind != LLMQ_CAL_AWQ_GPTQ) {
        cli_fail("quantize", "--refine refines GPTQ's result: it needs --method gptq, gptaq, awq+gptq or awq+gptaq, not %s", method);
        return 2;
    }
    if (refine && strcmp(format, "gguf")) {
        cli_fail("quantize", "--refine applies to --format gguf only");
        return 2;
    }
    if (kind >= 0 && !calib_path) {
        cli_fail("quantize", "--method %s needs calibration text: --calib FILE", method);
        return 2;
    }
    if (target_bpw > 0 && !calib_path) {
        cli_fail("quantize", "--target-bpw measures each tensor's sensitivity on calibration text: --calib FILE");
        return 2;
    }
    if (target_bpw > 0 && type_given && strcmp(type, "auto")) {
        cli_fail("quantize", "--target-bpw chooses every tensor's type: give --type auto or no --type, not --type %s", type);
        return 2;
    }
    if (target_bpw > 0 && (keep_out || keep_emb)) {
        cli_fail("quantize", "--target-bpw chooses the head's and the embedding's types too: %s does not combine with it",
                 keep_out ? "--keep-output" : "--keep-embed");
        return 2;
    }
    if (target_bpw > 0 && strcmp(format, "gguf")) {
        cli_fail("quantize", "--target-bpw applies to --format gguf only");
        return 2;
    }
    const int ranks = llmq_dist_size();
    const bool lead = llmq_dist_rank() == 0; /* the rank that prints and writes */
    if (ranks > 1) {
        const char *why = kind < 0 ? "--method rtn needs no calibration" : strcmp(format, "gguf") ? "--format gptq/awq is written by one process"
                        : target_bpw > 0 ? "--target-bpw measures sensitivity in one process" : NULL;
        if (why) {
            cli_fail("quantize", "%s: run it without mpirun (gptq, awq and awq+gptq to GGUF spread their calibration over ranks)", why);
            return 2;
        }
    }
    if (!strcmp(type, "auto") && target_bpw <= 0) {
        cli_fail("quantize", "--type auto needs --target-bpw B (bits per weight of the whole file)");
        return 2;
    }
    format_info fi = {.format = format};
    const bool hf = strcmp(format, "gguf") != 0;
    /* GGUF stores every native block's own scale; the HF formats' grids span 128 columns by default */
    if (group_size < 0) group_size = hf ? 128 : 0;
    if (hf) {
        if (strcmp(format, "gptq") && strcmp(format, "awq")) {
            cli_fail("quantize", "--format must be gguf, gptq or awq, not '%s'", format);
            return 2;
        }
        const bool awq = !strcmp(format, "awq");
        fi.q = (llmq_hf_qconfig){.method = awq ? LLMQ_HF_AWQ : LLMQ_HF_GPTQ, .bits = bits, .group_size = group_size,
                                 .sym = sym < 0 ? !awq : sym == 1, .desc_act = act_order, .static_groups = act_order};
        const char *bad = type_given ? "--type" : keep_out ? "--keep-output" : keep_emb ? "--keep-embed" : resume ? "--resume" : NULL;
        if (bad) {
            cli_fail("quantize", "%s applies to --format gguf only (--format %s keeps the embedding and head in the source dtype)", bad, format);
            return 2;
        }
        if (bits != 4 && (bits != 8 || awq)) {
            cli_fail("quantize", "--bits must be %s for --format %s, not %d", awq ? "4" : "4 or 8", format, bits);
            return 2;
        }
        if (group_size == 0) {
            cli_fail("quantize", "--group-size must be 32, 64, 128 or 256 for --format %s", format);
            return 2;
        }
        if (strcmp(gptq_format, "v1") && strcmp(gptq_format, "v2")) {
            cli_fail("quantize", "--gptq-format must be v1 or v2, not '%s'", gptq_format);
            return 2;
        }
        fi.q.v2 = !strcmp(gptq_format, "v2");
    } else if (sym >= 0 || bits != 4 || strcmp(gptq_format, "v1")) {
        cli_fail("quantize", "%s applies to --format gptq or awq", sym >= 0 ? (sym ? "--sym" : "--asym") : bits != 4 ? "--bits" : "--gptq-format");
        return 2;
    }
    llmq_policy pol = {.group_size = group_size, .keep_output = -1, .keep_embed = -1};
    if (hf) {
        pol.scheme = (llmq_quant_scheme){format, llmq_hf_grid_type(bits, fi.q.sym), false, 0};
    } else if (target_bpw > 0) {
        llmq_quant_scheme_parse("q4_k", &pol.scheme); /* replaced once the types are chosen */
    } else if (llmq_quant_scheme_parse(type, &pol.scheme)) {
        cli_fail("quantize", "--type: %s", llmq_last_error());
        return 2;
    }
    if (group_size != 0 && group_size != 32 && group_size != 64 && group_size != 128 && group_size != 256) {
        cli_fail("quantize", "--group-size must be 32, 64, 128 or 256 (0: native blocks), not %d", group_size);
        return 2;
    }
    if ((keep_out && parse_type_option("--keep-output", keep_out, &pol.keep_output)) ||
        (keep_emb && parse_type_option("--keep-embed", keep_emb, &pol.keep_embed)))
        return 2;
    if (ranks > 1) {
        /* ranks sharing a machine share its cores; mpirun may also bind each rank to fewer */
        cpu_set_t set;
        const int online = (int)sysconf(_SC_NPROCESSORS_ONLN), share = online / llmq_dist_local_size() > 0 ? online / llmq_dist_local_size() : 1;
        const int bound = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : online;
        const int want = threads ? threads : share;
        if (threads == 0) threads = share < bound ? share : bound;
        if (bound < want && lead)
            fprintf(stderr, "llmq quantize: note: mpirun bound each rank to %d core%s, fewer than its %d threads: give the ranks their cores "
                            "with mpirun --bind-to none (or --map-by ppr:1:node:pe=%d)\n", bound, bound == 1 ? "" : "s", want, want);
    }
    llmq_set_threads(threads);

    cli_model *cm = cli_model_open("quantize", src);
    if (!cm) return 1;
    char name_buf[256];
    default_name(cm->path, name_buf, sizeof name_buf);
    progress_state ps = {.n_model_layers = cm->model->cfg.n_layers, .tied = cm->model->cfg.tie_word_embeddings, .layer = -1,
                         .stage = "start"};
    llmq_calib calib = {0};
    llmq_layer_method lm = {0};
    llmq_calibrated_opts co = {0};
    llmq_hf_writer *hw = NULL;
    llmq_tensor_sink sink;
    llmq_layer_method conv = {0};
    llmq_hf_qconfig src_q = {0};
    bool src_quantized = false;
    if (llmq_is_dir(cm->path) && llmq_hf_qconfig_load(cm->path, &src_q, &src_quantized) != LLMQ_OK) {
        cli_fail_last("quantize");
        cli_model_close(cm);
        return 1;
    }
    if (hf) {
        char *cfg = llmq_path_join(cm->path, "config.json");
        bool have_cfg = llmq_is_dir(cm->path) && llmq_file_exists(cfg);
        free(cfg);
        if (!have_cfg) {
            cli_fail("quantize", "--format %s needs a Hugging Face checkpoint directory (config.json) as SRC; %s is not one", format, cm->path);
            cli_model_close(cm);
            return 1;
        }
        /* the embedding and the head stay in the source dtype (plain copies) */
        const llmq_type et = cm->model->embed.type;
        pol.keep_embed = pol.keep_output = et == LLMQ_TYPE_F32 || et == LLMQ_TYPE_BF16 ? (int)et : LLMQ_TYPE_F16;
        llmq_hf_write_opts wo = {.q = fi.q, .src_dir = cm->path, .damp = damp};
        if (!(hw = llmq_hf_writer_new(out, &wo))) {
            cli_fail_last("quantize");
            cli_model_close(cm);
            return 1;
        }
        sink = llmq_hf_writer_sink(hw);
    } else if (src_quantized && kind < 0) {
        conv = llmq_hf_convert_method(&fi.conv);
        fi.converted_source = true;
    }
    if (kind >= 0) {
        if (!cm->tokenizer) {
            cli_fail("quantize", "%s has no tokenizer to read --calib with", cm->path);
            cli_model_close(cm);
            return 1;
        }
        int max_ctx = cm->model->cfg.max_position_embeddings;
        if (calib_seqlen == 0) calib_seqlen = kind == LLMQ_CAL_GPTQ ? 2048 : 512;
        if (calib_seqlen > max_ctx) calib_seqlen = max_ctx;
        llmq_calib_opts cop = {calib_samples, calib_seqlen, (uint64_t)seed};
        if (llmq_calib_from_file(cm->tokenizer, calib_path, &cop, &calib) != LLMQ_OK) {
            cli_fail_last("quantize");
            cli_model_close(cm);
            return 1;
        }
        co.kind = (llmq_calibrated_kind)kind;
        co.calib = &calib;
        co.gptq = llmq_gptq_default_opts();
        co.gptq.damp = (float)damp;
        co.gptq.act_order = act_order;
        llmq_awq_defaults(&co.awq);
        co.awq.duo = awq_duo;
        co.awq.clip = !no_clip;
        co.awq.coarse = awq_coarse;
        co.awq.search_tokens = awq_search_tokens;
        co.awq.rtn_search = search;
        co.rtn_search = search;
        co.exact_forward = exact_forward;
        co.refine_passes = refine;
        co.asymmetric = asymmetric;
        co.gptaq_alpha = (float)gptaq_alpha;
        co.gptaq_form = strcmp(gptaq_form, "sweep") ? LLMQ_GPTAQ_TARGET : LLMQ_GPTAQ_SWEEP;
        co.block = block;
        co.block_opts = block_defaults;
        co.block_opts.iters = block_iters;
        co.block_opts.batch = block_batch;
        co.block_opts.seed = (uint64_t)seed;
        co.block_opts.rtn_init = !strcmp(block_init, "rtn");
        co.report = lead ? on_layer_report : NULL;
        co.stage = lead ? on_stage : NULL;
        co.user = &ps;
        if (llmq_calibrated_method(&co, &lm) != LLMQ_OK) {
            cli_fail_last("quantize");
            llmq_calib_free(&calib);
            cli_model_close(cm);
            return 1;
        }
        ps.calib_samples = calib.n_samples;
        ps.calib_seqlen = calib.seqlen;
        if (ranks > 1 && lead)
            fprintf(stderr, "llmq quantize: %s, calibration %d × %d tokens from %s, over %d ranks (windows shared in units of %d)\n", method,
                    calib.n_samples, calib.seqlen, calib_path, ranks, llmq_dist_unit_windows(calib.seqlen));
        else if (lead)
            fprintf(stderr, "llmq quantize: %s, calibration %d × %d tokens from %s\n", method, calib.n_samples, calib.seqlen, calib_path);
    }
    int status = 1;
    llmq_sens_table sens = {0};
    int *choice = NULL;
    bpw_choice bc = {0};
    if (target_bpw > 0) {
        if (!cm->tokenizer) {
            cli_fail("quantize", "%s has no tokenizer to read --calib with", cm->path);
            goto done;
        }
        if (plan_target_bpw(cm, out, calib_path, sens_samples, sens_seqlen, seed, target_bpw, &sens, &choice, &bc, &pol, &fi) != LLMQ_OK) {
            cli_fail_last("quantize");
            goto done;
        }
    }
    /* The options beyond llmq_quant_opts' own that change the file's bytes (the resume fingerprint). */
    char p_seqlen[16], p_seed[24], p_damp[32], p_tokens[80], p_search[16], p_refine[16], p_target[48], p_alpha[32], p_block[48];
    llmq_quant_param params[16];
    int n_params = 0;
    if (target_bpw > 0) {
        snprintf(p_target, sizeof p_target, "%.17g (%d × %d tokens)", target_bpw, sens_samples, sens_seqlen);
        params[n_params++] = (llmq_quant_param){"--target-bpw", p_target};
    }
    if (kind >= 0) {
        snprintf(p_seqlen, sizeof p_seqlen, "%d", calib.seqlen);
        snprintf(p_seed, sizeof p_seed, "%d", seed);
        params[n_params++] = (llmq_quant_param){"--calib-seqlen", p_seqlen};
        params[n_params++] = (llmq_quant_param){"--seed", p_seed};
        /* the windows as tokenized: a changed tokenizer changes them */
        char sha[65];
        llmq_sha256_hex(calib.tokens, (size_t)calib.n_samples * calib.seqlen * sizeof *calib.tokens, sha);
        snprintf(p_tokens, sizeof p_tokens, "sha256 %s", sha);
        params[n_params++] = (llmq_quant_param){"calibration tokens (the tokenizer)", p_tokens};
    }
    if (kind >= 0) { /* the arithmetic of the calibration forward and Hessians, as this machine runs them */
        params[n_params++] = (llmq_quant_param){"calibration forward", llmq_calibrated_int16(&co) ? "int16" : "exact"};
        if (kind != LLMQ_CAL_AWQ) params[n_params++] = (llmq_quant_param){"Hessians", llmq_calibrated_bf16(&co) ? "bf16" : "fp32"};
    }
    if (kind == LLMQ_CAL_GPTQ || kind == LLMQ_CAL_AWQ_GPTQ) {
        for (int digits = 6; digits <= 9; digits++) { /* the shortest text of the float used */
            snprintf(p_damp, sizeof p_damp, "%.*g", digits, (double)co.gptq.damp);
            if (strtof(p_damp, NULL) == co.gptq.damp) break;
        }
        params[n_params++] = (llmq_quant_param){"--damp", p_damp};
        params[n_params++] = (llmq_quant_param){"--act-order", act_order ? "on" : "off"};
        snprintf(p_refine, sizeof p_refine, "%d", refine);
        params[n_params++] = (llmq_quant_param){"--refine", p_refine};
        if (asymmetric) {
            snprintf(p_alpha, sizeof p_alpha, "%.9g", (double)co.gptaq_alpha);
            params[n_params++] = (llmq_quant_param){"--gptaq-alpha", p_alpha};
            params[n_params++] = (llmq_quant_param){"--gptaq-form", gptaq_form};
        }
        if (block) {
            snprintf(p_block, sizeof p_block, "%d steps of %d windows from %s", block_iters, block_batch, block_init);
            params[n_params++] = (llmq_quant_param){"--block-iters, --block-batch, --block-init", p_block};
        }
    }
    if (kind == LLMQ_CAL_AWQ || kind == LLMQ_CAL_AWQ_GPTQ) {
        params[n_params++] = (llmq_quant_param){"--awq-duo", awq_duo ? "on" : "off"};
        params[n_params++] = (llmq_quant_param){"--no-clip", no_clip ? "on" : "off"};
        params[n_params++] = (llmq_quant_param){"--awq-coarse", awq_coarse ? "on" : "off"};
        snprintf(p_search, sizeof p_search, "%d", awq_search_tokens);
        params[n_params++] = (llmq_quant_param){"--awq-search-tokens", p_search};
    }
    llmq_quant_opts opts = {
        .policy = pol,
        .rtn_search = search,
        .method = kind >= 0 ? &lm : fi.converted_source ? &conv : NULL,
        .sink = hw ? &sink : NULL,
        .calib_sha256 = kind >= 0 ? calib.sha256 : NULL,
        .calib_samples = kind >= 0 ? calib.n_samples : 0,
        .model_name = name ? name : name_buf,
        .notice = lead ? on_notice : NULL,
        .stage = lead ? on_stage : NULL,
        .user = &ps,
        .state = hw ? LLMQ_STATE_NONE : resume ? LLMQ_STATE_RESUME : LLMQ_STATE_RECORD,
        .params = params,
        .n_params = n_params,
    };
    llmq_quant_report rep;
    ps.t0 = cli_live_now();
    ps.live = lead ? cli_live_start(render_line, &ps) : NULL;
    int rc = llmq_quantize_model(cm->model, cm->tokenizer, out, &opts, &rep);
    cli_live_lock(ps.live);
    ps.done = rc == LLMQ_OK;
    cli_live_unlock(ps.live);
    cli_live_end(ps.live); /* on an error, the line as it stood, then the message below it */
    if (rc) {
        if (ranks > 1) fprintf(stderr, "llmq quantize: rank %d of %d: %s\n", llmq_dist_rank(), ranks, llmq_last_error());
        else cli_fail_last("quantize");
        goto done;
    }
    if (!lead) { /* rank 0 reports */
        llmq_quant_report_free(&rep);
        status = 0;
        goto done;
    }
    printf("%-28s %-6s %-14s %10s %10s\n", "tensor", "type", "shape", "bytes", "rel.err");
    for (int i = 0; i < rep.n_tensors; i++) {
        const llmq_tensor_report *t = &rep.tensors[i];
        char shape[48];
        if (t->n_dims > 1) snprintf(shape, sizeof shape, "%lld×%lld", (long long)t->ne[1], (long long)t->ne[0]);
        else snprintf(shape, sizeof shape, "%lld", (long long)t->ne[0]);
        printf("%-28s %-6s %-14s %10zu %10.6f\n", t->name, llmq_type_get(t->type)->name, shape, t->bytes, t->rel_error);
    }
    if (hw) {
        fi.bytes = llmq_hf_writer_bytes(hw);
        fi.shards = llmq_hf_writer_shards(hw);
        printf("wrote %s/: %zu bytes of tensors in %d shard%s (%.3f bits per weight), %s %d-bit %s group %d%s%s (%s), %.2f s\n", out,
               fi.bytes, fi.shards, fi.shards == 1 ? "" : "s", rep.n_elements ? 8.0 * (double)fi.bytes / (double)rep.n_elements : 0.0, format,
               fi.q.bits, fi.q.sym ? "sym" : "asym", group_size, fi.q.desc_act && fi.q.method == LLMQ_HF_GPTQ ? " desc_act" : "",
               fi.q.method == LLMQ_HF_GPTQ ? (fi.q.v2 ? " gptq_v2" : " gptq v1") : " gemm", method, rep.seconds);
    } else {
        printf("wrote %s: %zu bytes, %.3f bits per weight, %s (%s, group %d), %.2f s\n", out, rep.file_bytes,
               rep.bits_per_weight, pol.scheme.name, fi.converted_source ? "converted" : method, group_size, rep.seconds);
    }
    if (fi.converted_source) {
        if (fi.conv.requantized == 0)
            printf("lossless: all %d linears of the %s checkpoint converted block by block to %s (%s)\n", fi.conv.converted,
                   src_q.method == LLMQ_HF_AWQ ? "AWQ" : "GPTQ", pol.scheme.name,
                   pol.scheme.base == LLMQ_TYPE_Q4_1 ? "same dequantized values up to the fp16 rounding of q4_1's min"
                                                     : "identical dequantized values");
        else
            printf("not lossless: %d of %d linears of the %s checkpoint re-quantized to %s with the error-minimising grid search (its grid "
                   "does not map onto %s blocks; relative errors above), %d converted exactly\n", fi.conv.requantized,
                   fi.conv.requantized + fi.conv.converted, src_q.method == LLMQ_HF_AWQ ? "AWQ" : "GPTQ", pol.scheme.name, pol.scheme.name,
                   fi.conv.converted);
    }
    if (json) print_json(out, method, &pol, &rep, &ps, &fi);
    llmq_quant_report_free(&rep);
    status = 0;
done:
    free(choice);
    llmq_sens_free(&sens);
    llmq_hf_writer_free(hw);
    free(ps.layers);
    llmq_calibrated_method_free(&lm);
    llmq_calib_free(&calib);
    cli_model_close(cm);
    return status;
}
