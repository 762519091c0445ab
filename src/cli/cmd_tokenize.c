/* llmq tokenize: text -> ids and back with a model's tokenizer.json. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf_model.h"
#include "llmq/tokenizer.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: llmq tokenize MODEL [--text FILE | TEXT] [--no-special] [--decode] [--json] [--batch]\n"
            "\n"
            "Turns text into token ids (Hugging Face tokenizer.json semantics) or, with --decode, ids into text.\n"
            "\n"
            "  MODEL         a directory holding tokenizer.json (+ tokenizer_config.json), a tokenizer.json,\n"
            "                or a .gguf file (its tokenizer.ggml.* vocabulary)\n"
            "  TEXT          the text to encode (or, with --decode, ids: \"1 2 3\" or \"[1,2,3]\");\n"
            "                without TEXT or --text, stdin is read\n"
            "  --text FILE   read the text (or ids) from FILE ('-': stdin)\n"
            "  --no-special  do not add BOS/EOS (special-token text in the input is still parsed)\n"
            "  --decode      ids in, text out\n"
            "  --json        print a JSON array of ids (with --decode: a JSON string)\n"
            "  --batch       JSON Lines on stdin, one JSON string per line -> one JSON array of ids per line\n"
            "                (with --decode: arrays in, strings out); the tokenizer is loaded once\n");
}

static int fail(const char *fmt, const char *arg)
{
    fprintf(stderr, "llmq tokenize: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 1;
}

/* Reads all of fp into a malloc'd buffer. */
static char *read_stream(FILE *fp, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Parses "1 2 3", "1,2,3" or "[1, 2, 3]". */
static int parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 64;
    *n = 0;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids) return llmq_error("out of memory");
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',' || *p == '[' || *p == ']') p++;
        if (!*p) return LLMQ_OK;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < INT32_MIN || v > INT32_MAX)
            return llmq_error("expected token ids (integers), found '%.20s'", p);
        if (*n == cap) {
            int32_t *q = realloc(*ids, cap * 2 * sizeof *q);
            if (!q) return llmq_error("out of memory");
            *ids = q;
            cap *= 2;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
}

static void print_ids(const int32_t *ids, size_t n, int json)
{
    if (json) putchar('[');
    for (size_t i = 0; i < n; i++) printf(json ? (i ? ",%d" : "%d") : (i ? " %d" : "%d"), (int)ids[i]);
    if (json) putchar(']');
    putchar('\n');
}

static int print_json_string(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    char *out = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!out) return llmq_error("cannot encode the text as JSON");
    puts(out);
    free(out);
    return LLMQ_OK;
}

static int run_batch(const llmq_tokenizer *tok, int decode, int add_special)
{
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got;
    int rc = 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (len == 0) continue;
        json_error_t e;
        json_t *j = json_loadb(line, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &e);
        char where[64];
        snprintf(where, sizeof where, "stdin line %zu", lineno);
        if (!j) {
            fprintf(stderr, "llmq tokenize: %s: invalid JSON: %s\n", where, e.text);
            rc = 1;
            break;
        }
        if (!decode) {
            if (!json_is_string(j)) {
                fprintf(stderr, "llmq tokenize: %s: expected a JSON string\n", where);
                json_decref(j);
                rc = 1;
                break;
            }
            int32_t *ids;
            size_t n;
            if (llmq_tokenizer_encode(tok, json_string_value(j), json_string_length(j), add_special, &ids, &n)) {
                fprintf(stderr, "llmq tokenize: %s: %s\n", where, llmq_last_error());
                json_decref(j);
                rc = 1;
                break;
            }
            print_ids(ids, n, 1);
            free(ids);
        } else {
            size_t n = json_array_size(j);
            int32_t *ids = malloc((n + 1) * sizeof *ids);
            int ok = json_is_array(j) && ids;
            for (size_t i = 0; ok && i < n; i++) {
                json_t *v = json_array_get(j, i);
                ok = json_is_integer(v) && json_integer_value(v) >= INT32_MIN && json_integer_value(v) <= INT32_MAX;
                if (ok) ids[i] = (int32_t)json_integer_value(v);
            }
            size_t len_out = 0;
            char *text = ok ? llmq_tokenizer_decode(tok, ids, n, &len_out) : NULL;
            free(ids);
            if (!ok || !text || print_json_string(text, len_out)) {
                fprintf(stderr, "llmq tokenize: %s: %s\n", where, ok ? llmq_last_error() : "expected a JSON array of ids");
                free(text);
                json_decref(j);
                rc = 1;
                break;
            }
            free(text);
        }
        json_decref(j);
        fflush(stdout);
    }
    free(line);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text_arg = NULL, *text_file = NULL;
    int add_special = 1, decode = 0, json = 0, batch = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-special")) {
            add_special = 0;
        } else if (!strcmp(a, "--decode")) {
            decode = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--batch")) {
            batch = 1;
        } else if (!strcmp(a, "--text")) {
            if (i + 1 >= argc) return fail("%s", "--text needs a FILE");
            text_file = argv[++i];
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc) text_arg = argv[++i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "llmq tokenize: unknown option '%s' (see llmq tokenize --help)\n", a);
            return 2;
        } else if (!model) {
            model = a;
        } else if (!text_arg) {
            text_arg = a;
        } else {
            fprintf(stderr, "llmq tokenize: unexpected argument '%s' (quote the text)\n", a);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    if (text_arg && text_file) return fail("%s", "give either TEXT or --text FILE, not both");
    if (batch && (text_arg || text_file)) return fail("%s", "--batch reads stdin; it takes no TEXT or --text");
    /* a GGUF file carries its vocabulary in tokenizer.ggml.* */
    llmq_tokenizer *tok = llmq_is_gguf_file(model) ? llmq_tokenizer_load_gguf(model) : llmq_tokenizer_load(model);
    if (!tok) return fail("%s", llmq_last_error());
    int rc = 0;
    if (batch) {
        rc = run_batch(tok, decode, add_special);
        llmq_tokenizer_free(tok);
        return rc;
    }
    char *input = NULL;
    size_t len = 0;
    if (text_file && strcmp(text_file, "-") != 0) {
        input = llmq_read_file(text_file, 0, &len);
        if (!input) {
            llmq_tokenizer_free(tok);
            return fail("%s", llmq_last_error());
        }
    } else if (text_arg && !text_file) {
        len = strlen(text_arg);
        input = strdup(text_arg);
    } else {
        input = read_stream(stdin, &len);
    }
    if (!input) {
        llmq_tokenizer_free(tok);
        return fail("%s", "out of memory");
    }
    if (!decode) {
        int32_t *ids;
        size_t n;
        if (llmq_tokenizer_encode(tok, input, len, add_special, &ids, &n)) {
            rc = fail("%s", llmq_last_error());
        } else {
            print_ids(ids, n, json);
            free(ids);
        }
    } else {
        int32_t *ids = NULL;
        size_t n = 0, out_len = 0;
        char *text = NULL;
        if (parse_ids(input, &ids, &n) || !(text = llmq_tokenizer_decode(tok, ids, n, &out_len))) {
            rc = fail("%s", llmq_last_error());
        } else if (json) {
            if (print_json_string(text, out_len)) rc = fail("%s", llmq_last_error());
        } else {
            fwrite(text, 1, out_len, stdout);
            putchar('\n');
        }
        free(text);
        free(ids);
    }
    free(input);
    llmq_tokenizer_free(tok);
    return rc;
}
