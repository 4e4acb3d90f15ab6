/*
 * src/chat.c — DeepSeek V3/R1 chat format (semantics in moecpu.h, "Chat
 * format").  We do not run Jinja: DeepSeek's templates are fixed programs,
 * and the few ways V3 and R1 differ are read from the template text.
 * tests/test_chat.c renders the real templates with an independent Jinja
 * engine and requires identical text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moecpu.h"

int moe_chat_format_from_template(struct moe_chat_format *f, const char *tmpl, const char *bos, char *err,
                                  size_t errlen)
{
    memset(f, 0, sizeof *f);
    if (bos && strlen(bos) >= sizeof f->bos) {
        if (err) snprintf(err, errlen, "chat format: BOS text of %zu bytes is too long", strlen(bos));
        return MOECPU_ERR_UNSUPPORTED;
    }
    snprintf(f->bos, sizeof f->bos, "%s", bos ? bos : "");
    if (!tmpl) {               /* DeepSeek-V3's template */
        f->join_system = 1;
        return MOECPU_OK;
    }
    if (!strstr(tmpl, MOE_CHAT_USER_TEXT) || !strstr(tmpl, MOE_CHAT_ASSISTANT_TEXT)) {
        if (err)
            snprintf(err, errlen,
                     "the model's chat template is not DeepSeek's V3/R1 format (it never writes %s and %s); "
                     "give the prompt already formatted, without --chat",
                     MOE_CHAT_USER_TEXT, MOE_CHAT_ASSISTANT_TEXT);
        return MOECPU_ERR_UNSUPPORTED;
    }
    f->think_prompt = strstr(tmpl, MOE_CHAT_ASSISTANT_TEXT "<think>") != NULL;
    f->strip_think = strstr(tmpl, "split('</think>')") != NULL || strstr(tmpl, "split(\"</think>\")") != NULL;
    /* V3 accumulates system messages (is_first_sp); R1's older text assigns */
    f->join_system = strstr(tmpl, "is_first_sp") != NULL;
    return MOECPU_OK;
}

int moe_chat_format_init(struct moe_chat_format *f, const struct moe_tokenizer *t, char *err, size_t errlen)
{
    char bos[sizeof f->bos] = "";
    const int32_t b = moe_tokenizer_bos(t);
    if (b >= 0) {
        size_t len;
        const char *p = moe_tokenizer_piece(t, b, &len);
        if (p && len < sizeof bos) {
            memcpy(bos, p, len);
            bos[len] = 0;
        }
    }
    const char *tmpl = moe_tokenizer_chat_template(t);
    if (!tmpl && (moe_tokenizer_find(t, MOE_CHAT_USER_TEXT) < 0 || moe_tokenizer_find(t, MOE_CHAT_ASSISTANT_TEXT) < 0)) {
        if (err)
            snprintf(err, errlen,
                     "the model has no chat template and no DeepSeek chat tokens (%s, %s); give the prompt "
                     "already formatted, without --chat",
                     MOE_CHAT_USER_TEXT, MOE_CHAT_ASSISTANT_TEXT);
        return MOECPU_ERR_UNSUPPORTED;
    }
    return moe_chat_format_from_template(f, tmpl, bos, err, errlen);
}

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void puts_(struct buf *b, const char *s) { if (s) put(b, s, strlen(s)); }   /* NULL: "" */

/* The text after the last "</think>" (all of s when there is none). */
static const char *after_think(const char *s)
{
    const char *r = s ? s : "", *q;
    while ((q = strstr(r, "</think>"))) r = q + strlen("</think>");
    return r;
}

char *moe_chat_render(const struct moe_chat_format *f, const struct moe_chat_msg *msgs, int n,
                      int add_generation_prompt)
{
    return moe_chat_render_spans(f, msgs, n, add_generation_prompt, NULL);
}

char *moe_chat_render_spans(const struct moe_chat_format *f, const struct moe_chat_msg *msgs, int n,
                            int add_generation_prompt, size_t *spans)
{
    if (spans) memset(spans, 0, 2 * (size_t)(n > 0 ? n : 0) * sizeof *spans);
    struct buf b = {0};
    puts_(&b, "");
    puts_(&b, f->bos);
    int first_sys = 1, last_sys = -1;
    for (int i = 0; i < n; i++) {
        if (msgs[i].role != MOE_CHAT_SYSTEM) continue;
        if (f->join_system) {
            if (!first_sys) puts_(&b, "\n\n");
            puts_(&b, msgs[i].content);
            first_sys = 0;
        } else {
            last_sys = i;
        }
    }
    if (last_sys >= 0) puts_(&b, msgs[last_sys].content);
    for (int i = 0; i < n; i++) {
        if (msgs[i].role == MOE_CHAT_USER) {
            puts_(&b, MOE_CHAT_USER_TEXT);
            puts_(&b, msgs[i].content);
        } else if (msgs[i].role == MOE_CHAT_ASSISTANT) {
            puts_(&b, MOE_CHAT_ASSISTANT_TEXT);
            if (spans) spans[2 * i] = b.len;
            puts_(&b, f->strip_think ? after_think(msgs[i].content) : msgs[i].content);
            if (spans) spans[2 * i + 1] = b.len;
            puts_(&b, MOE_CHAT_END_TEXT);
        }
    }
    if (add_generation_prompt) {
        puts_(&b, MOE_CHAT_ASSISTANT_TEXT);
        if (f->think_prompt) puts_(&b, "<think>\n");
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
