/* One live status line on stderr when it is a terminal: a background thread
 * renders it and rewrites it in place ("\r", the text, clear to end of line),
 * at most 10 times a second and only when the text changed; lines printed
 * through cli_live_print go above it. */
#ifndef LLMQ_CLI_LIVE_H
#define LLMQ_CLI_LIVE_H

#include <stddef.h>

typedef struct cli_live cli_live;

/* Writes the line (no newline) for the state behind user into buf; called
 * with the live line's lock held, so the state's writers take it too
 * (cli_live_lock). now: seconds on CLOCK_MONOTONIC (cli_live_now). */
typedef void (*cli_live_render)(void *user, double now, char *buf, size_t cap);

/* NULL when stderr is not a terminal or the thread cannot start; every
 * function below accepts NULL (and then only cli_live_print prints). */
cli_live *cli_live_start(cli_live_render render, void *user);
void cli_live_lock(cli_live *l);
void cli_live_unlock(cli_live *l);
/* Prints text (whole lines, ending in '\n') above the live line, or plainly without one. */
void cli_live_print(cli_live *l, const char *text);
/* Stops the thread, draws the line a last time and ends it with a newline. */
void cli_live_end(cli_live *l);

double cli_live_now(void);

#endif
