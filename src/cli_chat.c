/*
 * src/cli_chat.c — `moecpu chat`: an interactive multi-turn conversation.
 *
 * Each turn renders the whole conversation with the model's chat format,
 * encodes it, and compares it with the ids the context already holds: the
 * common prefix stays in the KV cache, the context is truncated there and
 * only the rest is evaluated.  For DeepSeek-V3 that is exactly the new
 * turn (the end-of-sentence of the previous answer and the new user turn);
 * for R1, whose template drops earlier <think> sections, the previous
 * answer is re-evaluated without its thinking — the conversation the model
 * sees is always the one the template renders.
 *
 * Input: libedit (line editing, history) when stdin is a terminal, plain
 * lines otherwise.  SIGINT (sigaction; the handler sets sig_atomic_t flags
 * and writes a byte to a pipe that input waits on with poll()) stops the
 * current answer; at the prompt, or a second one before the answer has
 * stopped, it ends the chat.
 */
#include <errno.h>
#include <histedit.h>
#include <fcntl.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>

#include "cli.h"
#include "cli_gen.h"

/* The only mutable globals: what the SIGINT handler may touch. */
static volatile sig_atomic_t g_interrupt; /* stop the current answer */
static volatile sig_atomic_t g_quit;      /* leave the chat */
static volatile sig_atomic_t g_at_prompt; /* waiting for the user */
static int g_wake[2] = {-1, -1};          /* self-pipe: wakes a reader blocked in poll() */

static void on_sigint(int sig)
{
    (void)sig;
    if (g_at_prompt || g_interrupt) g_quit = 1;
    g_interrupt = 1;
    if (g_wake[1] >= 0) {
        const int e = errno;
        const char b = 1;
        if (write(g_wake[1], &b, 1) < 0) {}   /* a full pipe already wakes the reader */
        errno = e;
    }
}

/* ---- input ---------------------------------------------------------------- */

struct input {
    EditLine *el;
    History *hist;
    mbstate_t mb;
    char *line;                /* the line returned */
    char *buf;                 /* plain mode: bytes read, not yet returned */
    size_t nbuf, cap;
    int eof;
};

/* Wait until stdin is readable; 0 when a SIGINT asked to leave (g_quit). */
static int wait_stdin(void)
{
    for (;;) {
        if (g_quit) return 0;
        struct pollfd p[2] = {{STDIN_FILENO, POLLIN, 0}, {g_wake[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return 1;          /* let the read report the error */
        }
        if (p[1].revents & POLLIN) {   /* a signal: look at g_quit again */
            char drain[16];
            while (read(g_wake[0], drain, sizeof drain) > 0) {}
            continue;
        }
        return 1;
    }
}

static char *prompt_fn(EditLine *el)
{
    (void)el;
    return "> ";
}

/* libedit's character reader, replaced so that a SIGINT ends el_gets at
 * once: it waits in poll() on stdin and the handler's self-pipe, so a
 * signal that lands just before the wait is not lost. */
static int read_wchar(EditLine *el, wchar_t *wc)
{
    struct input *in;
    el_get(el, EL_CLIENTDATA, &in);
    for (;;) {
        if (!wait_stdin()) {   /* Ctrl-C at the prompt */
            *wc = 0;
            return -1;
        }
        char ch;
        const ssize_t r = read(STDIN_FILENO, &ch, 1);
        if (r < 0) {
            if (errno == EINTR && !g_quit) continue;
            *wc = 0;
            return -1;
        }
        if (r == 0) {
            *wc = 0;
            return 0;
        }
        wchar_t w;
        const size_t k = mbrtowc(&w, &ch, 1, &in->mb);
        if (k == (size_t)-2) continue;           /* more bytes of this character */
        if (k == (size_t)-1) {                   /* invalid byte: pass it on as itself */
            memset(&in->mb, 0, sizeof in->mb);
            w = (wchar_t)(unsigned char)ch;
        }
        *wc = w;
        return 1;
    }
}

static unsigned char on_ctrl_c(EditLine *el, int ch)
{
    (void)el;
    (void)ch;
    g_quit = 1;
    return CC_EOF;
}

static int input_open(struct input *in)
{
    memset(in, 0, sizeof *in);
    if (pipe(g_wake) || fcntl(g_wake[0], F_SETFL, O_NONBLOCK) || fcntl(g_wake[1], F_SETFL, O_NONBLOCK)) return -1;
    if (!isatty(STDIN_FILENO)) return 0;
    setlocale(LC_CTYPE, "");
    in->el = el_init("moecpu", stdin, stdout, stderr);
    in->hist = history_init();
    if (!in->el || !in->hist) return -1;
    HistEvent ev;
    history(in->hist, &ev, H_SETSIZE, 1000);
    history(in->hist, &ev, H_SETUNIQUE, 1);
    el_set(in->el, EL_CLIENTDATA, in);
    el_set(in->el, EL_PROMPT, prompt_fn);
    el_set(in->el, EL_EDITOR, "emacs");
    el_set(in->el, EL_HIST, history, in->hist);
    el_set(in->el, EL_GETCFN, read_wchar);
    /* libedit's edit mode turns the terminal's ISIG off: Ctrl-C arrives as a
     * character, so bind it to "leave the chat" */
    /* (the wide-character calls: the narrow EL_ADDFN copies its strings and never frees them) */
    el_wset(in->el, EL_ADDFN, L"moecpu-quit", L"leave the chat", on_ctrl_c);
    el_wset(in->el, EL_BIND, L"^C", L"moecpu-quit", NULL);
    el_source(in->el, NULL);   /* the user's ~/.editrc, if any */
    return 0;
}

/* The next line without its newline (valid until the next call), or NULL at
 * end of input or on an interrupt. */
static const char *input_line(struct input *in)
{
    if (in->el) {
        int count;
        const char *s = el_gets(in->el, &count);
        if (!s || count <= 0) return NULL;
        free(in->line);
        if (!(in->line = strdup(s))) return NULL;
    } else {
        /* plain lines, read with poll() + read() so Ctrl-C is seen at once
         * whichever thread the signal lands on */
        char *nl;
        while (!(nl = in->nbuf ? memchr(in->buf, '\n', in->nbuf) : NULL) && !in->eof) {
            if (in->nbuf + 4096 > in->cap) {
                char *nb = realloc(in->buf, in->cap = in->nbuf + 65536);
                if (!nb) return NULL;
                in->buf = nb;
            }
            if (!wait_stdin()) return NULL;
            const ssize_t r = read(STDIN_FILENO, in->buf + in->nbuf, in->cap - in->nbuf);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) in->eof = 1;
            else in->nbuf += (size_t)r;
        }
        if (!in->nbuf) return NULL;
        const size_t len = nl ? (size_t)(nl - in->buf) + 1 : in->nbuf;
        free(in->line);
        if (!(in->line = malloc(len + 1))) return NULL;
        memcpy(in->line, in->buf, len);
        in->line[len] = 0;
        memmove(in->buf, in->buf + len, in->nbuf - len);
        in->nbuf -= len;
    }
    size_t n = strlen(in->line);
    while (n && (in->line[n - 1] == '\n' || in->line[n - 1] == '\r')) in->line[--n] = 0;
    if (in->el && n) {
        HistEvent ev;
        history(in->hist, &ev, H_ENTER, in->line);
    }
    return in->line;
}

static void input_close(struct input *in)
{
    if (in->el) el_end(in->el);
    if (in->hist) history_end(in->hist);
    for (int i = 0; i < 2; i++)
        if (g_wake[i] >= 0) close(g_wake[i]), g_wake[i] = -1;
    free(in->line);
    free(in->buf);
}

/* ---- conversation --------------------------------------------------------- */

struct conv {
    struct moe_chat_msg *m;
    char **own;                /* the strings m[i].content points to */
    struct cli_ids *gen;       /* assistant messages: the ids the model generated for them */
    int n, cap;
};

/* Append a message; gen (may be NULL) is moved into the conversation. */
static int conv_add(struct conv *cv, enum moe_chat_role role, const char *text, size_t len, struct cli_ids *gen)
{
    if (cv->n == cv->cap) {
        const int cap = cv->cap ? 2 * cv->cap : 16;
        struct moe_chat_msg *m = realloc(cv->m, (size_t)cap * sizeof *m);
        if (!m) return -1;
        cv->m = m;
        char **own = realloc(cv->own, (size_t)cap * sizeof *own);
        if (!own) return -1;
        cv->own = own;
        struct cli_ids *g = realloc(cv->gen, (size_t)cap * sizeof *g);
        if (!g) return -1;
        cv->gen = g;
        cv->cap = cap;
    }
    char *s = malloc(len + 1);
    if (!s) return -1;
    memcpy(s, text, len);
    s[len] = 0;
    cv->own[cv->n] = s;
    cv->gen[cv->n] = gen ? *gen : (struct cli_ids){0};
    if (gen) *gen = (struct cli_ids){0};
    cv->m[cv->n++] = (struct moe_chat_msg){role, s};
    return 0;
}

static void conv_pop(struct conv *cv)
{
    if (!cv->n) return;
    cv->n--;
    free(cv->own[cv->n]);
    free(cv->gen[cv->n].ids);
}

static int append_encoded(const struct moe_tokenizer *tok, const char *p, size_t len, struct cli_ids *out, char *err,
                          size_t errlen)
{
    if (!len) return 0;
    int32_t *ids;
    int64_t n;
    if (moe_tokenizer_encode(tok, p, len, MOE_TOK_PARSE_SPECIAL, &ids, &n, err, errlen)) return -1;
    int rc = 0;
    for (int64_t i = 0; !rc && i < n; i++)
        if (cli_ids_push(out, ids[i])) rc = MOECPU_ERR_NOMEM, snprintf(err, errlen, "out of memory");
    free(ids);
    return rc;
}

/* The first k such that gen[k..] decodes to exactly the bytes p[0..len),
 * or -1.  (An R1 answer's history keeps only the text after </think>; a
 * stop string cuts the text: then no suffix matches and the text is
 * encoded afresh.) */
static int64_t matching_suffix(const struct moe_tokenizer *tok, const struct cli_ids *gen, const char *p, size_t len)
{
    size_t total = 0, piece_len;
    for (int64_t i = 0; i < gen->n; i++) {
        moe_tokenizer_piece(tok, gen->ids[i], &piece_len);
        total += piece_len;
    }
    int64_t k = 0;
    while (k < gen->n && total > len) {
        moe_tokenizer_piece(tok, gen->ids[k++], &piece_len);
        total -= piece_len;
    }
    if (total != len) return -1;
    size_t off = 0;
    for (int64_t i = k; i < gen->n; i++) {
        const char *q = moe_tokenizer_piece(tok, gen->ids[i], &piece_len);
        if (piece_len && (!q || memcmp(q, p + off, piece_len))) return -1;
        off += piece_len;
    }
    return k;
}

/* The ids of the conversation as the template renders it, with a
 * generation prompt.  Answers keep the ids the model generated whenever
 * they decode to exactly the rendered content (the text between
 * <｜Assistant｜> and <｜end▁of▁sentence｜>, special tokens on both sides, so
 * encoding the pieces apart equals encoding the whole); otherwise their
 * text is encoded like the rest. */
static int conv_ids(const struct moe_chat_format *fmt, const struct moe_tokenizer *tok, const struct conv *cv,
                    struct cli_ids *out, char *err, size_t errlen)
{
    size_t *spans = malloc(2 * (size_t)cv->n * sizeof *spans + 1);
    char *text = spans ? moe_chat_render_spans(fmt, cv->m, cv->n, 1, spans) : NULL;
    int rc = 0;
    out->n = 0;
    if (!text) {
        snprintf(err, errlen, "out of memory");
        rc = MOECPU_ERR_NOMEM;
        goto done;
    }
    size_t pos = 0;
    for (int i = 0; i < cv->n && !rc; i++) {
        if (cv->m[i].role != MOE_CHAT_ASSISTANT) continue;
        const size_t a = spans[2 * i], b = spans[2 * i + 1];
        if ((rc = append_encoded(tok, text + pos, a - pos, out, err, errlen))) break;
        const int64_t k = matching_suffix(tok, &cv->gen[i], text + a, b - a);
        if (k < 0) rc = append_encoded(tok, text + a, b - a, out, err, errlen);
        for (int64_t j = k < 0 ? cv->gen[i].n : k; !rc && j < cv->gen[i].n; j++)
            if (cli_ids_push(out, cv->gen[i].ids[j])) rc = MOECPU_ERR_NOMEM, snprintf(err, errlen, "out of memory");
        pos = b;
    }
    if (!rc) rc = append_encoded(tok, text + pos, strlen(text + pos), out, err, errlen);
done:
    free(spans);
    free(text);
    return rc;
}

static void conv_free(struct conv *cv)
{
    while (cv->n) conv_pop(cv);
    free(cv->m);
    free(cv->own);
    free(cv->gen);
}

/* --save-turns: the whole conversation's ids and the logits the answer
 * starts from, so tests can compare with a from-scratch eval. */
static int save_turn(const char *dir, int turn, const int32_t *ids, int64_t n, const float *logits, int64_t vocab)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/turn%d.ids", dir, turn);
    FILE *fp = fopen(path, "w");
    if (!fp) return -1;
    for (int64_t i = 0; i < n; i++) fprintf(fp, i ? ",%d" : "%d", (int)ids[i]);
    fputc('\n', fp);
    if (fclose(fp)) return -1;
    snprintf(path, sizeof path, "%s/turn%d.logits", dir, turn);
    if (!(fp = fopen(path, "wb"))) return -1;
    const size_t w = fwrite(logits, sizeof *logits, (size_t)vocab, fp);   /* native = little-endian here */
    return fclose(fp) || w != (size_t)vocab ? -1 : 0;
}

static void chat_commands(FILE *f)
{
    fprintf(f, "commands: /reset  forget the conversation (the system prompt stays)\n"
               "          /exit   leave (also Ctrl-D, or Ctrl-C at the prompt)\n"
               "          /help   this text\n"
               "Ctrl-C while the model answers stops the answer.\n");
}

int cli_chat(const struct model_opts *o, struct cli_text_opts *t)
{
    const char *cmd = "chat";
    struct moe_tokenizer *tok = NULL;
    struct moe_model *m = NULL;
    struct moe_context *c = NULL;
    struct moe_sampler *smp = NULL;
    struct conv cv = {0};
    struct cli_ids cache = {0}, turn_ids = {0};
    struct input in;
    char err[1024];
    int rc = cli_open_tokenizer(cmd, t->model, &tok);
    if (rc) return rc;
    if (input_open(&in)) {
        fprintf(stderr, "moecpu chat: cannot set up line editing (libedit)\n");
        moe_tokenizer_free(tok);
        return 1;
    }
    rc = 1;
    struct moe_chat_format fmt;
    if (moe_chat_format_init(&fmt, tok, err, sizeof err)) {
        fprintf(stderr, "moecpu chat: %s\n", err);
        goto done;
    }
    if (t->save_turns) {
        struct stat sb;
        if (stat(t->save_turns, &sb) || !S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "moecpu chat: --save-turns '%s' is not a directory (create it first)\n", t->save_turns);
            goto done;
        }
    }
    if ((rc = cli_open_model(cmd, o, t->ctx > 0 ? 1 : 4096, &m, &c))) goto done;
    rc = 1;
    struct moe_model_info info;
    moe_model_get_info(m, &info);
    if (!t->seed_set) t->sp.seed = cli_fresh_seed();
    if (moe_sampler_new(&smp, (int32_t)info.vocab_size, &t->sp, err, sizeof err)) {
        fprintf(stderr, "moecpu chat: %s\n", err);
        goto done;
    }
    if (t->system && conv_add(&cv, MOE_CHAT_SYSTEM, t->system, strlen(t->system), NULL)) goto oom;
    const int n_sys = cv.n;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  /* output is not cut by EINTR; waits use poll() + the wake pipe */
    struct sigaction old_sa;
    sigaction(SIGINT, &sa, &old_sa);

    fprintf(stderr, "moecpu chat: %s%s. Type /help for commands.\n",
            fmt.think_prompt ? "R1-style (thinking) chat format" : "DeepSeek chat format",
            t->system ? ", with a system prompt" : "");
    int turn = 0;
    rc = 0;
    for (;;) {
        g_at_prompt = 1;       /* first: a SIGINT from here on ends the chat */
        g_interrupt = 0;
        if (g_quit) break;
        const char *line = input_line(&in);
        g_at_prompt = 0;
        if (!line) {
            if (g_quit || g_interrupt) fprintf(stderr, "\n");
            break;             /* end of input, or Ctrl-C at the prompt */
        }
        if (!*line) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/help")) {
            chat_commands(stdout);
            continue;
        }
        if (!strcmp(line, "/reset")) {
            while (cv.n > n_sys) conv_pop(&cv);
            moe_context_reset(c);
            cache.n = 0;
            moe_sampler_reset(smp);
            fprintf(stderr, "moecpu chat: conversation reset\n");
            continue;
        }
        if (line[0] == '/' && line[1] && !strchr(line, ' ')) {
            fprintf(stderr, "moecpu chat: unknown command '%s' (/help lists them; start a message with a space to "
                            "send text beginning with '/')\n", line);
            continue;
        }
        if (conv_add(&cv, MOE_CHAT_USER, line, strlen(line), NULL)) goto oom;
        if (conv_ids(&fmt, tok, &cv, &turn_ids, err, sizeof err)) {
            fprintf(stderr, "moecpu chat: %s\n", err);
            conv_pop(&cv);
            continue;
        }
        const int32_t *ids = turn_ids.ids;
        const int64_t n = turn_ids.n;
        if (cli_check_vocab(cmd, m, ids, n)) {
            rc = 1;
            break;
        }
        if (n >= moe_context_n_ctx(c)) {
            fprintf(stderr, "moecpu chat: the conversation (%lld tokens) no longer fits in the context of %lld "
                            "tokens: /reset to start over, or restart with a larger --ctx\n",
                    (long long)n, (long long)moe_context_n_ctx(c));
            conv_pop(&cv);
            continue;
        }
        /* keep the common prefix in the cache; evaluate the rest */
        int64_t keep = 0;
        while (keep < cache.n && keep < n && cache.ids[keep] == ids[keep]) keep++;
        if (keep == n) keep = n - 1;   /* the last token is evaluated again for its logits */
        moe_context_truncate(c, keep);
        cache.n = keep;
        for (int64_t i = keep; i < n; i++) moe_sampler_accept(smp, ids[i]);
        const double t0 = cli_now();
        if (moe_context_eval(c, ids + keep, n - keep, 0, err, sizeof err)) {
            fprintf(stderr, "moecpu chat: %s\n", err);
            rc = 1;
            break;
        }
        const double t_prompt = cli_now() - t0;
        for (int64_t i = keep; i < n; i++)
            if (cli_ids_push(&cache, ids[i])) goto oom;
        turn++;
        if (t->save_turns &&
            save_turn(t->save_turns, turn, ids, n, moe_context_logits(c, NULL), info.vocab_size)) {
            fprintf(stderr, "moecpu chat: cannot write turn %d into '%s'\n", turn, t->save_turns);
            rc = 1;
            break;
        }
        struct cli_stream st;
        cli_stream_init(&st, stdout, t, fmt.think_prompt);
        struct cli_ids answer = {0};
        struct cli_gen_io io = {c, tok, smp, info.vocab_size, &cache, &answer, &g_interrupt};
        struct cli_gen_result r;
        const int grc = cli_generate(cmd, &io, t, &st, &r);
        g_at_prompt = 1;       /* the answer is over: Ctrl-C now means leave */
        fputc('\n', stdout);
        fflush(stdout);
        const int add = conv_add(&cv, MOE_CHAT_ASSISTANT, st.raw ? st.raw : "", st.nraw, &answer);
        cli_stream_free(&st);
        if (add) goto oom;
        if (grc) {
            rc = 1;
            break;
        }
        if (r.reason == CLI_STOP_INTERRUPT) fprintf(stderr, "moecpu chat: answer stopped (Ctrl-C)\n");
        if (r.reason == CLI_STOP_CONTEXT)
            fprintf(stderr, "moecpu chat: the context is full (%lld tokens): the answer stopped; /reset to start "
                            "over, or restart with a larger --ctx\n", (long long)moe_context_n_ctx(c));
        char extra[160];
        snprintf(extra, sizeof extra, "turn %d: %lld tokens reused from the cache | stopped by %s | seed %llu", turn,
                 (long long)keep, cli_stop_note(r.reason), (unsigned long long)t->sp.seed);
        cli_print_timings(cmd, m, c, n - keep, t_prompt, r.n_gen, r.t_gen, extra);
        if (g_quit) break;
    }
    sigaction(SIGINT, &old_sa, NULL);
    goto done;
oom:
    fprintf(stderr, "moecpu chat: out of memory\n");
    rc = 1;
done:
    input_close(&in);
    conv_free(&cv);
    free(cache.ids);
    free(turn_ids.ids);
    moe_sampler_free(smp);
    moe_context_free(c);
    cli_close_model(cmd, o, m);
    moe_tokenizer_free(tok);
    return rc;
}
