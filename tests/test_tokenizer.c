/* Tokenizer: conformance with Hugging Face tokenizers on the shared vectors,
 * the stories models' reference ids, malformed files, and the GGUF vocab round trip. */
#include <jansson.h>
#include <stdint.h>
#include <sys/wait.h>

#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/tokenizer.h"
#include "test_util.h"

/* Prints a string with control characters escaped, cut at 120 bytes. */
static int ids_equal(const int32_t *a, size_t na, json_t *expected)
{
    if (!json_is_array(expected) || json_array_size(expected) != na) return 0;
    for (size_t i = 0; i < na; i++)
        if (json_integer_value(json_array_get(expected, i)) != a[i]) return 0;
    return 1;
}

static void report_ids(const char *what, const char *text, size_t len, const int32_t *got, size_t n, json_t *expected)
{
    char esc[512], g[256] = "", e[256] = "";
    test_escape(text, len, esc, sizeof esc);
    size_t o = 0;
    for (size_t i = 0; i < n && o < 200; i++) o += (size_t)snprintf(g + o, sizeof g - o, "%d ", (int)got[i]);
    o = 0;
    for (size_t i = 0; i < json_array_size(expected) && o < 200; i++)
        o += (size_t)snprintf(e + o, sizeof e - o, "%d ", (int)json_integer_value(json_array_get(expected, i)));
    cr_log_error("%s mismatch for \"%s\"\n  got:      %s\n  expected: %s", what, esc, g, e);
}

/* Checks every entry of <shared>/tokenizers/<dir>/vectors.json. */
static void check_vectors(const char *dir)
{
    char path[512], vec[600];
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizers/%s", dir);
    REQUIRE_SHARED(path, rel);
    snprintf(vec, sizeof vec, "%s/vectors.json", path);
    llmq_tokenizer *tok = llmq_tokenizer_load(path);
    cr_assert(tok, "load %s: %s", path, llmq_last_error());
    json_error_t jerr;
    json_t *vectors = json_load_file(vec, JSON_ALLOW_NUL, &jerr);
    cr_assert(json_is_array(vectors), "%s: %s", vec, jerr.text);
    size_t failures = 0, checked = 0;
    for (size_t i = 0; i < json_array_size(vectors); i++) {
        json_t *v = json_array_get(vectors, i);
        json_t *jt = json_object_get(v, "text");
        const char *text = json_string_value(jt);
        size_t len = json_string_length(jt);
        int32_t *ids = NULL, *ids_sp = NULL;
        size_t n = 0, n_sp = 0;
        cr_assert_eq(llmq_tokenizer_encode(tok, text, len, 0, &ids, &n), LLMQ_OK, "%s", llmq_last_error());
        cr_assert_eq(llmq_tokenizer_encode(tok, text, len, 1, &ids_sp, &n_sp), LLMQ_OK, "%s", llmq_last_error());
        int bad = 0;
        if (!ids_equal(ids, n, json_object_get(v, "ids"))) {
            report_ids("ids", text, len, ids, n, json_object_get(v, "ids"));
            bad = 1;
        }
        if (!ids_equal(ids_sp, n_sp, json_object_get(v, "ids_with_special"))) {
            report_ids("ids_with_special", text, len, ids_sp, n_sp, json_object_get(v, "ids_with_special"));
            bad = 1;
        }
        json_t *dec = json_object_get(v, "decoded");
        if (dec) {
            json_t *exp_ids = json_object_get(v, "ids");
            size_t ne = json_array_size(exp_ids);
            int32_t *eids = malloc((ne + 1) * sizeof *eids);
            for (size_t k = 0; k < ne; k++) eids[k] = (int32_t)json_integer_value(json_array_get(exp_ids, k));
            size_t dl = 0;
            char *d = llmq_tokenizer_decode(tok, eids, ne, &dl);
            cr_assert(d, "%s", llmq_last_error());
            if (dl != json_string_length(dec) || memcmp(d, json_string_value(dec), dl) != 0) {
                char esc[512], got[512], want[512];
                test_escape(text, len, esc, sizeof esc);
                test_escape(d, dl, got, sizeof got);
                test_escape(json_string_value(dec), json_string_length(dec), want, sizeof want);
                cr_log_error("decoded mismatch for \"%s\"\n  got:      \"%s\"\n  expected: \"%s\"", esc, got, want);
                bad = 1;
            }
            free(d);
            free(eids);
        }
        failures += (size_t)bad;
        checked++;
        free(ids);
        free(ids_sp);
    }
    json_decref(vectors);
    llmq_tokenizer_free(tok);
    cr_expect_gt(checked, 100, "%s: only %zu vectors", dir, checked);
    cr_assert_eq(failures, 0, "%s: %zu of %zu vectors differ from Hugging Face", dir, failures, checked);
}

Test(tokenizer_vectors, tinyllama) { check_vectors("tinyllama"); }
Test(tokenizer_vectors, llama2_spm) { check_vectors("llama2-spm"); }
Test(tokenizer_vectors, stories260K_tok512) { check_vectors("stories260K-tok512"); }
Test(tokenizer_vectors, mistral_v01) { check_vectors("mistral-7b-v0.1"); }
Test(tokenizer_vectors, mistral_legacy) { check_vectors("mistral-7b-legacy"); }
Test(tokenizer_vectors, llama3) { check_vectors("llama3"); }
Test(tokenizer_vectors, llama3_1) { check_vectors("llama3.1"); }
Test(tokenizer_vectors, qwen3) { check_vectors("qwen3"); }
Test(tokenizer_vectors, gpt2) { check_vectors("gpt2"); }
Test(tokenizer_vectors, smollm2) { check_vectors("smollm2"); }
Test(tokenizer_vectors, gemma3, .timeout = 120) { check_vectors("gemma3"); }

/* ---- the stories models: reference ids and the whole eval text ---- */

static int32_t *json_ids(json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    int32_t *v = malloc((*n + 1) * sizeof *v);
    for (size_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return v;
}

static void expect_encoding(llmq_tokenizer *tok, const char *text, size_t len, json_t *expected, const char *what)
{
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(llmq_tokenizer_encode(tok, text, len, 1, &ids, &n), LLMQ_OK, "%s", llmq_last_error());
    if (!ids_equal(ids, n, expected)) report_ids(what, text, len, ids, n, expected);
    cr_expect(ids_equal(ids, n, expected), "%s: ids differ", what);
    free(ids);
}

Test(tokenizer_models, stories260K_reference)
{
    char dir[512], ref[600];
    REQUIRE_SHARED(dir, "models/stories260K");
    snprintf(ref, sizeof ref, "%s/reference.json", dir);
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    cr_assert(tok, "%s", llmq_last_error());
    cr_expect_eq(llmq_tokenizer_vocab_size(tok), 512);
    cr_expect_eq(llmq_tokenizer_bos_id(tok), 1);
    cr_expect_eq(llmq_tokenizer_eos_id(tok), 2);
    cr_expect(llmq_tokenizer_adds_bos(tok));
    json_error_t e;
    json_t *r = json_load_file(ref, 0, &e);
    cr_assert(r, "%s", e.text);
    json_t *seq = json_object_get(r, "sequence"), *once = json_object_get(r, "prompt_once_upon_a_time");
    json_t *dec = json_object_get(seq, "decoded");
    expect_encoding(tok, json_string_value(dec), json_string_length(dec), json_object_get(seq, "ids"), "sequence");
    json_t *prompt = json_object_get(once, "prompt");
    expect_encoding(tok, json_string_value(prompt), json_string_length(prompt), json_object_get(once, "prompt_ids"),
                    "prompt");
    /* decoding the greedy ids gives the reference text */
    size_t n, len;
    int32_t *ids = json_ids(json_object_get(once, "greedy_ids"), &n);
    char *text = llmq_tokenizer_decode(tok, ids, n, &len);
    cr_assert(text);
    cr_expect_str_eq(text, json_string_value(json_object_get(once, "greedy_text")) + strlen("Once upon a time"));
    free(text);
    free(ids);
    json_decref(r);
    llmq_tokenizer_free(tok);
}

Test(tokenizer_models, stories_llama_7m_reference)
{
    char dir[512], ref[600];
    REQUIRE_SHARED(dir, "models/stories-llama-7m");
    snprintf(ref, sizeof ref, "%s/reference.json", dir);
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    cr_assert(tok, "%s", llmq_last_error());
    json_error_t e;
    json_t *r = json_load_file(ref, 0, &e);
    cr_assert(r, "%s", e.text);
    json_t *greedy = json_object_get(r, "greedy");
    json_t *prompt = json_object_get(greedy, "prompt");
    expect_encoding(tok, json_string_value(prompt), json_string_length(prompt), json_object_get(greedy, "prompt_ids"),
                    "prompt");
    json_decref(r);
    llmq_tokenizer_free(tok);
}

/* The perplexity tests depend on this: the whole eval file, BOS first. */
static void check_eval_tokens(const char *model)
{
    char dir[512], txt[512], exp[600];
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", model);
    REQUIRE_SHARED(dir, rel);
    REQUIRE_SHARED(txt, "data/tinystories/tinystories_eval.txt");
    snprintf(exp, sizeof exp, "%s/eval_tokens.json", dir);
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    cr_assert(tok, "%s", llmq_last_error());
    size_t len;
    char *text = llmq_read_file(txt, 0, &len);
    cr_assert(text, "%s", llmq_last_error());
    json_error_t e;
    json_t *expected = json_load_file(exp, 0, &e);
    cr_assert(json_is_array(expected), "%s", e.text);
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(llmq_tokenizer_encode(tok, text, len, 1, &ids, &n), LLMQ_OK, "%s", llmq_last_error());
    size_t ne = json_array_size(expected), first_diff = n < ne ? n : ne;
    for (size_t i = 0; i < n && i < ne; i++)
        if (ids[i] != json_integer_value(json_array_get(expected, i))) {
            first_diff = i;
            break;
        }
    cr_expect_eq(n, ne, "%s: %zu tokens, expected %zu", model, n, ne);
    cr_expect_eq(first_diff, ne < n ? ne : n, "%s: first difference at token %zu", model, first_diff);
    free(ids);
    free(text);
    json_decref(expected);
    llmq_tokenizer_free(tok);
}

Test(tokenizer_models, stories260K_eval_text) { check_eval_tokens("stories260K"); }
Test(tokenizer_models, stories_llama_7m_eval_text) { check_eval_tokens("stories-llama-7m"); }

/* ---- malformed files and input ---- */

/* A tiny valid SPM-style tokenizer, pieces of which the tests below break. */
#define TINY_VOCAB "{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0x41>\":3,\"\\u2581\":4,\"a\":5,\"b\":6,\"ab\":7,\"\\u2581ab\":8}"
#define TINY_ADDED                                                                                                  \
    "[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false,\"lstrip\":false,\"rstrip\":false,"    \
    "\"single_word\":false},{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false,\"lstrip\":false," \
    "\"rstrip\":false,\"single_word\":false}]"
#define TINY_NORM                                                                                                   \
    "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},{\"type\":\"Replace\"," \
    "\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]}"
#define TINY_POST                                                                                                   \
    "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":" \
    "{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}}"
#define TINY_DEC                                                                                                    \
    "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},\"content\":" \
    "\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,"     \
    "\"stop\":0}]}"

static char *tiny_json(const char *model)
{
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"version\":\"1.0\",\"added_tokens\":" TINY_ADDED ",\"normalizer\":" TINY_NORM
             ",\"pre_tokenizer\":null,\"post_processor\":" TINY_POST ",\"decoder\":" TINY_DEC ",\"model\":%s}",
             model);
    return buf;
}

static llmq_tokenizer *load_str(const char *json)
{
    return llmq_tokenizer_load_json(json, strlen(json), NULL, 0, "test.json");
}

#define TINY_MODEL(merges, extra)                                                                                   \
    "{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true" extra ",\"vocab\":"      \
    TINY_VOCAB ",\"merges\":" merges "}"

Test(tokenizer_errors, tiny_tokenizer_works)
{
    llmq_tokenizer *tok = load_str(tiny_json(TINY_MODEL("[\"a b\",[\"\\u2581\",\"ab\"]]", "")));
    cr_assert(tok, "%s", llmq_last_error());
    int32_t *ids;
    size_t n;
    /* "ab A z": ▁ab ▁ <0x41> ▁ <unk> (z has no token and no byte token: unk) */
    cr_assert_eq(llmq_tokenizer_encode(tok, "ab A z", 6, 1, &ids, &n), LLMQ_OK, "%s", llmq_last_error());
    int32_t want[] = {1, 8, 4, 3, 4, 0};
    cr_assert_eq(n, 6);
    cr_expect_arr_eq(ids, want, sizeof want);
    size_t len;
    char *text = llmq_tokenizer_decode(tok, ids + 1, 3, &len);
    cr_expect_str_eq(text, "ab A");
    free(text);
    free(ids);
    llmq_tokenizer_free(tok);
}

static void expect_load_error(const char *json, const char *needle)
{
    llmq_clear_error();
    llmq_tokenizer *tok = load_str(json);
    cr_expect_null(tok, "loaded a malformed tokenizer (expected '%s')", needle);
    llmq_tokenizer_free(tok);
    cr_expect(strstr(llmq_last_error(), needle), "error '%s' does not mention '%s'", llmq_last_error(), needle);
    cr_expect(strstr(llmq_last_error(), "test.json"), "error '%s' does not name the file", llmq_last_error());
}

Test(tokenizer_errors, malformed_files)
{
    expect_load_error("{\"added_tokens\":[]}", "missing 'model'");
    expect_load_error("{\"model\":[1,2]}", "model: expected an object");
    expect_load_error("{\"model\":{\"type\":\"BPE\",", "invalid JSON");
    expect_load_error("[]", "expected a JSON object");
    expect_load_error(tiny_json("{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}"), "unsupported tokenizer type Unigram");
    expect_load_error(tiny_json("{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}"), "unsupported tokenizer type WordPiece");
    expect_load_error(tiny_json("{\"type\":3}"), "model.type: expected a string");
    expect_load_error(tiny_json(TINY_MODEL("[\"a zz\"]", "")), "model.merges[0]: token 'zz' is not in the vocab");
    expect_load_error(tiny_json(TINY_MODEL("[\"b a\"]", "")), "merged token 'ba' is not in the vocab");
    expect_load_error(tiny_json(TINY_MODEL("[\"ab\"]", "")), "model.merges[0]: expected");
    expect_load_error(tiny_json(TINY_MODEL("[[\"a\"]]", "")), "model.merges[0]: expected");
    expect_load_error(tiny_json(TINY_MODEL("{\"a\":1}", "")), "model.merges: expected an array");
    expect_load_error(tiny_json(TINY_MODEL("[]", ",\"byte_fallback\":\"yes\"")), "byte_fallback: expected a boolean");
    expect_load_error(tiny_json("{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}"), "model.vocab['a']");
    expect_load_error(tiny_json("{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"},\"merges\":[]}"), "model.vocab['a']");
    expect_load_error(tiny_json("{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}"), "model.vocab: expected an object");
    expect_load_error(tiny_json("{\"type\":\"BPE\",\"unk_token\":\"<nope>\",\"vocab\":{\"a\":0},\"merges\":[]}"),
                      "unk_token '<nope>' is not in the vocab");
    expect_load_error("{\"added_tokens\":[{\"id\":\"x\",\"content\":\"a\"}],\"model\":{\"type\":\"BPE\",\"vocab\":{},"
                      "\"merges\":[]}}",
                      "added_tokens[0]");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},"
                      "\"merges\":[]}}",
                      "unsupported pre_tokenizer type BertPreTokenizer");
    expect_load_error("{\"normalizer\":{\"type\":\"Precompiled\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},"
                      "\"merges\":[]}}",
                      "unsupported normalizer type Precompiled");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                      "regex '('");
}

Test(tokenizer_errors, missing_file)
{
    cr_expect_null(llmq_tokenizer_load("build/no/such/dir"));
    cr_expect(strstr(llmq_last_error(), "build/no/such/dir"), "%s", llmq_last_error());
}

/* Invalid UTF-8 is replaced by U+FFFD per maximal invalid subsequence first (as
 * Python's bytes.decode(errors="replace") before HF sees the text). */
Test(tokenizer_errors, invalid_utf8_input)
{
    char dir[512];
    REQUIRE_SHARED(dir, "tokenizers/llama3");
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    cr_assert(tok, "%s", llmq_last_error());
    static const char bad[] = "a\xff" "b\xe2\x82" "c\xf0\x9f\x98" "\xc0\xaf" "\xed\xa0\x80" "z";
    static const char fixed[] = "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd" "\xef\xbf\xbd\xef\xbf\xbd"
                                "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "z";
    int32_t *a, *b;
    size_t na, nb;
    cr_assert_eq(llmq_tokenizer_encode(tok, bad, sizeof bad - 1, 0, &a, &na), LLMQ_OK, "%s", llmq_last_error());
    cr_assert_eq(llmq_tokenizer_encode(tok, fixed, sizeof fixed - 1, 0, &b, &nb), LLMQ_OK);
    cr_expect_eq(na, nb);
    cr_expect_arr_eq(a, b, na * sizeof *a);
    size_t len;
    char *d = llmq_tokenizer_decode(tok, a, na, &len);
    cr_expect_eq(len, sizeof fixed - 1);
    cr_expect_arr_eq(d, fixed, len);
    free(d);
    free(b);
    /* a truncated sequence at the very end, and a lone continuation byte */
    cr_assert_eq(llmq_tokenizer_encode(tok, "\xe2\x82", 2, 0, &b, &nb), LLMQ_OK);
    cr_expect_gt(nb, 0);
    free(b);
    cr_assert_eq(llmq_tokenizer_encode(tok, "\x80", 1, 0, &b, &nb), LLMQ_OK);
    free(b);
    free(a);
    /* ids outside the vocabulary are an error on decode */
    int32_t out_of_range[] = {1, 128256};
    cr_expect_null(llmq_tokenizer_decode(tok, out_of_range, 2, &len));
    cr_expect(strstr(llmq_last_error(), "128256"), "%s", llmq_last_error());
    int32_t negative[] = {-1};
    cr_expect_null(llmq_tokenizer_decode(tok, negative, 1, &len));
    llmq_tokenizer_free(tok);
}

Test(tokenizer_errors, spm_invalid_utf8_and_nul)
{
    char dir[512];
    REQUIRE_SHARED(dir, "tokenizers/tinyllama");
    llmq_tokenizer *tok = llmq_tokenizer_load(dir);
    cr_assert(tok, "%s", llmq_last_error());
    int32_t *ids;
    size_t n;
    /* "\xff" -> U+FFFD, a Llama-2 piece (30140) */
    cr_assert_eq(llmq_tokenizer_encode(tok, "\xff", 1, 0, &ids, &n), LLMQ_OK);
    int32_t want[] = {29871, 30140};
    cr_assert_eq(n, 2);
    cr_expect_arr_eq(ids, want, sizeof want);
    free(ids);
    /* an embedded NUL is a character like any other: <0x00> */
    cr_assert_eq(llmq_tokenizer_encode(tok, "a\0b", 3, 0, &ids, &n), LLMQ_OK);
    int32_t want2[] = {263, 3, 29890};
    cr_assert_eq(n, 3);
    cr_expect_arr_eq(ids, want2, sizeof want2);
    free(ids);
    llmq_tokenizer_free(tok);
}

/* ---- llama.cpp vocabulary terms: export, rebuild, same ids ---- */

static int same_encodings(const llmq_tokenizer *a, const llmq_tokenizer *b, const char *vec_path)
{
    json_error_t jerr;
    json_t *vectors = json_load_file(vec_path, JSON_ALLOW_NUL, &jerr);
    cr_assert(json_is_array(vectors), "%s: %s", vec_path, jerr.text);
    int differ = 0;
    for (size_t i = 0; i < json_array_size(vectors); i++) {
        json_t *jt = json_object_get(json_array_get(vectors, i), "text");
        for (int sp = 0; sp < 2; sp++) {
            int32_t *x, *y;
            size_t nx, ny;
            cr_assert_eq(llmq_tokenizer_encode(a, json_string_value(jt), json_string_length(jt), sp, &x, &nx), LLMQ_OK);
            cr_assert_eq(llmq_tokenizer_encode(b, json_string_value(jt), json_string_length(jt), sp, &y, &ny), LLMQ_OK);
            if (nx != ny || (nx && memcmp(x, y, nx * sizeof *x))) {
                char esc[512];
                test_escape(json_string_value(jt), json_string_length(jt), esc, sizeof esc);
                cr_log_error("rebuilt tokenizer differs on \"%s\" (add_special=%d)", esc, sp);
                differ++;
            }
            free(x);
            free(y);
        }
    }
    json_decref(vectors);
    return differ;
}

static void check_round_trip(const char *dir, const char *model, const char *pre, int drop_merges)
{
    char path[512], rel[256], vec[600];
    snprintf(rel, sizeof rel, "tokenizers/%s", dir);
    REQUIRE_SHARED(path, rel);
    snprintf(vec, sizeof vec, "%s/vectors.json", path);
    llmq_tokenizer *tok = llmq_tokenizer_load(path);
    cr_assert(tok, "%s", llmq_last_error());
    llmq_vocab v;
    cr_assert_eq(llmq_tokenizer_export_vocab(tok, &v), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_str_eq(v.model, model);
    cr_expect_str_eq(v.pre, pre);
    cr_expect_eq(v.n_tokens, (size_t)llmq_tokenizer_vocab_size(tok));
    cr_expect_eq(v.bos_id, llmq_tokenizer_bos_id(tok));
    cr_expect_eq(v.add_bos, llmq_tokenizer_adds_bos(tok));
    if (drop_merges) { /* the .model scores of stories260K: 0 for ids < 259, then 0, -1, -2, ... */
        for (size_t i = 0; i < v.n_merges; i++) free(v.merges[i]);
        v.n_merges = 0;
        for (size_t id = 0; id < v.n_tokens; id++) v.scores[id] = id < 259 ? 0.0f : -(float)(id - 259);
    }
    llmq_tokenizer *back = llmq_tokenizer_from_vocab(&v);
    cr_assert(back, "%s", llmq_last_error());
    cr_expect_eq(llmq_tokenizer_vocab_size(back), llmq_tokenizer_vocab_size(tok));
    cr_expect_eq(llmq_tokenizer_eos_id(back), llmq_tokenizer_eos_id(tok));
    cr_expect_eq(same_encodings(tok, back, vec), 0, "%s: the rebuilt tokenizer encodes differently", dir);
    llmq_vocab_free(&v);
    llmq_tokenizer_free(back);
    llmq_tokenizer_free(tok);
}

Test(tokenizer_vocab, round_trip_llama2) { check_round_trip("tinyllama", "llama", "default", 0); }
Test(tokenizer_vocab, round_trip_mistral_legacy) { check_round_trip("mistral-7b-legacy", "llama", "default", 0); }
Test(tokenizer_vocab, round_trip_llama3) { check_round_trip("llama3.1", "gpt2", "llama-bpe", 0); }
Test(tokenizer_vocab, round_trip_qwen) { check_round_trip("qwen3", "gpt2", "qwen2", 0); }
Test(tokenizer_vocab, round_trip_gpt2) { check_round_trip("gpt2", "gpt2", "gpt-2", 0); }
Test(tokenizer_vocab, round_trip_smollm) { check_round_trip("smollm2", "gpt2", "smollm", 0); }
Test(tokenizer_vocab, round_trip_gemma3, .timeout = 120) { check_round_trip("gemma3", "llama", "default", 0); }
/* merges derived from SentencePiece scores (a llama.cpp "llama" GGUF has none) */
Test(tokenizer_vocab, merges_from_scores) { check_round_trip("stories260K-tok512", "llama", "default", 1); }

Test(tokenizer_vocab, export_types_and_scores)
{
    char path[512];
    REQUIRE_SHARED(path, "tokenizers/tinyllama");
    llmq_tokenizer *tok = llmq_tokenizer_load(path);
    cr_assert(tok, "%s", llmq_last_error());
    llmq_vocab v;
    cr_assert_eq(llmq_tokenizer_export_vocab(tok, &v), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(v.token_types[0], LLMQ_TOKEN_UNKNOWN);
    cr_expect_eq(v.token_types[1], LLMQ_TOKEN_CONTROL);
    cr_expect_eq(v.token_types[2], LLMQ_TOKEN_CONTROL);
    cr_expect_eq(v.token_types[3], LLMQ_TOKEN_BYTE); /* <0x00> */
    cr_expect_eq(v.token_types[258], LLMQ_TOKEN_BYTE);
    cr_expect_eq(v.token_types[259], LLMQ_TOKEN_NORMAL);
    cr_expect_str_eq(v.merges[0], "\xe2\x96\x81 t"); /* the first merge: "▁ t" */
    int32_t first = llmq_tokenizer_token_id(tok, "\xe2\x96\x81t", 4);
    cr_expect_eq(first, 260);
    cr_expect_eq(v.scores[first], 0.0f);
    cr_expect_lt(v.scores[15043], -1000.0f); /* ▁Hello comes from a later merge */
    cr_expect_eq(v.scores[29874], 0.0f);    /* "a": no merge produces it */
    cr_expect_eq(v.n_merges, 61249);
    cr_expect_eq(v.unk_id, 0);
    cr_expect_eq(v.eos_id, 2);
    cr_expect(v.add_bos);
    cr_expect(!v.add_eos);
    cr_expect(v.add_space_prefix);
    cr_expect(v.chat_template && strstr(v.chat_template, "<|assistant|>"), "chat template missing");
    llmq_vocab_free(&v);
    llmq_tokenizer_free(tok);
    /* Metaspace "first" (Mistral v0.1) has no exact llama.cpp form but exports as SPM with a space prefix */
    REQUIRE_SHARED(path, "tokenizers/mistral-7b-v0.1");
    tok = llmq_tokenizer_load(path);
    cr_assert(tok);
    cr_assert_eq(llmq_tokenizer_export_vocab(tok, &v), LLMQ_OK, "%s", llmq_last_error());
    cr_expect(v.add_space_prefix);
    llmq_vocab_free(&v);
    llmq_tokenizer_free(tok);
}

Test(tokenizer_vocab, bad_vocab)
{
    char *tokens[] = {"a", "b"};
    size_t lens[] = {1, 1};
    int32_t types[] = {1, 9};
    llmq_vocab v = {.model = "gpt2", .pre = "gpt-2", .n_tokens = 2, .tokens = tokens, .token_lens = lens,
                    .token_types = types, .bos_id = -1, .eos_id = -1, .unk_id = -1, .pad_id = -1};
    cr_expect_null(llmq_tokenizer_from_vocab(&v));
    cr_expect(strstr(llmq_last_error(), "token_type[1]"), "%s", llmq_last_error());
    types[1] = 1;
    v.pre = "mystery";
    cr_expect_null(llmq_tokenizer_from_vocab(&v));
    cr_expect(strstr(llmq_last_error(), "mystery"), "%s", llmq_last_error());
    v.model = "bert";
    cr_expect_null(llmq_tokenizer_from_vocab(&v));
    cr_expect(strstr(llmq_last_error(), "unsupported tokenizer type bert"), "%s", llmq_last_error());
}

/* ---- llama.cpp's tokenizer test strings (models/ggml-vocab-*.gguf.inp/.out) ---- */

static void check_llamacpp(const char *vocab, const char *dir)
{
    char tdir[512], rel[256];
    snprintf(rel, sizeof rel, "tokenizers/%s", dir);
    REQUIRE_SHARED(tdir, rel);
    llmq_tokenizer *tok = llmq_tokenizer_load(tdir);
    cr_assert(tok, "%s", llmq_last_error());
    test_llamacpp_vocab_strings(tok, vocab);
    llmq_tokenizer_free(tok);
}

Test(tokenizer_llamacpp, llama_spm) { check_llamacpp("llama-spm", "tinyllama"); }
Test(tokenizer_llamacpp, llama_bpe) { check_llamacpp("llama-bpe", "llama3"); }
Test(tokenizer_llamacpp, qwen2) { check_llamacpp("qwen2", "qwen3"); }
Test(tokenizer_llamacpp, gpt2) { check_llamacpp("gpt-2", "gpt2"); }

/* ---- the CLI: llmq tokenize (the binary of the same build dir as this test) ---- */

/* Runs a shell command, returns its stdout (and exit status in *status). */
static char *run(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen %s", cmd);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

Test(tokenizer_cli, encode_decode_batch)
{
    char bin[600], dir[512], cmd[2048];
    test_llmq_binary(bin, sizeof bin);
    REQUIRE_SHARED(dir, "tokenizers/llama3.1");
    int st;
    snprintf(cmd, sizeof cmd, "%s tokenize %s --json 'Hello world 1234567' 2>&1", bin, dir);
    cr_expect_str_eq(run(cmd, &st), "[128000,9906,1917,220,4513,10961,22]\n");
    cr_expect_eq(st, 0);
    snprintf(cmd, sizeof cmd, "%s tokenize %s --no-special 'Hello world' 2>&1", bin, dir);
    cr_expect_str_eq(run(cmd, &st), "9906 1917\n");
    snprintf(cmd, sizeof cmd, "%s tokenize %s --decode --json '[128000, 9906, 1917]' 2>&1", bin, dir);
    cr_expect_str_eq(run(cmd, &st), "\"<|begin_of_text|>Hello world\"\n");
    snprintf(cmd, sizeof cmd, "printf '\"Hello\"\\n\\n\"a\\\\u0000b\"\\n' | %s tokenize %s --batch --no-special 2>&1", bin,
             dir);
    cr_expect_str_eq(run(cmd, &st), "[9906]\n[64,188,65]\n");
    cr_expect_eq(st, 0);
    snprintf(cmd, sizeof cmd, "printf '[9906]\\n[64,188,65]\\n' | %s tokenize %s --batch --decode 2>&1", bin, dir);
    cr_expect_str_eq(run(cmd, &st), "\"Hello\"\n\"a\\u0000b\"\n");
    /* errors: one line, non-zero exit */
    snprintf(cmd, sizeof cmd, "%s tokenize build/no-such-model x 2>&1", bin);
    cr_expect_str_eq(run(cmd, &st), "llmq tokenize: build/no-such-model: no tokenizer.json there\n");
    cr_expect_neq(st, 0);
    snprintf(cmd, sizeof cmd, "printf '\"a\"\\n[1\\n' | %s tokenize %s --batch 2>&1", bin, dir);
    cr_expect(strstr(run(cmd, &st), "llmq tokenize: stdin line 2: invalid JSON"), "batch error");
    cr_expect_neq(st, 0);
    snprintf(cmd, sizeof cmd, "%s tokenize --help", bin);
    cr_expect(strstr(run(cmd, &st), "usage: llmq tokenize MODEL"));
    cr_expect_eq(st, 0);
}
