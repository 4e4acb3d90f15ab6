/*
 * src/cli_pager.h — the expert pager's command-line options, shared by
 * `moecpu run`, `eval`, `perplexity` and `bench -m`: parsing, help text,
 * applying them to the model parameters, and the --pager-stats report.
 */
#ifndef MOE_CLI_PAGER_H
#define MOE_CLI_PAGER_H

#include <stddef.h>
#include <stdio.h>

#include "moecpu.h"

struct moe_cli_pager {
    int mode;                  /* enum moe_pager_mode (0: auto) */
    size_t budget;             /* --mem-budget bytes, 0: none */
    int policy, lookahead, io_threads, slot_prefault;
    const char *trace;         /* --trace-routing FILE */
    int stats;                 /* --pager-stats */
};

/* All zero is the default. */
void moe_cli_pager_init(struct moe_cli_pager *o);
/* arg (with the next argument val, NULL when none) one of the pager
 * options?  Returns the arguments used (1 or 2), 0 when arg is not a pager
 * option, -1 after printing an error for a bad value. */
int moe_cli_pager_parse(const char *cmd, struct moe_cli_pager *o, const char *arg, const char *val);
void moe_cli_pager_apply(const struct moe_cli_pager *o, struct moe_model_params *mp);
/* The options' help lines. */
void moe_cli_pager_help(FILE *f);
/* With --pager-stats: per-batch lines and totals on stderr. */
void moe_cli_pager_report(const struct moe_cli_pager *o, const struct moe_model *m, const char *cmd);

/* "8G", "512M", "1.5GiB", "4096" (bytes; K/M/G/T are powers of 1024).
 * 0 on success, -1 when malformed or out of range. */
int moe_parse_size(const char *s, size_t *out);

#endif
