/*
 * src/main.c — the moecpu command line: dispatches subcommands.
 * Only this file exits the process.
 */
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../bench/bench.h"
#include "../simd/kernels.h"
#include "cli.h"
#include "cli_pager.h"
#include "moecpu.h"
#include "model_files.h"
#include "threads.h"

#define MOECPU_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "moecpu %s — CPU inference for DeepSeek-style Mixture-of-Experts models\n"
            "\n"
            "usage: moecpu <command> [options]\n"
            "\n"
            "commands:\n"
            "  info            CPU, its SIMD features, the kernel tables and which one is used\n"
            "  run             generate text from a prompt (-p, -f or stdin; --chat for one chat turn)\n"
            "  chat            interactive multi-turn chat\n"
            "  perplexity      perplexity of a text file (-f) or of token ids\n"
            "  eval            teacher-forced logits of a token sequence, written to a file\n"
            "  tokenize        text on stdin to token ids with the model's tokenizer (and --decode back)\n"
            "  bench -m MODEL  prompt and generation tokens/s, and the decode bandwidth bound\n"
            "  bench kernels   GEMV/GEMM speed of every kernel table and weight type\n"
            "  bench tokenizer encode speed of a model's tokenizer\n"
            "  bench pager-replay  hit rates of the pager's eviction policies on a routing trace\n"
            "  help            this text\n"
            "\n"
            "environment:\n"
            "  MOECPU_ISA=NAME force a kernel table (scalar, avx2, avx512, avx512_vnni, neon,\n"
            "                  neon_dotprod); naming one this CPU cannot run is an error\n"
            "\n"
            "Run 'moecpu <command> --help' for a command's options.\n",
            MOECPU_VERSION);
}

static long cache_size(int level)
{
#ifdef _SC_LEVEL2_CACHE_SIZE
    long v = sysconf(level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
    return v > 0 ? v : 0;
#else
    (void)level;
    return 0;
#endif
}

static int cmd_info(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: moecpu info\n  Prints the CPU, its SIMD features, every kernel table built into this binary\n"
                   "  with whether this CPU can run it, and the table that will be used\n"
                   "  (the best runnable one, or MOECPU_ISA).\n");
            return 0;
        }
        fprintf(stderr, "moecpu info: unexpected argument '%s' (try 'moecpu info --help')\n", argv[i]);
        return 2;
    }
    printf("cpu:        %s\n", moe_cpu_name());
    printf("cores:      %d physical, %ld logical\n", moe_physical_cores(), sysconf(_SC_NPROCESSORS_ONLN));
    long l2 = cache_size(2), l3 = cache_size(3);
    if (l2 || l3)
        printf("caches:     L2 %ld KiB, L3 %ld KiB\n", l2 >> 10, l3 >> 10);
    int nf;
    const struct moe_cpu_feature *f = moe_cpu_features(&nf);
    printf("features:  ");
    for (int i = 0; i < nf; i++)
        printf(" %s%s", f[i].present ? "+" : "-", f[i].name);
    printf("\n\nkernel tables (best first):\n");
    int n;
    const struct moe_isa_entry *e = moe_isa_list(&n);
    for (int i = 0; i < n; i++)
        printf("  %-14s %-9s needs %s\n", e[i].k->name, e[i].runnable ? "runnable" : "NOT here", e[i].needs);
    char err[256];
    const struct moe_kernels *k = moe_kernels_get(err, sizeof err);
    if (!k) {
        fprintf(stderr, "moecpu: %s\n", err);
        return 1;
    }
    const char *forced = getenv("MOECPU_ISA");
    printf("\nselected:   %s%s\n", k->name, forced && *forced ? " (forced by MOECPU_ISA)" : "");
    return 0;
}

/* ---- eval and run: shared options, model loading with progress */

struct model_opts {
    const char *model, *ids, *ids_file, *logits_out, *isa;
    int threads, batch, n_predict, print_ids;
    long long ctx;
    enum moe_kv_type kv_type;
    struct cli_text_opts text; /* run, chat, perplexity -f (src/cli.h) */
    struct moe_cli_pager pager;
};

/* Parse "1,2,3" into *out (malloc'd).  Non-numbers, negatives and values
 * beyond int32 are errors naming the offending entry of `what` (the
 * option or file the ids came from). */
int cli_parse_ids(const char *cmd, const char *what, const char *s, int32_t **out, int64_t *n)
{
    size_t cap = 16, cnt = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) {
        fprintf(stderr, "moecpu %s: out of memory\n", cmd);
        return -1;
    }
    const char *p = s;
    for (;;) {
        while (*p == ' ') p++;
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || (*end && *end != ',' && *end != ' ')) {
            fprintf(stderr, "moecpu %s: %s entry %zu ('%.20s') is not a number; give comma-separated ids like 1,2,3\n",
                    cmd, what, cnt + 1, p);
            free(v);
            return -1;
        }
        if (x < 0 || x > INT32_MAX || errno == ERANGE) {
            fprintf(stderr, "moecpu %s: %s entry %zu (%.20s) must be a non-negative token id\n", cmd, what, cnt + 1, p);
            free(v);
            return -1;
        }
        if (cnt == cap) {
            int32_t *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) {
                free(v);
                fprintf(stderr, "moecpu %s: out of memory\n", cmd);
                return -1;
            }
            v = nv;
            cap *= 2;
        }
        v[cnt++] = (int32_t)x;
        p = end;
        while (*p == ' ') p++;
        if (!*p) break;
        p++;                   /* ',' */
    }
    *out = v;
    *n = (int64_t)cnt;
    return 0;
}

static int parse_int_opt(const char *cmd, const char *opt, const char *val, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(val, &end, 10);
    if (end == val || *end || errno == ERANGE || x < lo || x > hi) {
        fprintf(stderr, "moecpu %s: %s '%s' must be an integer in [%lld, %lld]\n", cmd, opt, val, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* Returns 0 ok, 1 help printed, 2 usage error (message printed). */
static int parse_model_opts(const char *cmd, int argc, char **argv, struct model_opts *o, void (*help)(FILE *))
{
    memset(o, 0, sizeof *o);
    o->kv_type = MOE_KV_F32;
    o->n_predict = 32;
    cli_text_opts_init(&o->text);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return 1;
        }
        const int pc = moe_cli_pager_parse(cmd, &o->pager, a, val);
        if (pc < 0) return 2;
        if (pc > 0) {
            i += pc - 1;
            continue;
        }
        if (!strcmp(a, "--print-ids")) {
            o->print_ids = 1;
            continue;
        }
        const int tr = cli_text_option(cmd, &o->text, argc, argv, &i);
        if (tr < 0) return 2;
        if (tr) continue;
        if (!val) {
            fprintf(stderr, "moecpu %s: unknown or incomplete option '%s' (try 'moecpu %s --help')\n", cmd, a, cmd);
            return 2;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = val;
        else if (!strcmp(a, "--token-ids")) o->ids = val;
        else if (!strcmp(a, "--token-ids-file") && !strcmp(cmd, "perplexity")) o->ids_file = val;
        else if (!strcmp(a, "--logits-out") && !strcmp(cmd, "eval")) o->logits_out = val;
        else if (!strcmp(a, "--isa")) o->isa = val;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (parse_int_opt(cmd, a, val, 1, 1024, &x)) return 2;
            o->threads = (int)x;
        } else if (!strcmp(a, "--ctx")) {
            if (parse_int_opt(cmd, a, val, 1, (long long)1 << 30, &x)) return 2;
            o->ctx = x;
        } else if (!strcmp(a, "--batch")) {
            if (parse_int_opt(cmd, a, val, 1, 4096, &x)) return 2;
            o->batch = (int)x;
        } else if (!strcmp(a, "-n") && (!strcmp(cmd, "run") || !strcmp(cmd, "chat"))) {
            if (parse_int_opt(cmd, a, val, 0, 1 << 30, &x)) return 2;
            o->n_predict = (int)x;
            o->text.n_predict_set = 1;
        } else if (!strcmp(a, "--kv-type")) {
            if (!strcmp(val, "f32")) o->kv_type = MOE_KV_F32;
            else if (!strcmp(val, "bf16")) o->kv_type = MOE_KV_BF16;
            else {
                fprintf(stderr, "moecpu %s: --kv-type '%s' unknown (f32 or bf16)\n", cmd, val);
                return 2;
            }
        } else {
            fprintf(stderr, "moecpu %s: unknown option '%s' (try 'moecpu %s --help')\n", cmd, a, cmd);
            return 2;
        }
    }
    if (!o->model) {
        fprintf(stderr, "moecpu %s: -m MODEL is required (a Hugging Face directory or a .gguf file)\n", cmd);
        return 2;
    }
    o->text.model = o->model;
    o->text.n_predict = o->text.n_predict_set ? o->n_predict : -1;
    o->text.ctx = o->ctx;
    o->text.batch = o->batch;
    if (!strcmp(cmd, "run") || !strcmp(cmd, "chat") || (!strcmp(cmd, "perplexity") && o->text.file)) {
        if (o->ids && o->text.file) {
            fprintf(stderr, "moecpu %s: give --token-ids or -f FILE, not both\n", cmd);
            return 2;
        }
        return 0;              /* text input */
    }
    if (!o->ids && !o->ids_file) {
        fprintf(stderr, "moecpu %s: --token-ids 1,2,3%s is required\n", cmd,
                !strcmp(cmd, "perplexity") ? ", --token-ids-file FILE or -f TEXTFILE" : "");
        return 2;
    }
    if (o->ids && o->ids_file) {
        fprintf(stderr, "moecpu %s: give --token-ids or --token-ids-file, not both\n", cmd);
        return 2;
    }
    return 0;
}

/* Read a file of token ids separated by commas and/or white space into the
 * "1,2,3" form cli_parse_ids takes (malloc'd). */
char *cli_read_ids_file(const char *cmd, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "moecpu %s: cannot read '%s': %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int ch, sep = 1;   /* collapse runs of separators into one comma */
    while (buf && (ch = fgetc(fp)) != EOF) {
        const int is_sep = ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
        if (is_sep && sep) continue;
        if (len + 2 > cap) {
            char *nb = cap < ((size_t)1 << 30) ? realloc(buf, cap *= 2) : NULL;
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
        }
        buf[len++] = is_sep ? ',' : (char)ch;
        sep = is_sep;
    }
    fclose(fp);
    if (!buf) {
        fprintf(stderr, "moecpu %s: '%s' is too large to read\n", cmd, path);
        return NULL;
    }
    if (len && buf[len - 1] == ',') len--;
    buf[len] = 0;
    if (!len) {
        fprintf(stderr, "moecpu %s: '%s' holds no token ids\n", cmd, path);
        free(buf);
        return NULL;
    }
    return buf;
}

struct load_progress {
    double t0;
    int shown;
};

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Shown on a terminal only, once loading has taken more than a second. */
static void on_progress(void *user, const char *stage, double f)
{
    struct load_progress *lp = user;
    if (!isatty(STDERR_FILENO) || now_sec() - lp->t0 < 1.0) return;
    fprintf(stderr, "\rloading: %-20s %3d%%", stage, (int)(f * 100.0 + 0.5));
    lp->shown = 1;
}

/* Open the model and a context for n_tokens; prints the error and returns
 * the exit code on failure. */
static int open_model(const char *cmd, const struct model_opts *o, int64_t n_tokens, struct moe_model **m,
                      struct moe_context **c)
{
    char err[1024];
    struct load_progress lp = {now_sec(), 0};
    struct moe_model_params mp;
    moe_model_params_init(&mp);
    mp.isa = o->isa;
    mp.n_threads = o->threads;
    mp.progress = on_progress;
    mp.progress_user = &lp;
    moe_cli_pager_apply(&o->pager, &mp);
    if (access(o->model, F_OK) != 0) {
        fprintf(stderr, "moecpu %s: model '%s' not found: give -m a Hugging Face directory or a .gguf file\n", cmd,
                o->model);
        return 1;
    }
    int rc = moe_model_open(m, o->model, &mp, err, sizeof err);
    if (lp.shown) fprintf(stderr, "\n");
    if (rc) {
        fprintf(stderr, "moecpu %s: %s\n", cmd, err);
        return 1;
    }
    struct moe_context_params cp;
    moe_context_params_init(&cp);
    cp.n_ctx = o->ctx > 0 ? o->ctx : n_tokens;
    cp.kv_type = o->kv_type;
    cp.n_batch = o->batch;
    if (cp.n_ctx < n_tokens) {
        fprintf(stderr, "moecpu %s: %lld tokens do not fit in a context of %lld (raise --ctx or shorten the input)\n",
                cmd, (long long)n_tokens, (long long)cp.n_ctx);
        moe_model_free(*m);
        return 1;
    }
    if ((rc = moe_context_new(c, *m, &cp, err, sizeof err))) {
        fprintf(stderr, "moecpu %s: %s\n", cmd, err);
        moe_model_free(*m);
        return 1;
    }
    struct moe_model_info info;
    moe_model_get_info(*m, &info);
    fprintf(stderr,
            "moecpu %s: %s (%s %s): %d layers (%d dense), %d routed experts, vocab %lld, %.1f MiB of weights; "
            "kernels %s, %d threads; KV cache %.2f MiB (%s, %lld tokens)\n",
            cmd, o->model, info.format, info.model_type, info.n_layers, info.n_dense_layers, info.n_routed_experts,
            (long long)info.vocab_size, (double)info.weight_bytes / 1048576.0, info.isa, info.n_threads,
            (double)moe_context_kv_bytes(*c) / 1048576.0, o->kv_type == MOE_KV_BF16 ? "bf16" : "f32",
            (long long)moe_context_n_ctx(*c));
    return 0;
}

int cli_open_model(const char *cmd, const struct model_opts *o, int64_t n_tokens, struct moe_model **m,
                   struct moe_context **c)
{
    const int rc = open_model(cmd, o, n_tokens, m, c);
    if (rc) *m = NULL, *c = NULL;   /* open_model freed what it had opened */
    return rc;
}

void cli_close_model(const char *cmd, const struct model_opts *o, struct moe_model *m)
{
    if (m) moe_cli_pager_report(&o->pager, m, cmd);
    moe_model_free(m);
}

double cli_now(void) { return now_sec(); }

int cli_check_ids(const char *cmd, const char *what, const struct moe_model *m, const int32_t *ids, int64_t n)
{
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] >= info.vocab_size) {
            fprintf(stderr, "moecpu %s: token id %d (entry %lld of %s) is not below the vocabulary size %lld\n",
                    cmd, (int)ids[i], (long long)i + 1, what, (long long)info.vocab_size);
            return -1;
        }
    return 0;
}

static void eval_help(FILE *f)
{
    fprintf(f,
            "usage: moecpu eval -m MODEL --token-ids 1,2,3 --logits-out FILE [options]\n"
            "  Runs the model over the ids teacher-forced from position 0 and writes the logits of\n"
            "  every position: n_ids x vocab float32, little-endian, row by row (written to FILE.tmp,\n"
            "  then renamed).\n"
            "  -m MODEL          Hugging Face directory (config.json + safetensors) or a GGUF file\n"
            "  --token-ids IDS   comma-separated token ids\n"
            "  --logits-out FILE where the logits go\n"
            "  --isa NAME        kernel table (scalar, avx2, avx512, avx512_vnni, neon, neon_dotprod)\n"
            "  -t N              threads (default: physical cores)\n"
            "  --ctx N           KV cache size in tokens (default: the number of ids)\n"
            "  --kv-type T       KV cache type: f32 (default) or bf16\n"
            "  --batch N         tokens per prefill batch (default 512)\n");
    moe_cli_pager_help(f);
}

static void run_help(FILE *f)
{
    fprintf(f,
            "usage: moecpu run -m MODEL [-p PROMPT | -f FILE] [--chat] [options]   (no -p/-f: the prompt is stdin)\n"
            "       moecpu run -m MODEL --token-ids 1,2,3 [-n 32] --print-ids [options]\n"
            "  Encodes the prompt with the model's tokenizer (BOS first when the model adds one;\n"
            "  special-token strings in it are parsed as special tokens) and streams the continuation\n"
            "  until end of sequence, a stop string, -n tokens or a full context.\n"
            "  With --token-ids: the ids are the prompt; -n ids (default 32, greedy unless --temp) are\n"
            "  printed space-separated on one line; end of sequence does not stop it.\n"
            "  -m MODEL          Hugging Face directory (config.json + safetensors + tokenizer.json) or GGUF\n"
            "  -n N              tokens to generate (text default: until end of sequence or full context)\n");
    cli_text_help(f, "run");
    fprintf(f,
            "  --isa NAME        kernel table (scalar, avx2, avx512, avx512_vnni, neon, neon_dotprod)\n"
            "  -t N              threads (default: physical cores)\n"
            "  --ctx N           KV cache size in tokens (default: prompt + n, or 4096 without -n)\n"
            "  --kv-type T       KV cache type: f32 (default) or bf16\n"
            "  --batch N         tokens per prefill batch (default 64)\n"
            "  A full context stops generation with a note on stderr and exit status 0.\n"
            "  The last stderr line gives prompt and generation tokens/s, KV cache MB and the kernels.\n");
}

static void chat_help(FILE *f)
{
    fprintf(f,
            "usage: moecpu chat -m MODEL [--system TEXT] [options]\n"
            "  Interactive chat in the model's DeepSeek V3/R1 chat format.  Earlier turns stay in the\n"
            "  KV cache: each turn evaluates only its new tokens.  Type /help for commands\n"
            "  (/reset, /exit).  Ctrl-C stops the current answer; Ctrl-C at the prompt (or twice\n"
            "  quickly) exits.  On a terminal lines are edited with libedit (history: up/down);\n"
            "  otherwise stdin is read line by line, one user turn per line.\n"
            "  -m MODEL          Hugging Face directory (config.json + safetensors + tokenizer.json) or GGUF\n"
            "  -n N              at most N tokens per answer (default: until end of sequence)\n");
    cli_text_help(f, "chat");
    fprintf(f,
            "  --isa NAME        kernel table (scalar, avx2, avx512, avx512_vnni, neon, neon_dotprod)\n"
            "  -t N              threads (default: physical cores)\n"
            "  --ctx N           KV cache size in tokens (default 4096)\n"
            "  --kv-type T       KV cache type: f32 (default) or bf16\n"
            "  --batch N         tokens per prefill batch (default 512)\n");
    moe_cli_pager_help(f);
}

/* Little-endian float32 rows. */
static void write_floats(struct moe_tmpfile *f, const float *v, size_t n)
{
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    if (first) {
        moe_tmpfile_write(f, v, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                              (unsigned char)(u >> 24)};
        moe_tmpfile_write(f, b, 4);
    }
}

static int cmd_eval(int argc, char **argv)
{
    struct model_opts o;
    int rc = parse_model_opts("eval", argc, argv, &o, eval_help);
    if (rc) return rc == 1 ? 0 : rc;
    if (!o.logits_out) {
        fprintf(stderr, "moecpu eval: --logits-out FILE is required (where the n_ids x vocab float32 logits go)\n");
        return 2;
    }
    int32_t *ids;
    int64_t n;
    if (cli_parse_ids("eval", "--token-ids", o.ids, &ids, &n)) return 2;
    struct moe_model *m;
    struct moe_context *c;
    if ((rc = open_model("eval", &o, n, &m, &c))) {
        free(ids);
        return rc;
    }
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    char err[1024];
    struct moe_tmpfile out;
    bool out_open = false;
    rc = 1;
    if (cli_check_ids("eval", "--token-ids", m, ids, n)) goto done;
    if (moe_tmpfile_open(&out, o.logits_out, err, sizeof err)) {
        fprintf(stderr, "moecpu eval: %s (check the directory exists and is writable)\n", err);
        goto done;
    }
    out_open = true;
    /* In batch-sized pieces so the logits of a long input never sit in memory at once. */
    const int64_t step = o.batch > 0 ? o.batch : 512;
    for (int64_t i = 0; i < n; i += step) {
        const int64_t cnt = n - i < step ? n - i : step;
        if (moe_context_eval(c, ids + i, cnt, 1, err, sizeof err)) {
            fprintf(stderr, "moecpu eval: %s\n", err);
            goto done;
        }
        int64_t rows;
        const float *lg = moe_context_logits(c, &rows);
        write_floats(&out, lg, (size_t)rows * (size_t)info.vocab_size);
    }
    out_open = false;
    if (moe_tmpfile_commit(&out, err, sizeof err)) {
        fprintf(stderr, "moecpu eval: %s\n", err);
        goto done;
    }
    rc = 0;
done:
    if (out_open) moe_tmpfile_abort(&out);
    free(ids);
    moe_context_free(c);
    cli_close_model("eval", &o, m);
    return rc;
}

static int cmd_run(int argc, char **argv)
{
    struct model_opts o;
    int rc = parse_model_opts("run", argc, argv, &o, run_help);
    if (rc) return rc == 1 ? 0 : rc;
    if (!o.ids) {
        if (o.print_ids) {
            fprintf(stderr, "moecpu run: --print-ids goes with --token-ids (text prompts print text)\n");
            return 2;
        }
        return cli_run_text(&o, &o.text);
    }
    if (!o.print_ids) {
        fprintf(stderr, "moecpu run: with --token-ids add --print-ids (generated ids are printed, not text)\n");
        return 2;
    }
    if (!o.text.temp_set) o.text.sp.temp = 0;   /* ids mode: greedy unless --temp */
    int32_t *ids;
    int64_t n;
    if (cli_parse_ids("run", "--token-ids", o.ids, &ids, &n)) return 2;
    struct moe_model *m;
    struct moe_context *c;
    /* the last generated token is never fed back */
    const int64_t need = n + (o.n_predict > 0 ? o.n_predict - 1 : 0);
    if ((rc = open_model("run", &o, need, &m, &c))) {
        free(ids);
        return rc;
    }
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    char err[1024];
    struct moe_sampler *smp = NULL;
    rc = 1;
    if (cli_check_ids("run", "--token-ids", m, ids, n)) goto done;
    if (moe_sampler_new(&smp, (int32_t)info.vocab_size, &o.text.sp, err, sizeof err)) {
        fprintf(stderr, "moecpu run: %s\n", err);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) moe_sampler_accept(smp, ids[i]);
    const double t0 = now_sec();
    if (moe_context_eval(c, ids, n, 0, err, sizeof err)) {
        fprintf(stderr, "moecpu run: %s\n", err);
        goto done;
    }
    const double t1 = now_sec();
    for (int i = 0; i < o.n_predict; i++) {
        const float *lg = moe_context_logits(c, NULL);
        int32_t best = moe_sampler_sample(smp, lg);
        moe_sampler_accept(smp, best);
        printf(i ? " %d" : "%d", (int)best);
        if (i + 1 < o.n_predict && moe_context_eval(c, &best, 1, 0, err, sizeof err)) {
            printf("\n");
            fprintf(stderr, "moecpu run: %s\n", err);
            goto done;
        }
    }
    printf("\n");
    rc = fflush(stdout) == 0 ? 0 : 1;
    cli_print_timings("run", m, c, n, t1 - t0, o.n_predict, now_sec() - t1, NULL);
done:
    moe_sampler_free(smp);
    free(ids);
    moe_context_free(c);
    cli_close_model("run", &o, m);
    return rc;
}

static int cmd_chat(int argc, char **argv)
{
    struct model_opts o;
    int rc = parse_model_opts("chat", argc, argv, &o, chat_help);
    if (rc) return rc == 1 ? 0 : rc;
    if (o.ids || o.print_ids) {
        fprintf(stderr, "moecpu chat: token ids are for 'moecpu run --token-ids'; chat reads text\n");
        return 2;
    }
    return cli_chat(&o, &o.text);
}

static void perplexity_help(FILE *f)
{
    fprintf(f,
            "usage: moecpu perplexity -m MODEL (-f TEXTFILE | --token-ids-file FILE | --token-ids 1,2,3) [options]\n"
            "  Teacher-forces the ids from position 0 and prints the perplexity exp(mean NLL) of\n"
            "  predicting each id from the ones before it (n_ids - 1 predictions).\n"
            "  -m MODEL               Hugging Face directory (config.json + safetensors) or a GGUF file\n"
            "  -f TEXTFILE            a text file, encoded with the model's tokenizer (BOS first when\n"
            "                         the model adds one; special-token strings are plain text)\n"
            "  --token-ids-file FILE  ids separated by commas and/or white space\n"
            "  --token-ids IDS        comma-separated ids\n"
            "  --isa NAME             kernel table (scalar, avx2, avx512, avx512_vnni, neon, neon_dotprod)\n"
            "  -t N                   threads (default: physical cores)\n"
            "  --ctx N                KV cache size in tokens (default: the number of ids)\n"
            "  --kv-type T            KV cache type: f32 (default) or bf16\n"
            "  --batch N              tokens per prefill batch (default 512)\n");
    moe_cli_pager_help(f);
}

static int cmd_perplexity(int argc, char **argv)
{
    struct model_opts o;
    int rc = parse_model_opts("perplexity", argc, argv, &o, perplexity_help);
    if (rc) return rc == 1 ? 0 : rc;
    int32_t *ids;
    int64_t n;
    if (o.text.file) {
        if ((rc = cli_tokenize_file("perplexity", o.model, o.text.file, &ids, &n))) return rc;
    } else {
        char *text = o.ids_file ? cli_read_ids_file("perplexity", o.ids_file) : NULL;
        if (o.ids_file && !text) return 1;
        rc = cli_parse_ids("perplexity", text ? o.ids_file : "--token-ids", text ? text : o.ids, &ids, &n);
        free(text);
        if (rc) return 2;
    }
    if (n < 2) {
        fprintf(stderr, "moecpu perplexity: need at least 2 ids (each id is predicted from those before it)\n");
        free(ids);
        return 2;
    }
    struct moe_model *m;
    struct moe_context *c;
    if ((rc = open_model("perplexity", &o, n, &m, &c))) {
        free(ids);
        return rc;
    }
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    char err[1024];
    double nll = 0;
    rc = 1;
    if (cli_check_ids("perplexity", o.text.file ? o.text.file : o.ids_file ? o.ids_file : "--token-ids", m, ids, n))
        goto done;
    const int64_t step = o.batch > 0 ? o.batch : 512;
    for (int64_t i = 0; i < n - 1; i += step) {
        const int64_t cnt = n - 1 - i < step ? n - 1 - i : step;   /* the last id is only predicted */
        if (moe_context_eval(c, ids + i, cnt, 1, err, sizeof err)) {
            fprintf(stderr, "moecpu perplexity: %s\n", err);
            goto done;
        }
        int64_t rows;
        const float *lg = moe_context_logits(c, &rows);
        for (int64_t r = 0; r < rows; r++) {
            const float *l = lg + r * info.vocab_size;
            double mx = l[0], sum = 0;
            for (int64_t v = 1; v < info.vocab_size; v++) mx = l[v] > mx ? l[v] : mx;
            for (int64_t v = 0; v < info.vocab_size; v++) sum += exp((double)l[v] - mx);
            nll += mx + log(sum) - (double)l[ids[i + r + 1]];
        }
    }
    printf("perplexity %.6f over %lld predicted tokens (mean NLL %.6f nats)\n", exp(nll / (double)(n - 1)),
           (long long)(n - 1), nll / (double)(n - 1));
    rc = 0;
done:
    free(ids);
    moe_context_free(c);
    cli_close_model("perplexity", &o, m);
    return rc;
}

static int cmd_bench(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "kernels"))
        return moe_bench_kernels(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "tokenizer"))
        return moe_bench_tokenizer(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "pager-replay"))
        return moe_bench_pager_replay(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help"))) {
        printf("usage: moecpu bench -m MODEL [options]   model speed (moecpu bench -m X --help)\n"
               "       moecpu bench kernels [options]   kernel speed (moecpu bench kernels --help)\n"
               "       moecpu bench tokenizer [options] encode speed (moecpu bench tokenizer --help)\n");
        return 0;
    }
    if (argc >= 1 && argv[0][0] == '-')
        return moe_bench_model(argc, argv);
    fprintf(stderr, "moecpu bench: expected 'kernels' or -m MODEL (try 'moecpu bench --help')\n");
    return 2;
}

int cmd_tokenize(int argc, char **argv); /* src/cli_tokenize.c */

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("moecpu %s\n", MOECPU_VERSION);
        return 0;
    }
    /* A forced ISA the CPU cannot run is reported before any work. */
    char err[256];
    if (!moe_kernels_get(err, sizeof err)) {
        fprintf(stderr, "moecpu: %s\n", err);
        return 1;
    }
    if (!strcmp(cmd, "info"))
        return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval"))
        return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "perplexity"))
        return cmd_perplexity(argc - 2, argv + 2);
    if (!strcmp(cmd, "chat"))
        return cmd_chat(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize"))
        return cmd_tokenize(argc - 2, argv + 2);
    fprintf(stderr, "moecpu: unknown command '%s' (run 'moecpu help' for the list)\n", cmd);
    return 2;
}
