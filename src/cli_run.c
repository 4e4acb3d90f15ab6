/*
 * src/cli_run.c — text generation on the command line: the text options,
 * the streaming output (UTF-8 safe through moe_detok, stop strings never
 * printed, R1 <think> sections shown, dimmed or hidden), the generation
 * loop shared with `moecpu chat`, `moecpu run` with a text prompt, and the
 * tokenizer step of `moecpu perplexity -f`.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_gen.h"

/* ---- options ------------------------------------------------------------- */

void cli_text_opts_init(struct cli_text_opts *t)
{
    memset(t, 0, sizeof *t);
    moe_sampler_params_init(&t->sp);
    t->think = CLI_THINK_DIM;
    t->n_predict = -1;
}

static int parse_float(const char *cmd, const char *opt, const char *val, double lo, double hi, float *out)
{
    char *end;
    errno = 0;
    const double x = strtod(val, &end);
    if (end == val || *end || errno == ERANGE || !(x >= lo && x <= hi)) {
        fprintf(stderr, "moecpu %s: %s '%s' must be a number in [%g, %g]\n", cmd, opt, val, lo, hi);
        return -1;
    }
    *out = (float)x;
    return 0;
}

static int parse_long(const char *cmd, const char *opt, const char *val, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    const long long x = strtoll(val, &end, 10);
    if (end == val || *end || errno == ERANGE || x < lo || x > hi) {
        fprintf(stderr, "moecpu %s: %s '%s' must be an integer in [%lld, %lld]\n", cmd, opt, val, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_text_option(const char *cmd, struct cli_text_opts *t, int argc, char **argv, int *i)
{
    const int run = !strcmp(cmd, "run"), chat = !strcmp(cmd, "chat"), ppl = !strcmp(cmd, "perplexity");
    if (!run && !chat && !ppl) return 0;
    const char *a = argv[*i];
    /* flags without a value */
    if (run && !strcmp(a, "--chat")) return t->chat = 1;
    if ((run || chat) && !strcmp(a, "--special")) return t->special = 1;
    if ((run || chat) && !strcmp(a, "--ignore-eos")) return t->ignore_eos = 1;
    if (run && !strcmp(a, "--no-parse-special")) return t->no_parse_special = 1;
    /* options with a value */
    static const char *const with_val[] = {"-p", "--prompt", "-f", "--file", "--system", "--think", "--stop",
                                           "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
                                           "--repeat-last-n", "--seed", "--save-turns"};
    int known = 0;
    for (size_t k = 0; k < sizeof with_val / sizeof *with_val; k++) known |= !strcmp(a, with_val[k]);
    if (!known) return 0;
    if (ppl && strcmp(a, "-f") && strcmp(a, "--file")) return 0;
    if (chat && (!strcmp(a, "-p") || !strcmp(a, "--prompt") || !strcmp(a, "-f") || !strcmp(a, "--file"))) {
        fprintf(stderr, "moecpu chat: %s is for 'moecpu run'; chat reads its turns from the terminal or stdin\n", a);
        return -1;
    }
    if (!strcmp(a, "--save-turns") && !chat) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "moecpu %s: option '%s' needs a value (try 'moecpu %s --help')\n", cmd, a, cmd);
        return -1;
    }
    const char *v = argv[++*i];
    long long x;
    if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) t->prompt = v;
    else if (!strcmp(a, "-f") || !strcmp(a, "--file")) t->file = v;
    else if (!strcmp(a, "--system")) t->system = v;
    else if (!strcmp(a, "--save-turns")) t->save_turns = v;
    else if (!strcmp(a, "--think")) {
        if (!strcmp(v, "show")) t->think = CLI_THINK_SHOW;
        else if (!strcmp(v, "dim")) t->think = CLI_THINK_DIM;
        else if (!strcmp(v, "hide")) t->think = CLI_THINK_HIDE;
        else {
            fprintf(stderr, "moecpu %s: --think '%s' unknown (show, dim or hide)\n", cmd, v);
            return -1;
        }
    } else if (!strcmp(a, "--stop")) {
        if (!*v) {
            fprintf(stderr, "moecpu %s: --stop needs a non-empty string\n", cmd);
            return -1;
        }
        if (t->n_stops == CLI_MAX_STOPS) {
            fprintf(stderr, "moecpu %s: at most %d --stop strings\n", cmd, CLI_MAX_STOPS);
            return -1;
        }
        t->stops[t->n_stops++] = v;
    } else if (!strcmp(a, "--temp")) {
        if (parse_float(cmd, a, v, 0, 1e6, &t->sp.temp)) return -1;
        t->temp_set = 1;
    } else if (!strcmp(a, "--top-k")) {
        if (parse_long(cmd, a, v, 0, INT_MAX, &x)) return -1;
        t->sp.top_k = (int)x;
    } else if (!strcmp(a, "--top-p")) {
        if (parse_float(cmd, a, v, 0, 1, &t->sp.top_p)) return -1;
    } else if (!strcmp(a, "--min-p")) {
        if (parse_float(cmd, a, v, 0, 1, &t->sp.min_p)) return -1;
    } else if (!strcmp(a, "--repeat-penalty")) {
        if (parse_float(cmd, a, v, 1e-3, 1e3, &t->sp.repeat_penalty)) return -1;
    } else if (!strcmp(a, "--repeat-last-n")) {
        if (parse_long(cmd, a, v, 0, 1 << 20, &x)) return -1;
        t->sp.repeat_last_n = (int)x;
    } else if (!strcmp(a, "--seed")) {
        if (parse_long(cmd, a, v, 0, LLONG_MAX, &x)) return -1;
        t->sp.seed = (uint64_t)x;
        t->seed_set = 1;
    }
    return 1;
}

void cli_text_help(FILE *f, const char *cmd)
{
    const int run = !strcmp(cmd, "run");
    if (run)
        fprintf(f,
                "  -p, --prompt TEXT the prompt\n"
                "  -f, --file FILE   read the prompt from FILE\n"
                "  --chat            wrap the prompt as one user turn of the model's chat template\n"
                "  --system TEXT     system prompt (with --chat)\n"
                "  --no-parse-special  special-token strings in the prompt stay plain text\n");
    else
        fprintf(f, "  --system TEXT     system prompt\n");
    fprintf(f,
            "  --stop STR        stop when the output contains STR (repeatable; STR is not printed)\n"
            "  --special         print special tokens (end of sentence, ...)\n"
            "  --ignore-eos      never sample end of sequence (generate until -n, a stop string or a full context)\n"
            "  --think MODE      R1 <think> sections: show, dim (faint on a terminal; default) or hide\n"
            "  sampling (applied in this order; llama.cpp's defaults):\n"
            "  --repeat-penalty X  divide positive / multiply negative logits of recent tokens (1 = off)\n"
            "  --repeat-last-n N   how many recent tokens the penalty looks at (64)\n"
            "  --top-k N         keep the N most likely tokens (40; 0 = off)\n"
            "  --top-p P         keep the most likely tokens up to probability mass P (0.95; 1 = off)\n"
            "  --min-p P         drop tokens below P x the top probability (0.05; 0 = off)\n"
            "  --temp T          temperature (0.8; 0 = greedy)\n"
            "  --seed N          random seed (default: a new one, printed at the end)\n");
    if (!run)
        fprintf(f, "  --save-turns DIR  write each turn's conversation ids and logits to DIR (tests)\n");
}

/* ---- helpers -------------------------------------------------------------- */

char *cli_read_all(FILE *fp, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            char *nb = cap < ((size_t)1 << 31) ? realloc(b, cap *= 2) : NULL;
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
        }
        const size_t r = fread(b + n, 1, cap - n - 1, fp);
        n += r;
        if (r == 0) break;
    }
    if (!b || ferror(fp)) {
        free(b);
        return NULL;
    }
    b[n] = 0;
    *len = n;
    return b;
}

int cli_open_tokenizer(const char *cmd, const char *model, struct moe_tokenizer **tok)
{
    char err[1024];
    if (access(model, F_OK) != 0) {
        fprintf(stderr, "moecpu %s: model '%s' not found: give -m a Hugging Face directory or a .gguf file\n", cmd,
                model);
        return 1;
    }
    if (moe_tokenizer_open(tok, model, err, sizeof err)) {
        fprintf(stderr,
                "moecpu %s: %s\n  (text needs the model's tokenizer: tokenizer.json beside config.json, or the "
                "tokenizer.ggml.* keys of a GGUF; with token ids use 'moecpu run --token-ids ... --print-ids')\n",
                cmd, err);
        return 1;
    }
    return 0;
}

/* The tokenizer's ids must exist in the model. */
int cli_check_vocab(const char *cmd, const struct moe_model *m, const int32_t *ids, int64_t n)
{
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= info.vocab_size) {
            fprintf(stderr,
                    "moecpu %s: the tokenizer gave id %d, but the model's vocabulary has %lld entries: the "
                    "tokenizer does not belong to this model\n",
                    cmd, (int)ids[i], (long long)info.vocab_size);
            return -1;
        }
    return 0;
}

void cli_print_timings(const char *cmd, const struct moe_model *m, const struct moe_context *c, int64_t n_prompt,
                       double t_prompt, int64_t n_gen, double t_gen, const char *extra)
{
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    fprintf(stderr,
            "moecpu %s: prompt %lld tokens, %.2f tok/s | generated %lld tokens, %.2f tok/s | KV cache %.2f MB "
            "(%lld/%lld tokens) | %s, %d threads%s%s\n",
            cmd, (long long)n_prompt, t_prompt > 0 ? (double)n_prompt / t_prompt : 0.0, (long long)n_gen,
            t_gen > 0 ? (double)n_gen / t_gen : 0.0, (double)moe_context_kv_bytes(c) / 1e6,
            (long long)moe_context_pos(c), (long long)moe_context_n_ctx(c), info.isa, info.n_threads,
            extra ? " | " : "", extra ? extra : "");
}

uint64_t cli_fresh_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x & 0x7fffffffffffffffull;   /* printable as a non-negative --seed */
}

/* ---- the generation loop -------------------------------------------------- */

int cli_generate(const char *cmd, const struct cli_gen_io *io, const struct cli_text_opts *t, struct cli_stream *st,
                 struct cli_gen_result *r)
{
    char err[1024];
    char buf[4096];
    struct moe_detok dt = {0};
    const int32_t eos = moe_tokenizer_eos(io->tok);
    const int32_t end = moe_tokenizer_find(io->tok, MOE_CHAT_END_TEXT);
    const int64_t V = io->n_vocab;
    float *masked = NULL;      /* --ignore-eos: the logits with EOS at -inf */
    if (t->ignore_eos && !(masked = malloc((size_t)V * sizeof *masked))) {
        fprintf(stderr, "moecpu %s: out of memory\n", cmd);
        return 1;
    }
    memset(r, 0, sizeof *r);
    const double t0 = cli_now();
    int rc = 0;
    for (;;) {
        if (io->interrupt && *io->interrupt) {
            r->reason = CLI_STOP_INTERRUPT;
            break;
        }
        if (t->n_predict >= 0 && r->n_gen >= t->n_predict) {
            r->reason = CLI_STOP_LIMIT;
            break;
        }
        const float *lg = moe_context_logits(io->c, NULL);
        if (!lg) {
            fprintf(stderr, "moecpu %s: no logits to sample from (empty prompt?)\n", cmd);
            rc = 1;
            break;
        }
        if (masked) {
            memcpy(masked, lg, (size_t)V * sizeof *masked);
            if (eos >= 0 && eos < V) masked[eos] = -INFINITY;
            if (end >= 0 && end < V) masked[end] = -INFINITY;
            lg = masked;
        }
        const int32_t id = moe_sampler_sample(io->smp, lg);
        moe_sampler_accept(io->smp, id);
        r->n_gen++;
        if ((eos >= 0 && id == eos) || (end >= 0 && id == end)) {
            if (t->special) {
                size_t w = moe_detok_push(&dt, io->tok, id, 1, buf, sizeof buf);
                cli_stream_push(st, buf, w);
            }
            r->reason = CLI_STOP_EOS;
            break;
        }
        if (io->sampled && cli_ids_push(io->sampled, id)) {
            fprintf(stderr, "moecpu %s: out of memory\n", cmd);
            rc = 1;
            break;
        }
        const size_t w = moe_detok_push(&dt, io->tok, id, t->special, buf, sizeof buf);
        if (cli_stream_push(st, buf, w)) {
            r->reason = st->oom ? CLI_STOP_ERROR : CLI_STOP_STRING;
            if (st->oom) {
                fprintf(stderr, "moecpu %s: out of memory\n", cmd);
                rc = 1;
            }
            break;
        }
        if (t->n_predict >= 0 && r->n_gen >= t->n_predict) {
            r->reason = CLI_STOP_LIMIT;
            break;
        }
        if (moe_context_pos(io->c) >= moe_context_n_ctx(io->c)) {
            r->reason = CLI_STOP_CONTEXT;
            break;
        }
        if (moe_context_eval(io->c, &id, 1, 0, err, sizeof err)) {
            fprintf(stderr, "\nmoecpu %s: %s\n", cmd, err);
            r->reason = CLI_STOP_ERROR;
            rc = 1;
            break;
        }
        if (io->cache && cli_ids_push(io->cache, id)) {
            fprintf(stderr, "moecpu %s: out of memory\n", cmd);
            rc = 1;
            break;
        }
    }
    const size_t w = moe_detok_flush(&dt, buf, sizeof buf);
    cli_stream_push(st, buf, w);
    cli_stream_finish(st);
    r->t_gen = cli_now() - t0;
    free(masked);
    return rc;
}

int cli_ids_push(struct cli_ids *v, int32_t id)
{
    if (v->n == v->cap) {
        const int64_t cap = v->cap ? 2 * v->cap : 256;
        int32_t *p = realloc(v->ids, (size_t)cap * sizeof *p);
        if (!p) return -1;
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

const char *cli_stop_note(enum cli_stop reason)
{
    switch (reason) {
    case CLI_STOP_EOS: return "end of sequence";
    case CLI_STOP_STRING: return "stop string";
    case CLI_STOP_LIMIT: return "-n limit";
    case CLI_STOP_CONTEXT: return "context full";
    case CLI_STOP_INTERRUPT: return "interrupted";
    default: return "error";
    }
}

/* ---- moecpu run (text) ------------------------------------------------------ */

int cli_run_text(const struct model_opts *o, struct cli_text_opts *t)
{
    const char *cmd = "run";
    if (t->prompt && t->file) {
        fprintf(stderr, "moecpu run: give -p PROMPT or -f FILE, not both\n");
        return 2;
    }
    if (t->system && !t->chat) {
        fprintf(stderr, "moecpu run: --system goes with --chat (a system prompt is part of the chat format)\n");
        return 2;
    }
    char *input = NULL;
    size_t in_len = 0;
    if (t->prompt) {
        input = strdup(t->prompt);
        in_len = strlen(t->prompt);
    } else {
        FILE *fp = stdin;
        if (t->file && !(fp = fopen(t->file, "rb"))) {
            fprintf(stderr, "moecpu run: cannot read '%s': %s\n", t->file, strerror(errno));
            return 1;
        }
        if (!t->file && isatty(STDIN_FILENO))
            fprintf(stderr, "moecpu run: reading the prompt from the terminal; end it with Ctrl-D (or use -p TEXT)\n");
        input = cli_read_all(fp, &in_len);
        if (t->file) fclose(fp);
    }
    if (!input) {
        fprintf(stderr, "moecpu run: cannot read the prompt (out of memory or a read error)\n");
        return 1;
    }
    struct moe_tokenizer *tok = NULL;
    struct moe_model *m = NULL;
    struct moe_context *c = NULL;
    struct moe_sampler *smp = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    char *text = NULL;
    char err[1024];
    int rc = cli_open_tokenizer(cmd, t->model, &tok);
    if (rc) goto done;
    rc = 1;
    struct moe_chat_format fmt = {0};
    if (t->chat) {
        if (moe_chat_format_init(&fmt, tok, err, sizeof err)) {
            fprintf(stderr, "moecpu run: %s\n", err);
            goto done;
        }
        struct moe_chat_msg msgs[2];
        int nm = 0;
        if (t->system) msgs[nm++] = (struct moe_chat_msg){MOE_CHAT_SYSTEM, t->system};
        msgs[nm++] = (struct moe_chat_msg){MOE_CHAT_USER, input};
        if (!(text = moe_chat_render(&fmt, msgs, nm, 1))) {
            fprintf(stderr, "moecpu run: out of memory\n");
            goto done;
        }
        if (moe_tokenizer_encode(tok, text, strlen(text), MOE_TOK_PARSE_SPECIAL, &ids, &n, err, sizeof err)) {
            fprintf(stderr, "moecpu run: %s\n", err);
            goto done;
        }
    } else {
        const unsigned fl = (moe_tokenizer_add_bos(tok) ? MOE_TOK_ADD_BOS : 0) |
                            (t->no_parse_special ? 0 : MOE_TOK_PARSE_SPECIAL);
        if (moe_tokenizer_encode(tok, input, in_len, fl, &ids, &n, err, sizeof err)) {
            fprintf(stderr, "moecpu run: %s\n", err);
            goto done;
        }
    }
    if (n == 0) {
        fprintf(stderr, "moecpu run: the prompt is empty and the model has no BOS token to start from; give some "
                        "text with -p\n");
        goto done;
    }
    /* without --ctx: room for the prompt and -n tokens, or 4096 */
    int64_t want = n;
    if (t->ctx <= 0) want = t->n_predict >= 0 ? n + t->n_predict : (n + 1 > 4096 ? n + 1 : 4096);
    if ((rc = cli_open_model(cmd, o, want, &m, &c))) goto done;
    rc = 1;
    if (cli_check_vocab(cmd, m, ids, n)) goto done;
    if (!t->seed_set) t->sp.seed = cli_fresh_seed();
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    if (moe_sampler_new(&smp, (int32_t)info.vocab_size, &t->sp, err, sizeof err)) {
        fprintf(stderr, "moecpu run: %s\n", err);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) moe_sampler_accept(smp, ids[i]);
    const double t0 = cli_now();
    if (moe_context_eval(c, ids, n, 0, err, sizeof err)) {
        fprintf(stderr, "moecpu run: %s\n", err);
        goto done;
    }
    const double t_prompt = cli_now() - t0;
    struct cli_stream st;
    cli_stream_init(&st, stdout, t, t->chat && fmt.think_prompt);
    struct cli_gen_io io = {c, tok, smp, info.vocab_size, NULL, NULL, NULL};
    struct cli_gen_result r;
    rc = cli_generate(cmd, &io, t, &st, &r);
    cli_stream_free(&st);
    if (isatty(STDOUT_FILENO)) fputc('\n', stdout);
    if (fflush(stdout) != 0) rc = 1;
    if (r.reason == CLI_STOP_CONTEXT)
        fprintf(stderr, "moecpu run: the context is full (%lld tokens): generation stopped; raise --ctx for longer "
                        "output\n", (long long)moe_context_n_ctx(c));
    char extra[96];
    snprintf(extra, sizeof extra, "stopped by %s | seed %llu", cli_stop_note(r.reason),
             (unsigned long long)t->sp.seed);
    cli_print_timings(cmd, m, c, n, t_prompt, r.n_gen, r.t_gen, extra);
done:
    moe_sampler_free(smp);
    free(ids);
    free(text);
    free(input);
    moe_context_free(c);
    cli_close_model(cmd, o, m);
    moe_tokenizer_free(tok);
    return rc;
}

/* ---- perplexity -f ---------------------------------------------------------- */

int cli_tokenize_file(const char *cmd, const char *model, const char *path, int32_t **ids, int64_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "moecpu %s: cannot read '%s': %s\n", cmd, path, strerror(errno));
        return 1;
    }
    size_t len;
    char *text = cli_read_all(fp, &len);
    fclose(fp);
    if (!text) {
        fprintf(stderr, "moecpu %s: cannot read '%s' (out of memory or a read error)\n", cmd, path);
        return 1;
    }
    struct moe_tokenizer *tok;
    int rc = cli_open_tokenizer(cmd, model, &tok);
    if (!rc) {
        char err[1024];
        if (moe_tokenizer_encode(tok, text, len, moe_tokenizer_add_bos(tok) ? MOE_TOK_ADD_BOS : 0, ids, n, err,
                                 sizeof err)) {
            fprintf(stderr, "moecpu %s: %s\n", cmd, err);
            rc = 1;
        } else {
            fprintf(stderr, "moecpu %s: '%s': %zu bytes, %lld tokens\n", cmd, path, len, (long long)*n);
        }
        moe_tokenizer_free(tok);
    }
    free(text);
    return rc;
}
