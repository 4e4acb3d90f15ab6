/*
 * src/cli.h — what the text commands (src/cli_run.c: run, perplexity -f;
 * src/cli_chat.c: chat) share with main.c.  main.c parses the common model
 * options into its private struct model_opts and hands text options to
 * cli_text_option(); the commands open the model through cli_open_model().
 */
#ifndef MOECPU_CLI_H
#define MOECPU_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "moecpu.h"

#define CLI_MAX_STOPS 16

enum cli_think { CLI_THINK_SHOW = 0, CLI_THINK_DIM = 1, CLI_THINK_HIDE = 2 };

/* Options of text input/output (run, chat, perplexity -f). */
struct cli_text_opts {
    const char *prompt;        /* -p TEXT */
    const char *file;          /* -f FILE (run: the prompt; perplexity: the text) */
    const char *system;        /* --system TEXT */
    int chat;                  /* run --chat */
    int special;               /* --special: print special tokens */
    int no_parse_special;      /* --no-parse-special: special-token strings in the prompt are plain text */
    int ignore_eos;            /* --ignore-eos: end-of-sequence tokens are never sampled */
    enum cli_think think;      /* --think show|dim|hide (default dim) */
    const char *stops[CLI_MAX_STOPS];
    int n_stops;
    struct moe_sampler_params sp;
    int temp_set;              /* --temp given */
    int seed_set;              /* --seed given */
    const char *save_turns;    /* chat --save-turns DIR (tests, debugging) */
    /* copied from the common options by main.c */
    const char *model;
    int n_predict;             /* -n; < 0: until end of sequence or a full context */
    int n_predict_set;
    long long ctx;             /* --ctx; 0: default */
    int batch;
};

void cli_text_opts_init(struct cli_text_opts *t);
/* Consume argv[*i] (and its value, advancing *i) when it is a text option
 * of command cmd.  Returns 1 consumed, 0 not a text option, -1 bad value
 * (message printed). */
int cli_text_option(const char *cmd, struct cli_text_opts *t, int argc, char **argv, int *i);
/* Help lines of the text options, for run_help/chat_help. */
void cli_text_help(FILE *f, const char *cmd);

/* main.c: open the model and a context for n_tokens (or --ctx); prints the
 * error and returns the exit code on failure. */
struct model_opts;
int cli_open_model(const char *cmd, const struct model_opts *o, int64_t n_tokens, struct moe_model **m,
                   struct moe_context **c);
/* main.c: --pager-stats totals (when asked for), then the model is freed (m may be NULL). */
void cli_close_model(const char *cmd, const struct model_opts *o, struct moe_model *m);
double cli_now(void);

/* The commands; each returns the process exit code. */
int cli_run_text(const struct model_opts *o, struct cli_text_opts *t);
int cli_chat(const struct model_opts *o, struct cli_text_opts *t);
/* perplexity -f: the file's text encoded with the model's tokenizer (BOS
 * first when the model adds one); *ids malloc'd.  Returns an exit code. */
int cli_tokenize_file(const char *cmd, const char *model, const char *path, int32_t **ids, int64_t *n);
/* main.c: token ids "1,2,3" (commas and/or spaces) into *out (malloc'd);
 * errors name the entry of `what` (the option or file).  Returns 0 or -1
 * (message printed). */
int cli_parse_ids(const char *cmd, const char *what, const char *s, int32_t **out, int64_t *n);
/* main.c: a file of token ids separated by commas and/or white space, as
 * the text cli_parse_ids takes (malloc'd); NULL (message printed) if it
 * cannot be read or holds none. */
char *cli_read_ids_file(const char *cmd, const char *path);
/* main.c: every id below the model's vocabulary size; else prints which
 * entry of `what` is not and returns -1. */
int cli_check_ids(const char *cmd, const char *what, const struct moe_model *m, const int32_t *ids, int64_t n);
/* The closing statistics line on stderr. */
void cli_print_timings(const char *cmd, const struct moe_model *m, const struct moe_context *c, int64_t n_prompt,
                       double t_prompt, int64_t n_gen, double t_gen, const char *extra);

#endif
