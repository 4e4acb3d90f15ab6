/*
 * src/cli_gen.h — the generation loop and output stream that `moecpu run`
 * (src/cli_run.c) and `moecpu chat` (src/cli_chat.c) share.
 */
#ifndef MOECPU_CLI_GEN_H
#define MOECPU_CLI_GEN_H

#include <signal.h>
#include <stdio.h>

#include "cli.h"

/* A growable list of token ids (what a context holds, in chat). */
struct cli_ids {
    int32_t *ids;
    int64_t n, cap;
};
int cli_ids_push(struct cli_ids *v, int32_t id);

/* Streaming output: text is pushed as the detokenizer releases it.  Text
 * that could still become a stop string or a <think>/</think> tag is held
 * back until it cannot; a stop string ends the stream and is never
 * printed.  raw[0..nraw) keeps everything pushed, cut at the stop string
 * (the assistant's message in chat history). */
struct cli_stream {
    FILE *out;
    const struct cli_text_opts *t;
    int ansi;                  /* --think dim on a terminal: ANSI faint */
    int in_think, skip_nl, styled, stopped, oom;
    char *pend, *raw;
    size_t np, pcap, nraw, rcap;
};
/* in_think: the prompt already opened a <think> section (R1 chat). */
void cli_stream_init(struct cli_stream *s, FILE *out, const struct cli_text_opts *t, int in_think);
/* The same with "out is a terminal" given (tests). */
void cli_stream_init_ansi(struct cli_stream *s, FILE *out, const struct cli_text_opts *t, int in_think, int terminal);
/* Returns 1 once a stop string was seen (or memory ran out: s->oom). */
int cli_stream_push(struct cli_stream *s, const char *p, size_t n);
void cli_stream_finish(struct cli_stream *s);
void cli_stream_free(struct cli_stream *s);

enum cli_stop { CLI_STOP_EOS, CLI_STOP_STRING, CLI_STOP_LIMIT, CLI_STOP_CONTEXT, CLI_STOP_INTERRUPT, CLI_STOP_ERROR };
const char *cli_stop_note(enum cli_stop reason);

struct cli_gen_io {
    struct moe_context *c;     /* holds the prompt; its logits are where sampling starts */
    const struct moe_tokenizer *tok;
    struct moe_sampler *smp;
    int64_t n_vocab;           /* the model's (rows of the logits) */
    struct cli_ids *cache;     /* if not NULL: every evaluated token is appended */
    struct cli_ids *sampled;   /* if not NULL: every sampled token but the final end of sequence */
    volatile sig_atomic_t *interrupt; /* if not NULL and set: stop */
};
struct cli_gen_result {
    enum cli_stop reason;
    int64_t n_gen;             /* sampled tokens, the final end-of-sequence included */
    double t_gen;              /* seconds */
};
/* Sample, print and evaluate until end of sequence (EOS or the chat end
 * token), a stop string, t->n_predict tokens, a full context or an
 * interrupt.  Returns 0, or 1 after printing an error. */
int cli_generate(const char *cmd, const struct cli_gen_io *io, const struct cli_text_opts *t, struct cli_stream *st,
                 struct cli_gen_result *r);

char *cli_read_all(FILE *fp, size_t *len);
int cli_open_tokenizer(const char *cmd, const char *model, struct moe_tokenizer **tok);
int cli_check_vocab(const char *cmd, const struct moe_model *m, const int32_t *ids, int64_t n);
uint64_t cli_fresh_seed(void);

#endif
