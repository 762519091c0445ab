#include "llmq/error.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];

const char *llmq_last_error(void) { return last_error; }

int llmq_verror(const char *fmt, va_list ap)
{
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    /* Keep the promise of a one-line message. */
    for (char *p = last_error; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return LLMQ_ERR;
}

int llmq_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    llmq_verror(fmt, ap);
    va_end(ap);
    return LLMQ_ERR;
}

int llmq_error_prefix(const char *fmt, ...)
{
    char prefix[512], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof last_error - 3) n = sizeof last_error - 3;
    memcpy(last_error, prefix, n);
    memcpy(last_error + n, ": ", 2);
    size_t rest = sizeof last_error - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(last_error + n + 2, old, m);
    last_error[n + 2 + m] = '\0';
    for (char *p = last_error; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return LLMQ_ERR;
}

void llmq_clear_error(void) { last_error[0] = '\0'; }
