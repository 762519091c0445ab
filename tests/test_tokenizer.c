/* Tokenizer: conformance with Hugging Face tokenizers on the shared vectors,
 * the stories models' reference ids, malformed files, and the GGUF vocab round trip. */
#include <jansson.h>
#include <stdint.h>

#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/tokenizer.h"
#include "test_util.h"

/* Prints a string with control characters escaped, cut at 120 bytes. */
static void print_escaped(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap && i < 120; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else out[o++] = (char)c;
    }
    if (n > 120 && o + 4 < cap) o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = 0;
}

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
    print_escaped(text, len, esc, sizeof esc);
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
                print_escaped(text, len, esc, sizeof esc);
                print_escaped(d, dl, got, sizeof got);
                print_escaped(json_string_value(dec), json_string_length(dec), want, sizeof want);
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
