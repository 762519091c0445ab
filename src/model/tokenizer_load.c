/* Loading tokenizer.json (+ tokenizer_config.json) with jansson. Every field is
 * type-checked; a bad file gets a one-line message naming the file and field. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "llmq/error.h"
#include "llmq/file.h"
#include "tokenizer_internal.h"

#define MAX_VOCAB (1 << 26)

/* ---------------- small JSON helpers ---------------- */

/* 1: present and a bool (stored in *v), 0: absent or null, -1: wrong type (error set). */
static int get_bool(json_t *obj, const char *key, int *v, const char *name, const char *where)
{
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j)) return 0;
    if (!json_is_boolean(j)) return llmq_error("%s: %s.%s: expected a boolean", name, where, key);
    *v = json_is_true(j);
    return 1;
}

static int get_string(json_t *obj, const char *key, const char **s, size_t *n, const char *name, const char *where)
{
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j)) return 0;
    if (!json_is_string(j)) return llmq_error("%s: %s.%s: expected a string", name, where, key);
    *s = json_string_value(j);
    *n = json_string_length(j);
    return 1;
}

static int get_int(json_t *obj, const char *key, long long *v, const char *name, const char *where)
{
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j)) return 0;
    if (!json_is_integer(j)) return llmq_error("%s: %s.%s: expected an integer", name, where, key);
    *v = json_integer_value(j);
    return 1;
}

static const char *type_of(json_t *obj)
{
    json_t *t = json_object_get(obj, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

/* {"String": s} or {"Regex": r} */
static int get_pattern(json_t *obj, const char **s, size_t *n, int *is_regex, const char *name, const char *where)
{
    json_t *p = json_object_get(obj, "pattern");
    if (!json_is_object(p)) return llmq_error("%s: %s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", name, where);
    json_t *str = json_object_get(p, "String"), *re = json_object_get(p, "Regex");
    json_t *v = str ? str : re;
    if (!json_is_string(v)) return llmq_error("%s: %s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", name, where);
    *s = json_string_value(v);
    *n = json_string_length(v);
    *is_regex = str == NULL;
    return LLMQ_OK;
}

/* ---------------- pipeline parsing ---------------- */

static int add_normalizer(llmq_tokenizer *tok, json_t *j, const char *name, int depth)
{
    if (!j || json_is_null(j)) return LLMQ_OK;
    if (!json_is_object(j) || !type_of(j)) return llmq_error("%s: normalizer: expected an object with a 'type'", name);
    const char *type = type_of(j);
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(j, "normalizers");
        if (!json_is_array(list)) return llmq_error("%s: normalizer.normalizers: expected an array", name);
        if (depth > 8) return llmq_error("%s: normalizer: nested too deeply", name);
        for (size_t i = 0; i < json_array_size(list); i++)
            if (add_normalizer(tok, json_array_get(list, i), name, depth + 1)) return LLMQ_ERR;
        return LLMQ_OK;
    }
    tk_normalizer nm;
    memset(&nm, 0, sizeof nm);
    const char *s = NULL;
    size_t n = 0;
    if (!strcmp(type, "Prepend")) {
        nm.kind = NORM_PREPEND;
        if (get_string(j, "prepend", &s, &n, name, "normalizer.Prepend") != 1)
            return llmq_error("%s: normalizer.Prepend.prepend: expected a string", name);
        nm.text = tk_arena_strdup(&tok->arena, s, n);
        nm.text_len = n;
    } else if (!strcmp(type, "Replace")) {
        nm.kind = NORM_REPLACE;
        int is_regex;
        const char *c = NULL;
        size_t cn = 0;
        if (get_pattern(j, &s, &n, &is_regex, name, "normalizer.Replace")) return LLMQ_ERR;
        if (get_string(j, "content", &c, &cn, name, "normalizer.Replace") != 1)
            return llmq_error("%s: normalizer.Replace.content: expected a string", name);
        nm.text = tk_arena_strdup(&tok->arena, c, cn);
        nm.text_len = cn;
        if (is_regex) {
            if (tk_regex_compile(&nm.re, s, n, 0, name)) return LLMQ_ERR;
        } else {
            nm.pattern = tk_arena_strdup(&tok->arena, s, n);
            nm.pattern_len = n;
        }
    } else if (!strcmp(type, "NFC")) nm.kind = NORM_NFC;
    else if (!strcmp(type, "NFD")) nm.kind = NORM_NFD;
    else if (!strcmp(type, "NFKC")) nm.kind = NORM_NFKC;
    else if (!strcmp(type, "NFKD")) nm.kind = NORM_NFKD;
    else if (!strcmp(type, "Lowercase")) nm.kind = NORM_LOWERCASE;
    else return llmq_error("%s: unsupported normalizer type %s", name, type);
    tk_normalizer *v = realloc(tok->norms, (size_t)(tok->n_norms + 1) * sizeof *v);
    if (!v) {
        tk_regex_free(&nm.re);
        return llmq_error("tokenizer: out of memory");
    }
    tok->norms = v;
    tok->norms[tok->n_norms++] = nm;
    return LLMQ_OK;
}

static int parse_behavior(const char *b)
{
    if (!strcmp(b, "Removed")) return SPLIT_REMOVED;
    if (!strcmp(b, "Isolated")) return SPLIT_ISOLATED;
    if (!strcmp(b, "MergedWithPrevious")) return SPLIT_MERGED_PREV;
    if (!strcmp(b, "MergedWithNext")) return SPLIT_MERGED_NEXT;
    if (!strcmp(b, "Contiguous")) return SPLIT_CONTIGUOUS;
    return -1;
}

/* replacement char + prepend scheme (new "prepend_scheme" or old "add_prefix_space") */
static int parse_metaspace(json_t *j, char repl[8], size_t *repl_len, int *scheme, const char *name, const char *where)
{
    const char *s = NULL;
    size_t n = 0;
    if (get_string(j, "replacement", &s, &n, name, where) != 1 || n == 0 || n > 4)
        return llmq_error("%s: %s.replacement: expected a one-char string", name, where);
    memcpy(repl, s, n);
    repl[n] = 0;
    *repl_len = n;
    *scheme = PREPEND_ALWAYS;
    const char *ps = NULL;
    size_t pn = 0;
    int r = get_string(j, "prepend_scheme", &ps, &pn, name, where);
    if (r < 0) return LLMQ_ERR;
    if (r == 1) {
        if (!strcmp(ps, "always")) *scheme = PREPEND_ALWAYS;
        else if (!strcmp(ps, "first")) *scheme = PREPEND_FIRST;
        else if (!strcmp(ps, "never")) *scheme = PREPEND_NEVER;
        else return llmq_error("%s: %s.prepend_scheme: unknown value '%s'", name, where, ps);
    } else {
        int aps = 1;
        if (get_bool(j, "add_prefix_space", &aps, name, where) < 0) return LLMQ_ERR;
        *scheme = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
    }
    return LLMQ_OK;
}

static int add_pretok(llmq_tokenizer *tok, json_t *j, const char *name, int depth)
{
    if (!j || json_is_null(j)) return LLMQ_OK;
    if (!json_is_object(j) || !type_of(j)) return llmq_error("%s: pre_tokenizer: expected an object with a 'type'", name);
    const char *type = type_of(j);
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(j, "pretokenizers");
        if (!json_is_array(list)) return llmq_error("%s: pre_tokenizer.pretokenizers: expected an array", name);
        if (depth > 8) return llmq_error("%s: pre_tokenizer: nested too deeply", name);
        for (size_t i = 0; i < json_array_size(list); i++)
            if (add_pretok(tok, json_array_get(list, i), name, depth + 1)) return LLMQ_ERR;
        return LLMQ_OK;
    }
    tk_pretok pt;
    memset(&pt, 0, sizeof pt);
    if (!strcmp(type, "Split")) {
        pt.kind = PRE_SPLIT;
        const char *s, *b = NULL;
        size_t n, bn;
        int is_regex;
        if (get_pattern(j, &s, &n, &is_regex, name, "pre_tokenizer.Split")) return LLMQ_ERR;
        if (get_string(j, "behavior", &b, &bn, name, "pre_tokenizer.Split") != 1 || parse_behavior(b) < 0)
            return llmq_error("%s: pre_tokenizer.Split.behavior: expected Removed, Isolated, MergedWithPrevious, "
                              "MergedWithNext or Contiguous", name);
        pt.behavior = parse_behavior(b);
        if (get_bool(j, "invert", &pt.invert, name, "pre_tokenizer.Split") < 0) return LLMQ_ERR;
        if (tk_regex_compile(&pt.re, s, n, !is_regex, name)) return LLMQ_ERR;
    } else if (!strcmp(type, "ByteLevel")) {
        pt.kind = PRE_BYTELEVEL;
        pt.use_regex = 1;
        if (get_bool(j, "add_prefix_space", &pt.add_prefix_space, name, "pre_tokenizer.ByteLevel") < 0 ||
            get_bool(j, "use_regex", &pt.use_regex, name, "pre_tokenizer.ByteLevel") < 0)
            return LLMQ_ERR;
        tok->byte_level = 1;
    } else if (!strcmp(type, "Metaspace")) {
        pt.kind = PRE_METASPACE;
        pt.split = 1;
        if (parse_metaspace(j, pt.repl, &pt.repl_len, &pt.prepend_scheme, name, "pre_tokenizer.Metaspace") ||
            get_bool(j, "split", &pt.split, name, "pre_tokenizer.Metaspace") < 0)
            return LLMQ_ERR;
    } else if (!strcmp(type, "Digits")) {
        pt.kind = PRE_DIGITS;
        if (get_bool(j, "individual_digits", &pt.individual_digits, name, "pre_tokenizer.Digits") < 0) return LLMQ_ERR;
    } else {
        return llmq_error("%s: unsupported pre_tokenizer type %s", name, type);
    }
    tk_pretok *v = realloc(tok->pretoks, (size_t)(tok->n_pretoks + 1) * sizeof *v);
    if (!v) {
        tk_regex_free(&pt.re);
        return llmq_error("tokenizer: out of memory");
    }
    tok->pretoks = v;
    tok->pretoks[tok->n_pretoks++] = pt;
    return LLMQ_OK;
}

static int add_decoder(llmq_tokenizer *tok, json_t *j, const char *name, int depth)
{
    if (!j || json_is_null(j)) return LLMQ_OK;
    if (!json_is_object(j) || !type_of(j)) return llmq_error("%s: decoder: expected an object with a 'type'", name);
    tok->has_decoder = 1;
    const char *type = type_of(j);
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(j, "decoders");
        if (!json_is_array(list)) return llmq_error("%s: decoder.decoders: expected an array", name);
        if (depth > 8) return llmq_error("%s: decoder: nested too deeply", name);
        for (size_t i = 0; i < json_array_size(list); i++)
            if (add_decoder(tok, json_array_get(list, i), name, depth + 1)) return LLMQ_ERR;
        return LLMQ_OK;
    }
    tk_decoder d;
    memset(&d, 0, sizeof d);
    if (!strcmp(type, "Replace")) {
        d.kind = DEC_REPLACE;
        const char *s, *c = NULL;
        size_t n, cn = 0;
        int is_regex;
        if (get_pattern(j, &s, &n, &is_regex, name, "decoder.Replace")) return LLMQ_ERR;
        if (is_regex) return llmq_error("%s: unsupported decoder.Replace with a Regex pattern", name);
        if (get_string(j, "content", &c, &cn, name, "decoder.Replace") != 1)
            return llmq_error("%s: decoder.Replace.content: expected a string", name);
        d.pattern = tk_arena_strdup(&tok->arena, s, n);
        d.pattern_len = n;
        d.content = tk_arena_strdup(&tok->arena, c, cn);
        d.content_len = cn;
    } else if (!strcmp(type, "ByteFallback")) {
        d.kind = DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d.kind = DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        d.kind = DEC_STRIP;
        const char *c = NULL;
        size_t cn = 0;
        long long start = 0, stop = 0;
        if (get_string(j, "content", &c, &cn, name, "decoder.Strip") != 1 || cn == 0 || cn > 4)
            return llmq_error("%s: decoder.Strip.content: expected a one-char string", name);
        if (get_int(j, "start", &start, name, "decoder.Strip") < 0 || get_int(j, "stop", &stop, name, "decoder.Strip") < 0)
            return LLMQ_ERR;
        if (start < 0 || stop < 0 || start > 1000 || stop > 1000)
            return llmq_error("%s: decoder.Strip: start/stop out of range", name);
        tk_utf8_decode((const unsigned char *)c, cn, &d.strip_char);
        d.start = (int)start;
        d.stop = (int)stop;
    } else if (!strcmp(type, "Metaspace")) {
        d.kind = DEC_METASPACE;
        int scheme;
        if (parse_metaspace(j, d.repl, &d.repl_len, &scheme, name, "decoder.Metaspace")) return LLMQ_ERR;
        d.prepend = scheme != PREPEND_NEVER;
    } else if (!strcmp(type, "ByteLevel")) {
        d.kind = DEC_BYTELEVEL;
    } else {
        return llmq_error("%s: unsupported decoder type %s", name, type);
    }
    tk_decoder *v = realloc(tok->decs, (size_t)(tok->n_decs + 1) * sizeof *v);
    if (!v) return llmq_error("tokenizer: out of memory");
    tok->decs = v;
    tok->decs[tok->n_decs++] = d;
    return LLMQ_OK;
}

/* Resolves a special token's text to an id (added tokens, then vocab). */
static int32_t special_id(llmq_tokenizer *tok, const char *s, size_t n)
{
    for (int i = 0; i < tok->n_added; i++)
        if (tok->added[i].len == n && memcmp(tok->added[i].content, s, n) == 0) return tok->added[i].id;
    const tk_strmap_slot *sl = tk_strmap_get(&tok->vocab, s, n);
    if (sl && !tok->byte_level) return sl->value;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (tok->tok_text[id] && tok->tok_len[id] == n && memcmp(tok->tok_text[id], s, n) == 0) return id;
    return -1;
}

static int add_template_ids(int32_t *dst, int *nd, json_t *ids, const char *name)
{
    if (!json_is_array(ids)) return llmq_error("%s: post_processor.special_tokens: 'ids' must be an array", name);
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *v = json_array_get(ids, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return llmq_error("%s: post_processor.special_tokens: ids must be non-negative integers", name);
        if (*nd >= 4) return llmq_error("%s: post_processor: too many special tokens in the template", name);
        dst[(*nd)++] = (int32_t)json_integer_value(v);
    }
    return LLMQ_OK;
}

static int add_post_processor(llmq_tokenizer *tok, json_t *j, const char *name, int depth)
{
    if (!j || json_is_null(j)) return LLMQ_OK;
    if (!json_is_object(j) || !type_of(j)) return llmq_error("%s: post_processor: expected an object with a 'type'", name);
    const char *type = type_of(j);
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(j, "processors");
        if (!json_is_array(list)) return llmq_error("%s: post_processor.processors: expected an array", name);
        if (depth > 8) return llmq_error("%s: post_processor: nested too deeply", name);
        for (size_t i = 0; i < json_array_size(list); i++)
            if (add_post_processor(tok, json_array_get(list, i), name, depth + 1)) return LLMQ_ERR;
        return LLMQ_OK;
    }
    if (!strcmp(type, "ByteLevel")) return LLMQ_OK; /* only trims offsets */
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens");
        if (!json_is_array(single)) return llmq_error("%s: post_processor.single: expected an array", name);
        int seen_sequence = 0;
        tok->n_prefix = tok->n_suffix = 0;
        for (size_t i = 0; i < json_array_size(single); i++) {
            json_t *e = json_array_get(single, i);
            json_t *sp = json_object_get(e, "SpecialToken");
            if (json_object_get(e, "Sequence")) {
                seen_sequence = 1;
                continue;
            }
            json_t *sid = json_object_get(sp, "id");
            if (!json_is_string(sid)) return llmq_error("%s: post_processor.single[%zu]: expected SpecialToken or Sequence", name, i);
            json_t *def = json_object_get(specials, json_string_value(sid));
            if (!json_is_object(def))
                return llmq_error("%s: post_processor.special_tokens: '%s' is not defined", name, json_string_value(sid));
            if (add_template_ids(seen_sequence ? tok->suffix : tok->prefix, seen_sequence ? &tok->n_suffix : &tok->n_prefix,
                                 json_object_get(def, "ids"), name))
                return LLMQ_ERR;
        }
        return LLMQ_OK;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        json_t *cls = json_object_get(j, "cls"), *sep = json_object_get(j, "sep");
        if (!json_is_array(cls) || !json_is_array(sep) || !json_is_integer(json_array_get(cls, 1)) ||
            !json_is_integer(json_array_get(sep, 1)))
            return llmq_error("%s: post_processor.%s: cls/sep must be [token, id]", name, type);
        tok->n_prefix = tok->n_suffix = 1;
        tok->prefix[0] = (int32_t)json_integer_value(json_array_get(cls, 1));
        tok->suffix[0] = (int32_t)json_integer_value(json_array_get(sep, 1));
        return LLMQ_OK;
    }
    return llmq_error("%s: unsupported post_processor type %s", name, type);
}

/* The known byte-level pipelines, for GGUF export's tokenizer.ggml.pre. */
static int detect_pre_name(const llmq_tokenizer *tok)
{
    const tk_pretok *p = tok->pretoks;
    int nfc = tok->n_norms == 1 && tok->norms[0].kind == NORM_NFC;
    if (tok->n_pretoks == 2 && p[0].kind == PRE_SPLIT && p[0].behavior == SPLIT_ISOLATED && !p[0].invert &&
        p[1].kind == PRE_BYTELEVEL && !p[1].use_regex && !p[1].add_prefix_space) {
        if (!strcmp(p[0].re.source, TK_REGEX_LLAMA3) && tok->n_norms == 0) return PRE_NAME_LLAMA3;
        if (!strcmp(p[0].re.source, TK_REGEX_QWEN2) && nfc) return PRE_NAME_QWEN2;
    }
    if (tok->n_norms == 0 && tok->n_pretoks == 2 && p[0].kind == PRE_DIGITS && p[0].individual_digits &&
        p[1].kind == PRE_BYTELEVEL && p[1].use_regex && !p[1].add_prefix_space)
        return PRE_NAME_SMOLLM;
    if (tok->n_norms == 0 && tok->n_pretoks == 1 && p[0].kind == PRE_BYTELEVEL && p[0].use_regex &&
        !p[0].add_prefix_space)
        return PRE_NAME_GPT2;
    return PRE_NAME_NONE;
}

/* ---------------- vocab ---------------- */

int tk_set_token(llmq_tokenizer *tok, int32_t id, const char *text, size_t len)
{
    char *t = tk_arena_strdup(&tok->arena, text, len);
    if (!t) return LLMQ_ERR;
    tok->tok_text[id] = t;
    tok->tok_len[id] = (uint32_t)len;
    return LLMQ_OK;
}

/* Looks up a merge part by its tokenizer.json text. */
static int32_t merge_part_id(llmq_tokenizer *tok, const char *s, size_t n, tk_buf *scratch)
{
    if (tok->byte_level) {
        if (tk_bytelevel_decode(s, n, scratch) != 1) return -1;
        s = scratch->data;
        n = scratch->len;
    }
    const tk_strmap_slot *sl = tk_strmap_get(&tok->vocab, s, n);
    return sl ? sl->value : -1;
}

static int load_merges(llmq_tokenizer *tok, json_t *merges, const char *name)
{
    size_t n = json_array_size(merges);
    int32_t *pairs = malloc((n ? n : 1) * 2 * sizeof *pairs);
    tk_buf scratch = {0};
    if (!pairs) return llmq_error("tokenizer: out of memory");
    for (size_t r = 0; r < n; r++) {
        json_t *m = json_array_get(merges, r);
        const char *a, *b;
        size_t an, bn;
        if (json_is_string(m)) { /* "a b" */
            const char *s = json_string_value(m);
            size_t len = json_string_length(m);
            const char *sp = memchr(s, ' ', len);
            if (!sp) {
                free(pairs);
                tk_buf_free(&scratch);
                return llmq_error("%s: model.merges[%zu]: expected \"a b\"", name, r);
            }
            a = s;
            an = (size_t)(sp - s);
            b = sp + 1;
            bn = len - an - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) { /* ["a", "b"] */
            a = json_string_value(json_array_get(m, 0));
            an = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            bn = json_string_length(json_array_get(m, 1));
        } else {
            free(pairs);
            tk_buf_free(&scratch);
            return llmq_error("%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", name, r);
        }
        int32_t ia = merge_part_id(tok, a, an, &scratch), ib = merge_part_id(tok, b, bn, &scratch);
        if (ia < 0 || ib < 0) {
            const char *bad = ia < 0 ? a : b;
            int bl = (int)(ia < 0 ? an : bn);
            llmq_error("%s: model.merges[%zu]: token '%.*s' is not in the vocab", name, r, bl > 60 ? 60 : bl, bad);
            free(pairs);
            tk_buf_free(&scratch);
            return LLMQ_ERR;
        }
        pairs[2 * r] = ia;
        pairs[2 * r + 1] = ib;
    }
    tk_buf_free(&scratch);
    int rc = tk_bpe_set_merges(tok, pairs, n, name);
    free(pairs);
    return rc;
}

static int token_config_text(json_t *cfg, const char *key, const char **s, size_t *n)
{
    json_t *j = json_object_get(cfg, key);
    if (json_is_object(j)) j = json_object_get(j, "content");
    if (!json_is_string(j)) return 0;
    *s = json_string_value(j);
    *n = json_string_length(j);
    return 1;
}

static llmq_tokenizer *fail(llmq_tokenizer *tok)
{
    llmq_tokenizer_free(tok);
    return NULL;
}

llmq_tokenizer *tk_load_objects(json_t *root, json_t *cfg, const char *name)
{
    if (!json_is_object(root)) {
        llmq_error("%s: expected a JSON object at the top level", name);
        return NULL;
    }
    json_t *model = json_object_get(root, "model");
    if (!model || json_is_null(model)) {
        llmq_error("%s: missing 'model'", name);
        return NULL;
    }
    if (!json_is_object(model)) {
        llmq_error("%s: model: expected an object", name);
        return NULL;
    }
    json_t *jtype = json_object_get(model, "type");
    if (jtype && !json_is_string(jtype)) {
        llmq_error("%s: model.type: expected a string", name);
        return NULL;
    }
    const char *mtype = jtype ? json_string_value(jtype) : NULL;
    if (!mtype && !json_object_get(model, "merges")) { /* HF's untagged fallback: vocab-only models */
        llmq_error("%s: unsupported tokenizer type %s", name,
                   json_object_get(model, "max_input_chars_per_word") ? "WordPiece" : "(no model.type, no merges)");
        return NULL;
    }
    if (mtype && strcmp(mtype, "BPE")) {
        llmq_error("%s: unsupported tokenizer type %s", name, mtype);
        return NULL;
    }
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab)) {
        llmq_error("%s: model.vocab: expected an object of token -> id", name);
        return NULL;
    }
    if (!json_is_array(merges)) {
        llmq_error("%s: model.merges: expected an array", name);
        return NULL;
    }
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added)) {
        llmq_error("%s: added_tokens: expected an array", name);
        return NULL;
    }

    llmq_tokenizer *tok = tk_new();
    if (!tok) return NULL;
    if (add_normalizer(tok, json_object_get(root, "normalizer"), name, 0) ||
        add_pretok(tok, json_object_get(root, "pre_tokenizer"), name, 0) ||
        add_decoder(tok, json_object_get(root, "decoder"), name, 0))
        return fail(tok);
    int r, v = 0;
    if ((r = get_bool(model, "byte_fallback", &v, name, "model")) < 0) return fail(tok);
    tok->byte_fallback = r == 1 && v;
    if ((r = get_bool(model, "fuse_unk", &v, name, "model")) < 0) return fail(tok);
    tok->fuse_unk = r == 1 && v;
    if ((r = get_bool(model, "ignore_merges", &v, name, "model")) < 0) return fail(tok);
    tok->ignore_merges = r == 1 && v;
    const char *affix;
    size_t affix_len;
    if (get_string(model, "continuing_subword_prefix", &affix, &affix_len, name, "model") == 1 && affix_len) {
        llmq_error("%s: unsupported model.continuing_subword_prefix '%s'", name, affix);
        return fail(tok);
    }
    if (get_string(model, "end_of_word_suffix", &affix, &affix_len, name, "model") == 1 && affix_len) {
        llmq_error("%s: unsupported model.end_of_word_suffix '%s'", name, affix);
        return fail(tok);
    }
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0)) {
        llmq_error("%s: unsupported model.dropout (BPE dropout is random)", name);
        return fail(tok);
    }

    /* sizes */
    long long max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= MAX_VOCAB) {
            llmq_error("%s: model.vocab['%.60s']: expected an id in 0..%d", name, key, MAX_VOCAB - 1);
            return fail(tok);
        }
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        if (!json_is_object(a) || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= MAX_VOCAB || !json_is_string(content)) {
            llmq_error("%s: added_tokens[%zu]: expected {\"id\": integer, \"content\": string, ...}", name, i);
            return fail(tok);
        }
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    /* ids are dense in every real tokenizer: an id far past the entry count
     * would size every table by it (a few lines of JSON asking for GiBs) */
    const long long n_entries = (long long)json_object_size(vocab) + (long long)json_array_size(added);
    if (max_id >= 2 * n_entries + 1024) {
        llmq_error("%s: model.vocab/added_tokens: id %lld for %lld entries; ids must be about dense (below 2 × entries + 1024)", name,
                   max_id, n_entries);
        return fail(tok);
    }
    tok->n_vocab = (int32_t)(max_id + 1);
    size_t nv = (size_t)tok->n_vocab + 1;
    tok->tok_text = calloc(nv, sizeof *tok->tok_text);
    tok->tok_len = calloc(nv, sizeof *tok->tok_len);
    tok->tok_added = calloc(nv, sizeof *tok->tok_added);
    tok->model_key = calloc(nv, sizeof *tok->model_key);
    tok->model_key_len = calloc(nv, sizeof *tok->model_key_len);
    if (!tok->tok_text || !tok->tok_len || !tok->tok_added || !tok->model_key || !tok->model_key_len ||
        tk_strmap_init(&tok->vocab, json_object_size(vocab))) {
        llmq_error("tokenizer: out of memory");
        return fail(tok);
    }

    /* model vocab; byte-level keys are stored as the raw bytes they stand for */
    tk_buf raw = {0};
    size_t klen;
    json_object_keylen_foreach(vocab, key, klen, val) {
        int32_t id = (int32_t)json_integer_value(val);
        if (tk_set_token(tok, id, key, klen)) {
            tk_buf_free(&raw);
            return fail(tok);
        }
        const char *mk = tok->tok_text[id];
        size_t mkl = klen;
        if (tok->byte_level) {
            if (tk_bytelevel_decode(key, klen, &raw) != 1) continue; /* can never be produced */
            mk = tk_arena_strdup(&tok->arena, raw.data, raw.len);
            mkl = raw.len;
            if (!mk) {
                tk_buf_free(&raw);
                return fail(tok);
            }
        }
        tok->model_key[id] = mk;
        tok->model_key_len[id] = (uint32_t)mkl;
        if (tk_strmap_put(&tok->vocab, mk, mkl, id, 0)) {
            tk_buf_free(&raw);
            return fail(tok);
        }
    }
    tk_buf_free(&raw);

    const char *unk = NULL;
    size_t unk_len = 0;
    if (get_string(model, "unk_token", &unk, &unk_len, name, "model") < 0) return fail(tok);
    if (unk) {
        const tk_strmap_slot *sl = tk_strmap_get(&tok->vocab, unk, unk_len);
        if (!sl) {
            llmq_error("%s: model.unk_token '%.60s' is not in the vocab", name, unk);
            return fail(tok);
        }
        tok->model_unk_id = tok->unk_id = sl->value;
    }
    if (load_merges(tok, merges, name)) return fail(tok);

    /* added tokens */
    size_t na = json_array_size(added);
    tok->added = calloc(na ? na : 1, sizeof *tok->added);
    if (!tok->added) {
        llmq_error("tokenizer: out of memory");
        return fail(tok);
    }
    for (size_t i = 0; i < na; i++) {
        json_t *a = json_array_get(added, i);
        tk_added *t = &tok->added[tok->n_added];
        json_t *content = json_object_get(a, "content");
        t->id = (int32_t)json_integer_value(json_object_get(a, "id"));
        t->len = json_string_length(content);
        t->content = tk_arena_strdup(&tok->arena, json_string_value(content), t->len);
        int special = 0, normalized, lstrip = 0, rstrip = 0, single_word = 0;
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (get_bool(a, "special", &special, name, where) < 0) return fail(tok);
        normalized = !special; /* HF's AddedToken default */
        if (get_bool(a, "normalized", &normalized, name, where) < 0 || get_bool(a, "lstrip", &lstrip, name, where) < 0 ||
            get_bool(a, "rstrip", &rstrip, name, where) < 0 || get_bool(a, "single_word", &single_word, name, where) < 0)
            return fail(tok);
        t->special = (uint8_t)special;
        t->normalized = (uint8_t)normalized;
        t->lstrip = (uint8_t)lstrip;
        t->rstrip = (uint8_t)rstrip;
        t->single_word = (uint8_t)single_word;
        if (!t->content || tk_set_token(tok, t->id, t->content, t->len)) return fail(tok);
        tok->tok_added[t->id] = special ? 2 : 1;
        tok->n_added++;
    }

    if (add_post_processor(tok, json_object_get(root, "post_processor"), name, 0)) return fail(tok);
    for (int i = 0; i < tok->n_prefix; i++)
        if (tok->prefix[i] >= tok->n_vocab) {
            llmq_error("%s: post_processor: special token id %d is outside the vocabulary", name, (int)tok->prefix[i]);
            return fail(tok);
        }
    for (int i = 0; i < tok->n_suffix; i++)
        if (tok->suffix[i] >= tok->n_vocab) {
            llmq_error("%s: post_processor: special token id %d is outside the vocabulary", name, (int)tok->suffix[i]);
            return fail(tok);
        }
    tok->pre_name = tok->byte_level ? detect_pre_name(tok) : PRE_NAME_NONE;

    /* tokenizer_config.json: special tokens, add_bos/eos_token, chat template */
    const char *s;
    size_t n;
    if (cfg && token_config_text(cfg, "bos_token", &s, &n)) tok->bos_id = special_id(tok, s, n);
    if (cfg && token_config_text(cfg, "eos_token", &s, &n)) tok->eos_id = special_id(tok, s, n);
    if (cfg && token_config_text(cfg, "pad_token", &s, &n)) tok->pad_id = special_id(tok, s, n);
    if (cfg && tok->unk_id < 0 && token_config_text(cfg, "unk_token", &s, &n)) tok->unk_id = special_id(tok, s, n);
    if (tok->bos_id < 0 && tok->n_prefix > 0) tok->bos_id = tok->prefix[0];
    if (tok->eos_id < 0 && tok->n_suffix > 0) tok->eos_id = tok->suffix[tok->n_suffix - 1];
    if (tok->eos_id < 0) { /* no config: the usual names */
        static const char *const names[] = {"</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"};
        for (size_t i = 0; i < 4 && tok->eos_id < 0; i++) tok->eos_id = special_id(tok, names[i], strlen(names[i]));
    }
    if (cfg) {
        /* transformers' LlamaTokenizerFast / GemmaTokenizerFast rebuild the template from
         * these flags (update_post_processor); the files here agree with it */
        int flag;
        if (get_bool(cfg, "add_bos_token", &flag, name, "tokenizer_config") == 1) {
            int has = tok->n_prefix > 0 && tok->prefix[0] == tok->bos_id;
            if (flag && !has && tok->bos_id >= 0 && tok->n_prefix < 4) {
                memmove(tok->prefix + 1, tok->prefix, (size_t)tok->n_prefix * sizeof(int32_t));
                tok->prefix[0] = tok->bos_id;
                tok->n_prefix++;
            } else if (!flag && has) {
                memmove(tok->prefix, tok->prefix + 1, (size_t)(tok->n_prefix - 1) * sizeof(int32_t));
                tok->n_prefix--;
            }
        }
        if (get_bool(cfg, "add_eos_token", &flag, name, "tokenizer_config") == 1) {
            int has = tok->n_suffix > 0 && tok->suffix[tok->n_suffix - 1] == tok->eos_id;
            if (flag && !has && tok->eos_id >= 0 && tok->n_suffix < 4) tok->suffix[tok->n_suffix++] = tok->eos_id;
            else if (!flag && has) tok->n_suffix--;
        }
        json_t *tmpl = json_object_get(cfg, "chat_template");
        if (json_is_array(tmpl)) { /* [{"name": ..., "template": ...}]: the "default" one, else the first */
            json_t *pick = NULL;
            for (size_t i = 0; i < json_array_size(tmpl); i++) {
                json_t *e = json_array_get(tmpl, i);
                json_t *nm = json_object_get(e, "name");
                if (!pick || (json_is_string(nm) && !strcmp(json_string_value(nm), "default"))) pick = e;
            }
            tmpl = json_object_get(pick, "template");
        }
        if (json_is_string(tmpl)) {
            tok->chat_template = strdup(json_string_value(tmpl));
            if (!tok->chat_template) {
                llmq_error("tokenizer: out of memory");
                return fail(tok);
            }
        }
    }
    if (tk_finish(tok, name)) return fail(tok);
    return tok;
}

llmq_tokenizer *llmq_tokenizer_load_json(const char *json, size_t json_len, const char *config_json, size_t config_len,
                                         const char *name)
{
    json_error_t err;
    json_t *root = json_loadb(json, json_len, JSON_ALLOW_NUL, &err);
    if (!root) {
        llmq_error("%s: invalid JSON at line %d: %s", name, err.line, err.text);
        return NULL;
    }
    json_t *cfg = NULL;
    if (config_json) {
        /* model_max_length is often 1e30, too big for an integer */
        cfg = json_loadb(config_json, config_len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);
        if (!cfg || !json_is_object(cfg)) {
            llmq_error("%s: tokenizer_config.json: invalid JSON at line %d: %s", name, err.line,
                       cfg ? "expected an object" : err.text);
            json_decref(root);
            json_decref(cfg);
            return NULL;
        }
    }
    llmq_tokenizer *tok = tk_load_objects(root, cfg, name);
    json_decref(root);
    json_decref(cfg);
    return tok;
}

llmq_tokenizer *llmq_tokenizer_load(const char *path)
{
    char *json_path = NULL, *cfg_path = NULL;
    if (llmq_is_dir(path)) {
        json_path = llmq_path_join(path, "tokenizer.json");
        cfg_path = llmq_path_join(path, "tokenizer_config.json");
    } else {
        json_path = strdup(path);
        const char *slash = strrchr(path, '/');
        if (slash) {
            char *dir = strndup(path, (size_t)(slash - path));
            cfg_path = dir ? llmq_path_join(dir, "tokenizer_config.json") : NULL;
            free(dir);
        } else {
            cfg_path = strdup("tokenizer_config.json");
        }
    }
    llmq_tokenizer *tok = NULL;
    char *json = NULL, *cfg = NULL;
    size_t json_len = 0, cfg_len = 0;
    if (!json_path || !cfg_path) {
        llmq_error("tokenizer: out of memory");
        goto done;
    }
    if (!llmq_file_exists(json_path)) {
        llmq_error("%s: no tokenizer.json there", json_path);
        goto done;
    }
    json = llmq_read_file(json_path, (size_t)1 << 31, &json_len);
    if (!json) goto done;
    if (llmq_file_exists(cfg_path)) {
        cfg = llmq_read_file(cfg_path, (size_t)1 << 28, &cfg_len);
        if (!cfg) goto done;
    }
    tok = llmq_tokenizer_load_json(json, json_len, cfg, cfg_len, json_path);
done:
    free(json);
    free(cfg);
    free(json_path);
    free(cfg_path);
    return tok;
}
