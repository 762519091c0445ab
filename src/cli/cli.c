#include "cli.h"
#include "llmq/error.h"
#include "llmq/file.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void vreport(const char *cmd, const char *fmt, va_list ap)
{
    fprintf(stderr, "llmq %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

cli_args cli_begin(const char *cmd, int argc, char **argv)
{
    cli_args a = {argc, 0, argv, NULL, NULL, cmd, false};
    return a;
}

bool cli_next(cli_args *a)
{
    if (a->failed || ++a->i >= a->argc) return false;
    a->arg = a->argv[a->i];
    a->positional = (a->arg[0] == '-' && a->arg[1] != '\0') ? NULL : a->arg;
    return true;
}

bool cli_flag(cli_args *a, const char *name) { return !a->positional && !strcmp(a->arg, name); }

bool cli_value(cli_args *a, const char *name, const char **value)
{
    if (a->positional) return false;
    size_t n = strlen(name);
    if (strncmp(a->arg, name, n) != 0) return false;
    if (a->arg[n] == '=') {
        *value = a->arg + n + 1;
        return true;
    }
    if (a->arg[n] != '\0') return false;
    if (a->i + 1 >= a->argc) {
        cli_fail(a->cmd, "option %s needs a value", name);
        a->failed = true;
        return true;
    }
    *value = a->argv[++a->i];
    return true;
}

bool cli_int(cli_args *a, const char *name, int min, int *out)
{
    const char *s;
    if (!cli_value(a, name, &s)) return false;
    if (a->failed) return true;
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > (1L << 30)) {
        cli_fail(a->cmd, "option %s: '%s' is not an integer >= %d", name, s, min);
        a->failed = true;
        return true;
    }
    *out = (int)v;
    return true;
}

bool cli_double(cli_args *a, const char *name, double min, double max, double *out)
{
    const char *s;
    if (!cli_value(a, name, &s)) return false;
    if (a->failed) return true;
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= min && v <= max)) {
        cli_fail(a->cmd, "option %s: '%s' is not a number in [%g, %g]", name, s, min, max);
        a->failed = true;
        return true;
    }
    *out = v;
    return true;
}

int cli_unknown(cli_args *a)
{
    a->failed = true;
    if (a->positional) cli_fail(a->cmd, "unexpected argument '%s' (see llmq %s --help)", a->arg, a->cmd);
    else cli_fail(a->cmd, "unknown option '%s' (see llmq %s --help)", a->arg, a->cmd);
    return 2;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    return 2;
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    return 1;
}

int cli_fail_last(const char *cmd) { return cli_fail(cmd, "%s", llmq_last_error()); }

bool cli_stderr_is_tty(void) { return isatty(STDERR_FILENO); }

int32_t *cli_read_token_file(const char *path, size_t *n)
{
    size_t len;
    char *text = llmq_read_file(path, 1u << 30, &len);
    if (!text) return NULL;
    json_error_t e;
    json_t *arr = json_loadb(text, len, 0, &e);
    free(text);
    if (!arr || !json_is_array(arr)) {
        json_decref(arr);
        llmq_error("%s: expected a JSON array of token ids", path);
        return NULL;
    }
    *n = json_array_size(arr);
    int32_t *ids = malloc((*n ? *n : 1) * sizeof *ids);
    for (size_t i = 0; ids && i < *n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            llmq_error("%s: element %zu is not a token id", path, i);
            free(ids);
            ids = NULL;
            break;
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    json_decref(arr);
    return ids;
}

void cli_print_json_object(json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    puts(text ? text : "{}");
    free(text);
    json_decref(o);
}

void cli_print_json_string(const char *s)
{
    json_t *str = json_string(s ? s : "");
    char *enc = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
    fputs(enc ? enc : "\"\"", stdout);
    free(enc);
    json_decref(str);
}
