/*
 * src/cli_stream.c — the streaming text output of `moecpu run` and `moecpu
 * chat` (contract in src/cli_gen.h): stop strings are never printed, text
 * that could still become a stop string or a <think>/</think> tag is held
 * back until it cannot, and R1 <think> sections are shown, dimmed (ANSI
 * faint, on a terminal) or hidden.  Tested by tests/test_cli_stream.c.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_gen.h"

#define THINK_OPEN "<think>"
#define THINK_CLOSE "</think>"
#define ANSI_DIM "\x1b[2m"
#define ANSI_RESET "\x1b[0m"

static int grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    char *np = realloc(*p, c);
    if (!np) return -1;
    *p = np;
    *cap = c;
    return 0;
}

void cli_stream_init(struct cli_stream *s, FILE *out, const struct cli_text_opts *t, int in_think)
{
    cli_stream_init_ansi(s, out, t, in_think, isatty(fileno(out)));
}

void cli_stream_init_ansi(struct cli_stream *s, FILE *out, const struct cli_text_opts *t, int in_think, int terminal)
{
    memset(s, 0, sizeof *s);
    s->out = out;
    s->t = t;
    s->ansi = t->think == CLI_THINK_DIM && terminal;
    s->in_think = in_think;
    if (in_think && t->think != CLI_THINK_HIDE) {
        /* the prompt opened the section: show where it starts */
        if (s->ansi) {
            fputs(ANSI_DIM, out);
            s->styled = 1;
        }
        fputs(THINK_OPEN "\n", out);
    }
}

static void write_plain(struct cli_stream *s, const char *p, size_t n)
{
    if (s->skip_nl) {
        while (n && (*p == '\n' || *p == '\r')) p++, n--;
        if (!n) return;
        s->skip_nl = 0;
    }
    if (s->styled) {
        fputs(ANSI_RESET, s->out);
        s->styled = 0;
    }
    fwrite(p, 1, n, s->out);
}

static void write_think(struct cli_stream *s, const char *p, size_t n)
{
    if (s->t->think == CLI_THINK_HIDE || !n) return;
    if (s->ansi && !s->styled) {
        fputs(ANSI_DIM, s->out);
        s->styled = 1;
    }
    fwrite(p, 1, n, s->out);
}

/* Text that is final (no stop string can start in it): route <think>
 * sections.  Callers never split a tag across calls (see cli_stream_push). */
static void emit(struct cli_stream *s, const char *p, size_t n)
{
    while (n) {
        const char *tag = s->in_think ? THINK_CLOSE : THINK_OPEN;
        const size_t tl = strlen(tag);
        const char *q = memmem(p, n, tag, tl);
        const size_t before = q ? (size_t)(q - p) : n;
        if (s->in_think) write_think(s, p, before);
        else write_plain(s, p, before);
        if (!q) return;
        if (s->in_think) {
            write_think(s, tag, tl);
            s->in_think = 0;
            s->skip_nl = s->t->think == CLI_THINK_HIDE;
        } else {
            s->in_think = 1;
            write_think(s, tag, tl);
        }
        p = q + tl;
        n -= before + tl;
    }
}

/* Longest suffix of p[0..n) that is a proper prefix of needle. */
static size_t partial(const char *p, size_t n, const char *needle)
{
    const size_t nl = strlen(needle);
    for (size_t k = nl - 1 < n ? nl - 1 : n; k > 0; k--)
        if (!memcmp(p + n - k, needle, k)) return k;
    return 0;
}

int cli_stream_push(struct cli_stream *s, const char *p, size_t n)
{
    if (s->stopped || !n) return s->stopped;
    if (grow(&s->raw, &s->rcap, s->nraw + n + 1) || grow(&s->pend, &s->pcap, s->np + n + 1)) {
        s->oom = 1;
        return 1;
    }
    memcpy(s->raw + s->nraw, p, n);
    s->nraw += n;
    s->raw[s->nraw] = 0;
    memcpy(s->pend + s->np, p, n);
    s->np += n;
    /* the earliest stop string */
    size_t cut = s->np;
    for (int i = 0; i < s->t->n_stops; i++) {
        const char *q = memmem(s->pend, s->np, s->t->stops[i], strlen(s->t->stops[i]));
        if (q && (size_t)(q - s->pend) < cut) cut = (size_t)(q - s->pend);
    }
    if (cut < s->np) {
        emit(s, s->pend, cut);
        s->nraw -= s->np - cut;
        s->raw[s->nraw] = 0;
        s->np = 0;
        s->stopped = 1;
        fflush(s->out);
        return 1;
    }
    /* hold back what could still become a stop string or a think tag */
    size_t hold = partial(s->pend, s->np, THINK_OPEN);
    size_t k = partial(s->pend, s->np, THINK_CLOSE);
    hold = k > hold ? k : hold;
    for (int i = 0; i < s->t->n_stops; i++) {
        k = partial(s->pend, s->np, s->t->stops[i]);
        hold = k > hold ? k : hold;
    }
    emit(s, s->pend, s->np - hold);
    memmove(s->pend, s->pend + s->np - hold, hold);
    s->np = hold;
    fflush(s->out);
    return 0;
}

void cli_stream_finish(struct cli_stream *s)
{
    if (!s->stopped && s->np) emit(s, s->pend, s->np);
    s->np = 0;
    if (s->styled) fputs(ANSI_RESET, s->out);
    s->styled = 0;
    fflush(s->out);
}

void cli_stream_free(struct cli_stream *s)
{
    free(s->raw);
    free(s->pend);
    s->raw = s->pend = NULL;
}
