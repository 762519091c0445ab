/* Tensor type policy, after llama.cpp's src/llama-quant.cpp
 * (llama_tensor_get_type_impl, tensor_type_fallback): which type each tensor
 * of a Llama-class model gets for a given --type. */
#include "llmq/quantize.h"

#include "llmq/blocks.h"
#include "llmq/error.h"
#include "llmq/gguf_model.h"

#include <strings.h>

static const llmq_quant_scheme schemes[] = {
    {"q2_k", LLMQ_TYPE_Q2_K, true, LLMQ_FTYPE_MOSTLY_Q2_K},
    {"q3_k", LLMQ_TYPE_Q3_K, false, LLMQ_FTYPE_MOSTLY_Q3_K_S},
    {"q3_k_s", LLMQ_TYPE_Q3_K, false, LLMQ_FTYPE_MOSTLY_Q3_K_S},
    {"q3_k_m", LLMQ_TYPE_Q3_K, true, LLMQ_FTYPE_MOSTLY_Q3_K_M},
    {"q3_k_l", LLMQ_TYPE_Q3_K, true, LLMQ_FTYPE_MOSTLY_Q3_K_L},
    {"q4_0", LLMQ_TYPE_Q4_0, false, LLMQ_FTYPE_MOSTLY_Q4_0},
    {"q4_1", LLMQ_TYPE_Q4_1, false, LLMQ_FTYPE_MOSTLY_Q4_1},
    {"q4_k", LLMQ_TYPE_Q4_K, false, LLMQ_FTYPE_MOSTLY_Q4_K_S},
    {"q4_k_s", LLMQ_TYPE_Q4_K, true, LLMQ_FTYPE_MOSTLY_Q4_K_S},
    {"q4_k_m", LLMQ_TYPE_Q4_K, true, LLMQ_FTYPE_MOSTLY_Q4_K_M},
    {"q5_0", LLMQ_TYPE_Q5_0, false, LLMQ_FTYPE_MOSTLY_Q5_0},
    {"q5_1", LLMQ_TYPE_Q5_1, false, LLMQ_FTYPE_MOSTLY_Q5_1},
    {"q5_k", LLMQ_TYPE_Q5_K, false, LLMQ_FTYPE_MOSTLY_Q5_K_S},
    {"q5_k_s", LLMQ_TYPE_Q5_K, false, LLMQ_FTYPE_MOSTLY_Q5_K_S},
    {"q5_k_m", LLMQ_TYPE_Q5_K, true, LLMQ_FTYPE_MOSTLY_Q5_K_M},
    {"iq4_nl", LLMQ_TYPE_IQ4_NL, true, LLMQ_FTYPE_MOSTLY_IQ4_NL},
    {"iq4_xs", LLMQ_TYPE_IQ4_XS, true, LLMQ_FTYPE_MOSTLY_IQ4_XS},
    {"q8_0", LLMQ_TYPE_Q8_0, false, LLMQ_FTYPE_MOSTLY_Q8_0},
    {"q6_k", LLMQ_TYPE_Q6_K, false, LLMQ_FTYPE_MOSTLY_Q6_K},
    {"f16", LLMQ_TYPE_F16, false, LLMQ_FTYPE_MOSTLY_F16},
    {"bf16", LLMQ_TYPE_BF16, false, LLMQ_FTYPE_MOSTLY_BF16},
    {"f32", LLMQ_TYPE_F32, false, LLMQ_FTYPE_ALL_F32},
};

int llmq_quant_scheme_parse(const char *name, llmq_quant_scheme *out)
{
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (!strcasecmp(name, schemes[i].name)) {
            *out = schemes[i];
            return LLMQ_OK;
        }
    return llmq_error("unknown type '%s' (q2_k, q3_k, q3_k_s, q3_k_m, q3_k_l, q4_0, q4_1, q4_k, q4_k_s, q4_k_m, q5_0, q5_1, q5_k, q5_k_s, "
                      "q5_k_m, q6_k, q8_0, iq4_nl, iq4_xs, f16, bf16, f32)", name);
}

bool llmq_policy_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static bool is_quantized(llmq_type t)
{
    const llmq_type_traits *tr = llmq_type_get(t);
    return tr && tr->is_quantized;
}

static int block_size(llmq_type t) { return llmq_type_get(t)->block_size; }

/* tensor_type_fallback: a type whose block does not divide the row becomes a
 * 32-element type, or F16 when even that does not fit. */
static llmq_type fallback(llmq_type t, int64_t cols)
{
    if (!is_quantized(t) || cols % block_size(t) == 0) return t;
    llmq_type f = LLMQ_TYPE_F16;
    if (t == LLMQ_TYPE_Q6_K) f = LLMQ_TYPE_Q8_0;
    else if (t == LLMQ_TYPE_Q5_K) f = LLMQ_TYPE_Q5_1;
    else if (t == LLMQ_TYPE_Q4_K) f = LLMQ_TYPE_Q5_0;
    else if (t == LLMQ_TYPE_Q3_K || t == LLMQ_TYPE_Q2_K) f = LLMQ_TYPE_Q4_0;
    else if (t == LLMQ_TYPE_IQ4_XS) f = LLMQ_TYPE_IQ4_NL;
    if (is_quantized(f) && cols % block_size(f) != 0) f = LLMQ_TYPE_F16;
    return f;
}

/* llama_tensor_get_type_impl's rules for a dense model's decoder linears
 * (not Falcon, no experts): attn_v is counted per layer as i_attention_wv is. */
static llmq_type mix_linear(const llmq_quant_scheme *s, const llmq_tensor_desc *t)
{
    const int i = t->layer, n = t->n_layers;
    const bool v = t->linear == LLMQ_LIN_V, down = t->linear == LLMQ_LIN_DOWN, o = t->linear == LLMQ_LIN_O;
    llmq_type type = s->base;
    switch (s->file_type) {
    case LLMQ_FTYPE_MOSTLY_Q4_K_M:
    case LLMQ_FTYPE_MOSTLY_Q5_K_M:
        if ((v || down) && llmq_policy_more_bits(i, n)) type = LLMQ_TYPE_Q6_K;
        break;
    case LLMQ_FTYPE_MOSTLY_Q4_K_S:
        if ((v && i < 4) || (down && i < n / 8)) type = LLMQ_TYPE_Q5_K;
        break;
    case LLMQ_FTYPE_MOSTLY_Q2_K:
        if (v) type = t->n_gqa >= 4 ? LLMQ_TYPE_Q4_K : LLMQ_TYPE_Q3_K;
        else if (down || o) type = LLMQ_TYPE_Q3_K;
        break;
    case LLMQ_FTYPE_MOSTLY_Q3_K_M:
        if (v) type = i < 2 ? LLMQ_TYPE_Q5_K : LLMQ_TYPE_Q4_K;
        else if (down) type = i < n / 16 ? LLMQ_TYPE_Q5_K : LLMQ_TYPE_Q4_K;
        else if (o) type = LLMQ_TYPE_Q4_K;
        break;
    case LLMQ_FTYPE_MOSTLY_Q3_K_L:
        if (v || down || o) type = LLMQ_TYPE_Q5_K;
        break;
    case LLMQ_FTYPE_MOSTLY_IQ4_NL:
    case LLMQ_FTYPE_MOSTLY_IQ4_XS:
        /* ffn_down's rule is llama-quantize's without an importance matrix */
        if ((v && t->n_gqa >= 4) || (down && i < n / 8)) type = LLMQ_TYPE_Q5_K;
        break;
    default:
        break;
    }
    return type;
}

int llmq_policy_plan(const llmq_policy *p, const llmq_tensor_desc *t, llmq_tensor_plan *out)
{
    const llmq_type base = p->scheme.base;
    llmq_type type = base;
    int group = 0; /* embedding and head: the type's native blocks, as llama.cpp */
    switch (t->role) {
    case LLMQ_ROLE_NORM:
    case LLMQ_ROLE_BIAS:
    case LLMQ_ROLE_ROPE_FREQS:
        type = LLMQ_TYPE_F32;
        break;
    case LLMQ_ROLE_EMBED:
        if (p->keep_embed >= 0) {
            type = (llmq_type)p->keep_embed;
            break;
        }
        if (!t->tied) break; /* the embedding follows the base type */
        /* a tied embedding is also the head and gets the head's type */
        __attribute__((fallthrough));
    case LLMQ_ROLE_OUTPUT:
        if (p->keep_output >= 0) type = (llmq_type)p->keep_output;
        else if (!is_quantized(base)) type = base;
        else if (t->cols % LLMQ_QK_K != 0) type = LLMQ_TYPE_Q8_0;
        else if (base != LLMQ_TYPE_Q8_0) type = LLMQ_TYPE_Q6_K;
        break;
    case LLMQ_ROLE_LINEAR:
        group = p->group_size;
        if (p->scheme.mix) {
            type = mix_linear(&p->scheme, t);
            /* the 70B rule applies whatever the file type */
            if (t->model_70b && t->linear == LLMQ_LIN_V && (type == LLMQ_TYPE_Q3_K || type == LLMQ_TYPE_Q4_K)) type = LLMQ_TYPE_Q5_K;
        }
        break;
    }
    if (p->tensor_type && (t->role == LLMQ_ROLE_EMBED || t->role == LLMQ_ROLE_OUTPUT || t->role == LLMQ_ROLE_LINEAR)) {
        const llmq_type chosen = p->tensor_type(p->tensor_type_user, t);
        if (chosen != LLMQ_TYPE_COUNT) type = chosen;
    }
    out->wanted = type;
    out->type = fallback(type, t->cols);
    out->group_size = 0;
    if (is_quantized(out->type)) {
        out->group_size = llmq_group_resolve(out->type, group);
        if (llmq_group_check(out->type, (int)t->cols, out->group_size) != LLMQ_OK)
            return llmq_error_prefix("group size %d", out->group_size);
    }
    return LLMQ_OK;
}
