/* libFuzzer: tokenizer.json, then encode. The input is tokenizer.json, and
 * optionally a NUL byte and a text to encode, and a second NUL byte and a
 * tokenizer_config.json. A fixed multilingual text is always encoded too; every
 * id must be inside the vocabulary and decode must accept them. */
#include "fuzz_common.h"
#include "llmq/tokenizer.h"

#define NAME "fuzz/tokenizer.json"

static const char fixed_text[] = "Hello world! It's 2024: naïve café, 日本語, emoji \xF0\x9F\x98\x80, tabs\t\tand  spaces\n"
                                 "<s> </s> <|endoftext|> \xff\xfe invalid UTF-8 \xc3";

static void encode_decode(const llmq_tokenizer *tok, const char *text, size_t len, int add_special)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (llmq_tokenizer_encode(tok, text, len, add_special, &ids, &n) != LLMQ_OK) {
        fuzz_check_error(NULL);
        return;
    }
    int vocab = llmq_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < n; i++) fuzz_assert(ids[i] >= 0 && ids[i] < vocab, "ids inside the vocabulary");
    size_t out_len = 0;
    char *out = llmq_tokenizer_decode(tok, ids, n, &out_len);
    if (out) fuzz_touch(out, out_len + 1);
    else fuzz_check_error(NULL);
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *json = (const char *)data;
    const char *nul = memchr(json, 0, size);
    size_t json_len = nul ? (size_t)(nul - json) : size;
    const char *text = nul ? nul + 1 : NULL;
    size_t text_len = 0, config_len = 0;
    const char *config = NULL;
    if (text) {
        const char *nul2 = memchr(text, 0, size - json_len - 1);
        text_len = nul2 ? (size_t)(nul2 - text) : size - json_len - 1;
        if (nul2) {
            config = nul2 + 1;
            config_len = size - json_len - 1 - text_len - 1;
        }
    }
    llmq_tokenizer *tok = llmq_tokenizer_load_json(json, json_len, config, config_len, NAME);
    if (!tok) {
        fuzz_check_error(NAME);
        return 0;
    }
    encode_decode(tok, fixed_text, sizeof fixed_text - 1, 1);
    if (text) {
        encode_decode(tok, text, text_len, 0);
        encode_decode(tok, text, text_len, 1);
    }
    int vocab = llmq_tokenizer_vocab_size(tok);
    for (int id = 0; id < vocab && id < 64; id++) {
        size_t len;
        const char *s = llmq_tokenizer_token_text(tok, id, &len);
        if (s) {
            fuzz_touch(s, len);
            fuzz_assert(llmq_tokenizer_token_id(tok, s, len) >= 0, "token text maps back to an id");
        }
    }
    /* The llama.cpp export and the tokenizer rebuilt from it. */
    llmq_vocab v;
    if (llmq_tokenizer_export_vocab(tok, &v) == LLMQ_OK) {
        llmq_tokenizer *back = llmq_tokenizer_from_vocab(&v);
        if (back) {
            encode_decode(back, fixed_text, sizeof fixed_text - 1, 1);
            llmq_tokenizer_free(back);
        }
        llmq_vocab_free(&v);
    }
    llmq_tokenizer_free(tok);
    return 0;
}
