#include "live.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

enum { LINE_CAP = 512 };
#define REDRAW_INTERVAL 0.1 /* seconds: at most 10 draws a second */

struct cli_live {
    pthread_mutex_t mu;  /* the user's state that render reads (cli_live_lock), stop, the condition */
    pthread_mutex_t out; /* the terminal: shown, last and every write. Never held with mu, so a
                          * terminal that stops reading (Ctrl-S, a stalled ssh) blocks the ticker,
                          * not the computation that updates the state. */
    pthread_cond_t cv; /* on CLOCK_MONOTONIC; signalled to stop */
    pthread_t thread;
    bool stop;
    bool shown;  /* the line is on the terminal now */
    cli_live_render render;
    void *user;
    char last[LINE_CAP]; /* the text last drawn */
};

double cli_live_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The rendered line, cut to the terminal's width so that it never wraps
 * (a wrapped line cannot be rewritten with "\r"). */
static void render(cli_live *l, char *buf)
{
    buf[0] = 0;
    l->render(l->user, cli_live_now(), buf, LINE_CAP);
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && strlen(buf) >= ws.ws_col) buf[ws.ws_col - 1] = 0;
}

/* One write under `out`: "\r", the text, clear to the end of the line (and a newline at the end). */
static void show(cli_live *l, const char *buf, bool final)
{
    char line[LINE_CAP + 8];
    pthread_mutex_lock(&l->out);
    if (final || !l->shown || strcmp(buf, l->last)) {
        int n = snprintf(line, sizeof line, "\r%s\033[K%s", buf, final ? "\n" : "");
        fwrite(line, 1, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, stderr);
        fflush(stderr);
        snprintf(l->last, sizeof l->last, "%s", buf);
        l->shown = !final;
    }
    pthread_mutex_unlock(&l->out);
}

static void *ticker(void *arg)
{
    cli_live *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        char buf[LINE_CAP];
        render(l, buf);
        pthread_mutex_unlock(&l->mu);
        show(l, buf, false);
        pthread_mutex_lock(&l->mu);
        double until = cli_live_now() + REDRAW_INTERVAL;
        struct timespec ts = {(time_t)until, (long)((until - (double)(time_t)until) * 1e9)};
        while (!l->stop && cli_live_now() < until) pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

cli_live *cli_live_start(cli_live_render fn, void *user)
{
    if (!isatty(STDERR_FILENO)) return NULL;
    cli_live *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->render = fn;
    l->user = user;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->out, NULL);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&l->thread, NULL, ticker, l) != 0) {
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        pthread_mutex_destroy(&l->out);
        free(l);
        return NULL;
    }
    return l;
}

void cli_live_lock(cli_live *l)
{
    if (l) pthread_mutex_lock(&l->mu);
}

void cli_live_unlock(cli_live *l)
{
    if (l) pthread_mutex_unlock(&l->mu);
}

void cli_live_print(cli_live *l, const char *text)
{
    if (!l) {
        fputs(text, stderr);
        return;
    }
    pthread_mutex_lock(&l->out);
    if (l->shown) fputs("\r\033[K", stderr);
    fputs(text, stderr);
    fflush(stderr);
    l->shown = false; /* the ticker draws it again below the text */
    pthread_mutex_unlock(&l->out);
}

void cli_live_end(cli_live *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    char buf[LINE_CAP];
    pthread_mutex_lock(&l->mu);
    render(l, buf);
    pthread_mutex_unlock(&l->mu);
    show(l, buf, true);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->out);
    free(l);
}
