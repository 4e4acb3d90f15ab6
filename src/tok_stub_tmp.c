/* TEMPORARY stand-in for src/tokenizer.c (branch tok) so the gen branch links
 * before the merge: bytes are ids 0..255, four DeepSeek special tokens follow.
 * Deleted when tok is merged. */
#include <stdlib.h>
#include <string.h>
#include "moecpu.h"
static const char *sp[4] = {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"};
struct moe_tokenizer { unsigned char b[256]; };
int moe_tokenizer_open(struct moe_tokenizer **out, const char *model_path, char *err, size_t errlen)
{ (void)model_path; (void)err; (void)errlen; *out = calloc(1, sizeof **out); for (int i = 0; i < 256; i++) (*out)->b[i] = (unsigned char)i; return 0; }
void moe_tokenizer_free(struct moe_tokenizer *t) { free(t); }
int32_t moe_tokenizer_n_vocab(const struct moe_tokenizer *t) { (void)t; return 260; }
int32_t moe_tokenizer_bos(const struct moe_tokenizer *t) { (void)t; return 256; }
int32_t moe_tokenizer_eos(const struct moe_tokenizer *t) { (void)t; return 257; }
int moe_tokenizer_add_bos(const struct moe_tokenizer *t) { (void)t; return 1; }
const char *moe_tokenizer_chat_template(const struct moe_tokenizer *t) { (void)t; return NULL; }
int moe_tokenizer_encode(const struct moe_tokenizer *t, const char *text, size_t len, unsigned flags, int32_t **ids,
                         int64_t *n, char *err, size_t errlen)
{
    (void)t; (void)err; (void)errlen;
    int32_t *v = malloc((len + 1) * sizeof *v); int64_t k = 0;
    if (flags & MOE_TOK_ADD_BOS) v[k++] = 256;
    for (size_t i = 0; i < len;) {
        int hit = -1;
        if (flags & MOE_TOK_PARSE_SPECIAL)
            for (int s = 0; s < 4; s++) if (len - i >= strlen(sp[s]) && !memcmp(text + i, sp[s], strlen(sp[s]))) hit = s;
        if (hit >= 0) { v[k++] = 256 + hit; i += strlen(sp[hit]); } else v[k++] = (unsigned char)text[i++];
    }
    *ids = v; *n = k; return 0;
}
const char *moe_tokenizer_piece(const struct moe_tokenizer *t, int32_t id, size_t *len)
{
    if (id >= 0 && id < 256) { *len = 1; return (const char *)&t->b[id]; }
    if (id >= 256 && id < 260) { *len = strlen(sp[id - 256]); return sp[id - 256]; }
    *len = 0; return NULL;
}
int moe_tokenizer_is_special(const struct moe_tokenizer *t, int32_t id) { (void)t; return id >= 256; }
int32_t moe_tokenizer_find(const struct moe_tokenizer *t, const char *s)
{ (void)t; for (int i = 0; i < 4; i++) if (!strcmp(s, sp[i])) return 256 + i; return -1; }
size_t moe_detok_push(struct moe_detok *d, const struct moe_tokenizer *t, int32_t id, int show_special, char *out, size_t cap)
{
    size_t len; const char *p = moe_tokenizer_piece(t, id, &len); size_t w = 0; (void)cap;
    if (!p || (id >= 256 && !show_special)) return 0;
    for (size_t i = 0; i < len; i++) d->pend[d->npend++] = (unsigned char)p[i];
    /* emit complete characters */
    int i = 0;
    while (i < d->npend) {
        unsigned c = d->pend[i]; int need = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        if (i + need > d->npend) break;
        memcpy(out + w, d->pend + i, (size_t)need); w += (size_t)need; i += need;
    }
    memmove(d->pend, d->pend + i, (size_t)(d->npend - i)); d->npend -= i;
    return w;
}
size_t moe_detok_flush(struct moe_detok *d, char *out, size_t cap)
{ (void)cap; size_t w = (size_t)d->npend; memcpy(out, d->pend, w); d->npend = 0; return w; }
