/* Errors as return values: a function that fails returns a non-zero status
 * (or NULL) and leaves a one-line message for llmq_last_error(). Only the CLI
 * prints. The message is thread-local, so OpenMP workers cannot clobber the
 * caller's. */
#ifndef LLMQ_ERROR_H
#define LLMQ_ERROR_H

#include <stdarg.h>

#define LLMQ_OK 0
#define LLMQ_ERR (-1)

/* The message of the last failure on this thread ("" when none). */
const char *llmq_last_error(void);

/* Sets the message (printf-style); always returns LLMQ_ERR so callers can
 * write `return llmq_error("%s: bad field", path);`. */
int llmq_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int llmq_verror(const char *fmt, va_list ap);

/* Prefixes the current message: "<prefix>: <old message>". Returns LLMQ_ERR. */
int llmq_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void llmq_clear_error(void);

#endif
