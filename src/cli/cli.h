/* Shared helpers of the subcommands (the only code that prints or exits). */
#ifndef LLMQ_CLI_H
#define LLMQ_CLI_H

#include "llmq/version.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A tiny option scanner: `--name value`, `--name=value` and flags.
 * Usage: for (cli_args a = cli_begin(argc, argv); cli_next(&a);) { if (cli_flag(&a, "--json")) ...
 * else if (cli_value(&a, "--ctx", &s)) ... else if (a.positional) ... else return cli_unknown(&a); } */
typedef struct {
    int argc, i;
    char **argv;
    const char *arg;        /* the current argument */
    const char *positional; /* set when the current argument is not an option */
    const char *cmd;
    bool failed;
} cli_args;

cli_args cli_begin(const char *cmd, int argc, char **argv);
bool cli_next(cli_args *a);
bool cli_flag(cli_args *a, const char *name);
/* Matches --name value / --name=value; a missing value reports an error (a->failed). */
bool cli_value(cli_args *a, const char *name, const char **value);
/* Parses a positive/non-negative integer option value; prints an error and sets a->failed on a bad one. */
bool cli_int(cli_args *a, const char *name, int min, int *out);
/* Parses a number option value in [min, max]. */
bool cli_double(cli_args *a, const char *name, double min, double max, double *out);
/* Reports an unknown option or extra argument; returns 2 (the usage-error exit status). */
int cli_unknown(cli_args *a);
/* "llmq CMD: message" on stderr for a usage error; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "llmq CMD: message" on stderr; returns 1 (the exit status for a failure). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints llmq_last_error() as a failure of cmd. */
int cli_fail_last(const char *cmd);

bool cli_stderr_is_tty(void);

/* Reads a JSON array of token ids. NULL on error (message set). */
int32_t *cli_read_token_file(const char *path, size_t *n);

/* Writes a JSON string literal (with escapes) to stdout. */
void cli_print_json_string(const char *s);

/* Prints o as one compact line of JSON ("{}" when o is NULL or cannot be
 * encoded, so --json always ends with an object) and releases it. */
struct json_t;
void cli_print_json_object(struct json_t *o);

#endif
