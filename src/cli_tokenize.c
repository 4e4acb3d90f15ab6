/*
 * src/cli_tokenize.c — `moecpu tokenize`: text on stdin to token ids (or,
 * with --decode, ids back to text), with the model's own tokenizer.
 * Only the tokenizer is read: the weights need not be loadable.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moecpu.h"

int cmd_tokenize(int argc, char **argv);

static void tokenize_help(FILE *f)
{
    fprintf(f,
            "usage: moecpu tokenize -m MODEL [--ids] [--no-special] [--no-bos] [-f FILE]\n"
            "       moecpu tokenize -m MODEL --decode [--no-special] [-f FILE]\n"
            "  Reads text on stdin (or FILE) and prints its tokens: 'id<TAB>piece' per line, the piece\n"
            "  with \\n, \\t, \\r, \\\\ and \\xHH escapes for other control bytes and invalid UTF-8.\n"
            "  Invalid UTF-8 in the input is tokenized as U+FFFD, like the Hugging Face reference.\n"
            "  -m MODEL       Hugging Face directory (tokenizer.json [+ tokenizer_config.json]),\n"
            "                 a GGUF file, or a tokenizer.json file\n"
            "  --ids          print the ids only, space-separated on one line\n"
            "  --no-special   special-token strings in the text (<｜User｜>, ...) are plain text\n"
            "                 (default: they become their token); with --decode: leave them out\n"
            "  --no-bos       do not start with BOS (default: as the model's tokenizer config says)\n"
            "  --decode       read token ids (separated by white space or commas) and write the text\n"
            "  -f FILE        read FILE instead of stdin\n");
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* The piece with control bytes, backslash and invalid UTF-8 escaped. */
static void print_piece(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        if (c == '\\') fputs("\\\\", stdout);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7F) printf("\\x%02x", c);
        else if (c < 0x80) putchar((int)c);
        else {
            /* a complete, well-formed character is printed as it is */
            int need = c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
            int ok = need > 0 && i + (size_t)need <= n;
            for (int k = 1; ok && k < need; k++) {
                unsigned lo = 0x80, hi = 0xBF, b = p[i + (size_t)k];
                if (k == 1 && c == 0xE0) lo = 0xA0;
                if (k == 1 && c == 0xED) hi = 0x9F;
                if (k == 1 && c == 0xF0) lo = 0x90;
                if (k == 1 && c == 0xF4) hi = 0x8F;
                ok = b >= lo && b <= hi;
            }
            if (ok) {
                fwrite(p + i, 1, (size_t)need, stdout);
                i += (size_t)need;
                continue;
            }
            printf("\\x%02x", c);
        }
        i++;
    }
}

static int decode_ids(const struct moe_tokenizer *t, const char *text, size_t len, int show_special)
{
    size_t cap = 64 + moe_tokenizer_max_piece(t);
    char *out = malloc(cap);
    if (!out) {
        fprintf(stderr, "moecpu tokenize: out of memory\n");
        return 1;
    }
    struct moe_detok d = {{0}, 0};
    size_t i = 0, k = 0;
    int rc = 0;
    while (i < len) {
        unsigned char c = (unsigned char)text[i];
        if (c == ' ' || c == ',' || c == '\n' || c == '\t' || c == '\r') {
            i++;
            continue;
        }
        long long v = 0;
        size_t j = i;
        while (j < len && text[j] >= '0' && text[j] <= '9' && v <= INT32_MAX) v = v * 10 + (text[j++] - '0');
        k++;
        if (j == i || v >= moe_tokenizer_n_vocab(t) ||
            (j < len && !strchr(" ,\n\t\r", text[j]))) {
            fprintf(stderr, "moecpu tokenize: entry %zu of the input is not a token id below %d (give ids "
                            "separated by spaces or commas)\n", k, (int)moe_tokenizer_n_vocab(t));
            rc = 2;
            break;
        }
        i = j;
        size_t w = moe_detok_push(&d, t, (int32_t)v, show_special, out, cap);
        fwrite(out, 1, w, stdout);
    }
    size_t w = moe_detok_flush(&d, out, cap);
    fwrite(out, 1, w, stdout);
    free(out);
    if (fflush(stdout) != 0 && !rc) {
        fprintf(stderr, "moecpu tokenize: writing stdout failed: %s\n", strerror(errno));
        rc = 1;
    }
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *file = NULL;
    int ids_only = 0, special = 1, bos = 1, decode = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_help(stdout);
            return 0;
        } else if (!strcmp(a, "--ids")) ids_only = 1;
        else if (!strcmp(a, "--no-special")) special = 0;
        else if (!strcmp(a, "--no-bos")) bos = 0;
        else if (!strcmp(a, "--decode")) decode = 1;
        else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) model = argv[++i];
        else if (!strcmp(a, "-f") && i + 1 < argc) file = argv[++i];
        else {
            fprintf(stderr, "moecpu tokenize: unknown or incomplete option '%s' (try 'moecpu tokenize --help')\n", a);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "moecpu tokenize: -m MODEL is required (a Hugging Face directory or a .gguf file)\n");
        return 2;
    }
    char err[1024];
    struct moe_tokenizer *t;
    if (moe_tokenizer_open(&t, model, err, sizeof err)) {
        fprintf(stderr, "moecpu tokenize: %s\n", err);
        return 1;
    }
    FILE *in = stdin;
    if (file && !(in = fopen(file, "rb"))) {
        fprintf(stderr, "moecpu tokenize: cannot open '%s': %s\n", file, strerror(errno));
        moe_tokenizer_free(t);
        return 1;
    }
    size_t len;
    char *text = read_all(in, &len);
    if (in != stdin) fclose(in);
    if (!text) {
        fprintf(stderr, "moecpu tokenize: reading %s failed\n", file ? file : "stdin");
        moe_tokenizer_free(t);
        return 1;
    }
    int rc = 0;
    if (decode) {
        rc = decode_ids(t, text, len, special);
    } else {
        unsigned flags = (special ? MOE_TOK_PARSE_SPECIAL : 0u) | (bos && moe_tokenizer_add_bos(t) ? MOE_TOK_ADD_BOS : 0u);
        int32_t *ids;
        int64_t n;
        if (moe_tokenizer_encode(t, text, len, flags, &ids, &n, err, sizeof err)) {
            fprintf(stderr, "moecpu tokenize: %s\n", err);
            rc = 1;
        } else {
            for (int64_t i = 0; i < n; i++) {
                if (ids_only) {
                    printf(i ? " %d" : "%d", (int)ids[i]);
                    continue;
                }
                size_t pl;
                const char *p = moe_tokenizer_piece(t, ids[i], &pl);
                printf("%d\t", (int)ids[i]);
                print_piece((const unsigned char *)p, pl);
                putchar('\n');
            }
            if (ids_only) putchar('\n');
            free(ids);
            if (fflush(stdout) != 0) {
                fprintf(stderr, "moecpu tokenize: writing stdout failed: %s\n", strerror(errno));
                rc = 1;
            }
        }
    }
    free(text);
    moe_tokenizer_free(t);
    return rc;
}
