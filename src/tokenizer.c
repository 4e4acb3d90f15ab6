/*
 * src/tokenizer.c — byte-level BPE tokenizer (DeepSeek's), from a Hugging
 * Face tokenizer.json (+ tokenizer_config.json) or GGUF tokenizer.ggml.*
 * metadata.  The public API is in moecpu.h ("Tokenizer").
 *
 * Encoding, in the order the Hugging Face `tokenizers` library applies it:
 *  1. Invalid UTF-8 is replaced by U+FFFD, one per maximal invalid subpart
 *     (Unicode's recommended practice; what Python's errors="replace" and
 *     the WHATWG decoder do).  HF's tokenizers only accept valid strings,
 *     so this is the text any HF user actually tokenizes.
 *  2. Added tokens are cut out first, leftmost-longest: the ones with
 *     normalized=false, then (in the gaps) the normalized ones.  Control
 *     tokens (special=true, or text like "<｜...｜>" — the classification
 *     llama.cpp's converter writes into GGUF) are matched only with
 *     MOE_TOK_PARSE_SPECIAL; user-defined added tokens always.
 *  3. The pre-tokenizer: a sequence of regex splits (PCRE2, UTF + Unicode
 *     properties, JIT when available), each applied to every piece the
 *     previous step left ("Isolated": matches and gaps both become pieces).
 *  4. Byte-level BPE per piece: every byte starts as the token of its
 *     GPT-2 byte-to-unicode character; the lowest-ranked adjacent pair is
 *     merged first (ties: leftmost), with a binary heap over candidate
 *     pairs and a linked list of symbols — O(n log n) per piece.
 *
 * Everything is read-only after open; encode keeps its scratch on its own
 * stack/heap, so one tokenizer serves any number of threads.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "gguf.h"
#include "model_files.h"
#include "moecpu.h"

/* ------------------------------------------------------------ token table */

enum tok_kind {
    TK_NONE = 0,    /* no token has this id (a gap in tokenizer.json) */
    TK_NORMAL = 1,  /* a BPE vocabulary entry: its text is byte-level encoded */
    TK_CONTROL = 2, /* special / control: matched only with PARSE_SPECIAL, hidden by the detokenizer */
    TK_USER = 3,    /* user-defined added token: always matched, always shown */
    TK_UNUSED = 4,  /* GGUF padding entries ([PADn]): never produced by encoding, hidden */
};

struct tok_entry {
    uint32_t piece_off, piece_len; /* bytes it decodes to, in t->blob */
    uint8_t kind;
};

/* String -> id, open addressing; the key bytes live in the tokenizer's blob. */
struct str_map {
    struct str_slot {
        uint32_t off, len;
        int32_t id;            /* -1: empty */
        uint32_t hash;
    } *slot;
    size_t cap;                /* power of two */
    size_t n;
};

/* (left id, right id) -> (rank, merged id). */
struct merge_map {
    struct merge_slot {
        uint64_t key;
        uint32_t rank;         /* UINT32_MAX: empty */
        int32_t id;
    } *slot;
    size_t cap;
};

/* Added tokens: a byte trie (first child / next sibling). */
struct trie {
    struct trie_node {
        int32_t child, sibling;
        int32_t id;            /* token ending here, or -1 */
        uint8_t byte, control;
    } *node;
    size_t n, cap;
    uint8_t first[256];        /* bytes a token can start with */
};

struct pre_step {
    pcre2_code *re;
    bool removed;              /* "Removed": matches are dropped; else "Isolated" */
};

#define MAX_PRE_STEPS 16

struct moe_tokenizer {
    char *blob;                /* pieces and vocabulary strings */
    size_t blob_len, blob_cap;
    struct tok_entry *tok;     /* [n_vocab] */
    int32_t n_vocab;
    struct str_map vocab;      /* BPE vocabulary string (as in the file) -> id */
    struct str_map added;      /* added token content -> id */
    struct merge_map merges;
    int32_t byte_id[256];      /* token of each single byte, -1 if the vocabulary lacks it */
    struct trie trie[2];       /* [0]: normalized=false (GGUF: every added token), [1]: normalized=true */
    struct pre_step step[MAX_PRE_STEPS];
    int n_steps;
    int16_t byte_of[68];       /* the byte each of U+0100..U+0143 stands for */
    int32_t bos, eos;
    int add_bos;
    char *chat_template;
    size_t max_piece;
};

/* ------------------------------------------------------------------ utils */

static uint32_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

/* Append n bytes to the blob; returns the offset, or UINT32_MAX when out of memory / too big. */
static uint32_t blob_add(struct moe_tokenizer *t, const void *p, size_t n)
{
    if (t->blob_len + n > UINT32_MAX - 1) return UINT32_MAX;
    if (t->blob_len + n > t->blob_cap) {
        size_t cap = t->blob_cap ? t->blob_cap : 1 << 16;
        while (cap < t->blob_len + n) cap *= 2;
        char *b = realloc(t->blob, cap);
        if (!b) return UINT32_MAX;
        t->blob = b;
        t->blob_cap = cap;
    }
    uint32_t off = (uint32_t)t->blob_len;
    if (n && p) memcpy(t->blob + off, p, n);
    t->blob_len += n;
    return off;
}

static int map_init(struct str_map *m, size_t expect)
{
    size_t cap = 64;
    while (cap < expect * 2) cap *= 2;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return -1;
    for (size_t i = 0; i < cap; i++) m->slot[i].id = -1;
    m->cap = cap;
    m->n = 0;
    return 0;
}

static int32_t map_get(const struct moe_tokenizer *t, const struct str_map *m, const char *s, size_t n)
{
    if (!m->cap) return -1;
    uint32_t h = hash_bytes(s, n);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const struct str_slot *sl = &m->slot[i];
        if (sl->id < 0) return -1;
        if (sl->hash == h && sl->len == n && memcmp(t->blob + sl->off, s, n) == 0) return sl->id;
    }
}

/* Insert (first one wins); the key must already be in the blob at off. */
static int map_put(struct moe_tokenizer *t, struct str_map *m, uint32_t off, uint32_t len, int32_t id)
{
    if ((m->n + 1) * 2 > m->cap) {
        struct str_map g;
        if (map_init(&g, m->cap) != 0) return -1; /* doubles */
        for (size_t i = 0; i < m->cap; i++) {
            const struct str_slot *sl = &m->slot[i];
            if (sl->id < 0) continue;
            size_t j = sl->hash & (g.cap - 1);
            while (g.slot[j].id >= 0) j = (j + 1) & (g.cap - 1);
            g.slot[j] = *sl;
        }
        g.n = m->n;
        free(m->slot);
        *m = g;
    }
    uint32_t h = hash_bytes(t->blob + off, len);
    size_t i = h & (m->cap - 1);
    for (;; i = (i + 1) & (m->cap - 1)) {
        struct str_slot *sl = &m->slot[i];
        if (sl->id < 0) break;
        if (sl->hash == h && sl->len == len && memcmp(t->blob + sl->off, t->blob + off, len) == 0) return 0;
    }
    m->slot[i] = (struct str_slot){off, len, id, h};
    m->n++;
    return 0;
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }
static inline size_t pair_hash(uint64_t k, size_t cap) { return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 29) & (cap - 1); }

static const struct merge_slot *merge_get(const struct merge_map *m, int32_t a, int32_t b)
{
    if (a < 0 || b < 0 || !m->cap) return NULL;
    uint64_t k = pair_key(a, b);
    for (size_t i = pair_hash(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
        const struct merge_slot *s = &m->slot[i];
        if (s->rank == UINT32_MAX) return NULL;
        if (s->key == k) return s;
    }
}

static int merges_init(struct merge_map *m, size_t n)
{
    size_t cap = 64;
    while (cap < n * 2) cap *= 2;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return -1;
    for (size_t i = 0; i < cap; i++) m->slot[i].rank = UINT32_MAX;
    m->cap = cap;
    return 0;
}

/* The first merge of a pair keeps its rank (llama.cpp does the same). */
static void merge_put(struct merge_map *m, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
    uint64_t k = pair_key(a, b);
    size_t i = pair_hash(k, m->cap);
    for (;; i = (i + 1) & (m->cap - 1)) {
        if (m->slot[i].rank == UINT32_MAX) break;
        if (m->slot[i].key == k) return;
    }
    m->slot[i] = (struct merge_slot){k, rank, id};
}

/* ------------------------------------------------------------ UTF-8 */

/* The well-formed UTF-8 character at s[0..n): returns its length (> 0);
 * or -k where k >= 1 is the length of the maximal invalid subpart; with
 * *incomplete = 1 when that subpart is a valid prefix cut by the end. */
static int utf8_char(const unsigned char *s, size_t n, int *incomplete)
{
    *incomplete = 0;
    unsigned b0 = s[0];
    if (b0 < 0x80) return 1;
    if (b0 < 0xC2 || b0 > 0xF4) return -1;
    int need = b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
    unsigned lo = 0x80, hi = 0xBF;
    if (b0 == 0xE0) lo = 0xA0;
    else if (b0 == 0xED) hi = 0x9F;
    else if (b0 == 0xF0) lo = 0x90;
    else if (b0 == 0xF4) hi = 0x8F;
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n) {
            *incomplete = 1;
            return -i;
        }
        if (s[i] < lo || s[i] > hi) return -i;
        lo = 0x80;
        hi = 0xBF;
    }
    return need;
}

static int put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t get_cp(const unsigned char *s, int len)
{
    if (len == 1) return s[0];
    if (len == 2) return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    if (len == 3) return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
           (s[3] & 0x3F);
}

/* --------------------------------------------------- byte-level alphabet
 * GPT-2's bytes_to_unicode: bytes 33-126, 161-172, 174-255 stand for
 * themselves; the other 68 map to U+0100.. in byte order. */

static uint32_t byte_to_cp(unsigned b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    uint32_t n = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) n++;
    return 256 + n;
}

/* The byte a code point stands for, or -1. */
static int cp_to_byte(uint32_t cp, const int16_t *inv)
{
    if (cp < 256) return ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || cp >= 174) ? (int)cp : -1;
    if (cp < 256 + 68) return inv[cp - 256];
    return -1;
}

/* Undo the byte-level spelling of a vocabulary string into bytes (same or
 * shorter).  Characters outside the alphabet stay as their UTF-8 (HF's
 * ByteLevel decoder does the same). */
static size_t byte_decode(const char *s, size_t n, char *out, const int16_t *inv)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int inc;
        int l = utf8_char((const unsigned char *)s + i, n - i, &inc);
        if (l <= 0) { /* not UTF-8: copy the byte */
            out[o++] = s[i++];
            continue;
        }
        int b = cp_to_byte(get_cp((const unsigned char *)s + i, l), inv);
        if (b >= 0) out[o++] = (char)b;
        else {
            memcpy(out + o, s + i, (size_t)l);
            o += (size_t)l;
        }
        i += (size_t)l;
    }
    return o;
}

/* ------------------------------------------------------------------ trie */

static int trie_add(struct trie *tr, const unsigned char *s, size_t n, int32_t id, bool control)
{
    if (!n) return 0;
    if (!tr->cap) {
        tr->cap = 1024;
        tr->node = malloc(tr->cap * sizeof *tr->node);
        if (!tr->node) return -1;
        tr->node[0] = (struct trie_node){-1, -1, -1, 0, 0};
        tr->n = 1;
    }
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = tr->node[cur].child;
        while (c >= 0 && tr->node[c].byte != s[i]) c = tr->node[c].sibling;
        if (c < 0) {
            if (tr->n == tr->cap) {
                struct trie_node *nn = realloc(tr->node, tr->cap * 2 * sizeof *nn);
                if (!nn) return -1;
                tr->node = nn;
                tr->cap *= 2;
            }
            c = (int32_t)tr->n++;
            tr->node[c] = (struct trie_node){-1, tr->node[cur].child, -1, s[i], 0};
            tr->node[cur].child = c;
        }
        cur = c;
    }
    if (tr->node[cur].id < 0) { /* the first of equal contents wins */
        tr->node[cur].id = id;
        tr->node[cur].control = control;
    }
    tr->first[s[0]] = 1;
    return 0;
}

/* Longest allowed token starting at s[0..n): its length (0: none), id in *id. */
static size_t trie_match(const struct trie *tr, const unsigned char *s, size_t n, bool parse_special, int32_t *id)
{
    size_t best = 0;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = tr->node[cur].child;
        while (c >= 0 && tr->node[c].byte != s[i]) c = tr->node[c].sibling;
        if (c < 0) break;
        cur = c;
        if (tr->node[c].id >= 0 && (parse_special || !tr->node[c].control)) {
            best = i + 1;
            *id = tr->node[c].id;
        }
    }
    return best;
}

/* ----------------------------------------------------------- pre-tokenizer */

/* DeepSeek-V3's pattern, and GPT-2's (ByteLevel use_regex=true). */
static const char *const RE_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* The pre-tokenizer llama.cpp uses for each GGUF tokenizer.ggml.pre we know. */
static const char *const RE_DEEPSEEK_V3[] = {
    "\\p{N}{1,3}",
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+"
    "[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    NULL,
};
/* deepseek-llm (DeepSeek-V2 / LLM): the Latin-letter class spelled with
 * \x{} escapes (the same code points as llama.cpp's literal characters). */
static const char *const RE_DEEPSEEK_LLM[] = {
    "[\r\n]",
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}"
    "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}"
    "\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"
    "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"
    "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}"
    "\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}"
    "\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}"
    "\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"
    "\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}"
    "\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"
    "\\x{1E900}-\\x{1E943}]+",
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
    "\\s+$",
    "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+",
    "\\p{N}+",
    NULL,
};

/* \s as Oniguruma (the regex engine of HF tokenizers) and the Unicode
 * White_Space property define it.  PCRE2's \s also matches U+180E. */
#define WHITE_SPACE "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* The pattern with \s and \S spelled out as WHITE_SPACE classes; NULL when
 * out of memory or (*bad = 1) for \S inside a character class. */
static char *rewrite_spaces(const char *pat, size_t len, size_t *out_len, int *bad)
{
    *bad = 0;
    const size_t ws = strlen(WHITE_SPACE);
    char *o = malloc(len * (ws + 4) + 1), *q = o;
    if (!o) return NULL;
    bool in_class = false;
    for (size_t i = 0; i < len; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < len) {
            char d = pat[i + 1];
            if (d == 's' || d == 'S') {
                if (in_class && d == 'S') {
                    free(o);
                    *bad = 1;
                    return NULL;
                }
                if (!in_class) q += sprintf(q, d == 's' ? "[" : "[^");
                memcpy(q, WHITE_SPACE, ws);
                q += ws;
                if (!in_class) *q++ = ']';
            } else {
                *q++ = c;
                *q++ = d;
            }
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            *q++ = c;
            if (i + 1 < len && pat[i + 1] == '^') *q++ = pat[++i];
            if (i + 1 < len && pat[i + 1] == ']') *q++ = pat[++i]; /* a leading ] is literal */
            continue;
        }
        if (in_class && c == '[' && i + 1 < len && pat[i + 1] == ':') { /* [:alpha:] */
            const char *end = NULL;
            for (size_t j = i + 2; j + 1 < len; j++)
                if (pat[j] == ':' && pat[j + 1] == ']') {
                    end = pat + j + 2;
                    break;
                }
            if (end) {
                memcpy(q, pat + i, (size_t)(end - (pat + i)));
                q += end - (pat + i);
                i = (size_t)(end - pat) - 1;
                continue;
            }
        }
        if (in_class && c == ']') in_class = false;
        *q++ = c;
    }
    *q = 0;
    *out_len = (size_t)(q - o);
    return o;
}

static int add_step(struct moe_tokenizer *t, const char *pat, size_t len, uint32_t extra, bool removed, const char *file,
                    char *err, size_t errlen)
{
    if (t->n_steps == MAX_PRE_STEPS)
        return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: more than %d pre-tokenizer steps", file, MAX_PRE_STEPS);
    int ec, bad = 0;
    PCRE2_SIZE eo;
    size_t rlen = len;
    char *rw = extra & PCRE2_LITERAL ? NULL : rewrite_spaces(pat, len, &rlen, &bad);
    if (bad)
        return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: pre-tokenizer regex '%.*s': \\S inside [...] is not supported",
                          file, (int)(len > 200 ? 200 : len), pat);
    if (!rw && !(extra & PCRE2_LITERAL)) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(rw ? rw : pat), rlen, PCRE2_UTF | PCRE2_UCP | extra, &ec, &eo, NULL);
    free(rw);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: pre-tokenizer regex '%.*s' does not compile at offset %zu: %s",
                          file, (int)(len > 200 ? 200 : len), pat, (size_t)eo, (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter runs it when JIT is unavailable */
    t->step[t->n_steps].re = re;
    t->step[t->n_steps].removed = removed;
    t->n_steps++;
    return MOE_OK;
}

/* ----------------------------------------------------------- build helpers */

static struct moe_tokenizer *tok_new(void)
{
    struct moe_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->bos = t->eos = -1;
    for (unsigned b = 0; b < 256; b++) {
        t->byte_id[b] = -1;
        uint32_t cp = byte_to_cp(b);
        if (cp >= 256) t->byte_of[cp - 256] = (int16_t)b;
    }
    return t;
}

void moe_tokenizer_free(struct moe_tokenizer *t)
{
    if (!t) return;
    free(t->blob);
    free(t->tok);
    free(t->vocab.slot);
    free(t->added.slot);
    free(t->merges.slot);
    free(t->trie[0].node);
    free(t->trie[1].node);
    for (int i = 0; i < t->n_steps; i++) pcre2_code_free(t->step[i].re);
    free(t->chat_template);
    free(t);
}

/* Set token id's piece: the bytes it decodes to (byte-level spelling
 * undone for vocabulary entries; added tokens stand for their text). */
static int set_token(struct moe_tokenizer *t, int32_t id, const char *text, size_t len, enum tok_kind kind)
{
    if (len > UINT32_MAX / 2) return -1;
    uint32_t off = blob_add(t, NULL, len); /* room for the piece (never longer than the text) */
    if (off == UINT32_MAX) return -1;
    size_t plen = len;
    if (kind == TK_NORMAL) plen = byte_decode(text, len, t->blob + off, t->byte_of);
    else memcpy(t->blob + off, text, len);
    t->blob_len = off + plen;
    t->tok[id] = (struct tok_entry){off, (uint32_t)plen, (uint8_t)kind};
    if (plen > t->max_piece) t->max_piece = plen;
    return 0;
}

/* Single-byte tokens: the id of each byte's byte-level character. */
static void find_byte_ids(struct moe_tokenizer *t)
{
    for (unsigned b = 0; b < 256; b++) {
        char s[4];
        int l = put_utf8(s, byte_to_cp(b));
        t->byte_id[b] = map_get(t, &t->vocab, s, (size_t)l);
    }
}

/* "a b" -> ids of a, b and ab; the first space after the first byte splits. */
static int add_merge(struct moe_tokenizer *t, const char *m, size_t len, uint32_t rank, const char *file, char *err,
                     size_t errlen)
{
    const char *sp = len > 1 ? memchr(m + 1, ' ', len - 1) : NULL;
    if (!sp)
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: merge %u '%.*s' is not two tokens separated by a space",
                          file, rank, (int)(len > 80 ? 80 : len), m);
    size_t la = (size_t)(sp - m), lb = len - la - 1;
    int32_t a = map_get(t, &t->vocab, m, la), b = map_get(t, &t->vocab, sp + 1, lb);
    char buf[1024];
    int32_t ab = -1;
    if (la + lb <= sizeof buf) {
        memcpy(buf, m, la);
        memcpy(buf + la, sp + 1, lb);
        ab = map_get(t, &t->vocab, buf, la + lb);
    }
    if (a < 0 || b < 0)
        return moe_errorf(err, errlen, MOE_ERR_FORMAT,
                          "%s: merge %u '%.*s' refers to a token that is not in the vocabulary ('%.*s')", file, rank,
                          (int)(len > 80 ? 80 : len), m, a < 0 ? (int)la : (int)lb, a < 0 ? m : sp + 1);
    if (ab < 0)
        return moe_errorf(err, errlen, MOE_ERR_FORMAT,
                          "%s: merge %u '%.*s': the merged token is not in the vocabulary", file, rank,
                          (int)(len > 80 ? 80 : len), m);
    merge_put(&t->merges, a, b, rank, ab);
    return MOE_OK;
}

/* llama.cpp's converter marks added tokens that look special as control. */
static bool looks_special(const char *s, size_t n)
{
    static const char *const fixed[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (n == strlen(fixed[i]) && !memcmp(s, fixed[i], n)) return true;
#define ENDS(a, b) (n >= strlen(a) + strlen(b) && !memcmp(s, a, strlen(a)) && !memcmp(s + n - strlen(b), b, strlen(b)))
    return ENDS("<|", "|>") || ENDS("<\xef\xbd\x9c", "\xef\xbd\x9c>") || ENDS("<unused", ">");
#undef ENDS
}

/* ------------------------------------------------------------- HF loading */

static char *read_text_file(const char *path, size_t *len, int *missing)
{
    *missing = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        *missing = errno == ENOENT;
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

/* A token given as a string or {"content": ...} in tokenizer_config.json. */
static const char *token_text(json_t *v)
{
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) {
        json_t *c = json_object_get(v, "content");
        if (json_is_string(c)) return json_string_value(c);
    }
    return NULL;
}

static int32_t find_any(const struct moe_tokenizer *t, const char *s, size_t n)
{
    int32_t id = map_get(t, &t->added, s, n);
    return id >= 0 ? id : map_get(t, &t->vocab, s, n);
}

static int hf_pre_tokenizer(struct moe_tokenizer *t, json_t *pre, const char *file, int depth, bool *byte_level,
                            char *err, size_t errlen)
{
    if (!pre || json_is_null(pre)) return MOE_OK;
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!type) return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: pre_tokenizer without a \"type\"", file);
    if (!strcmp(type, "Sequence") && depth < 4) {
        json_t *arr = json_object_get(pre, "pretokenizers");
        if (!json_is_array(arr))
            return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: pre_tokenizer Sequence without a \"pretokenizers\" array",
                              file);
        size_t i;
        json_t *p;
        json_array_foreach(arr, i, p)
        {
            int rc = hf_pre_tokenizer(t, p, file, depth + 1, byte_level, err, errlen);
            if (rc) return rc;
        }
        return MOE_OK;
    }
    if (*byte_level)
        return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: pre_tokenizer step %s after ByteLevel is not supported",
                          file, type);
    if (!strcmp(type, "ByteLevel")) {
        if (json_is_true(json_object_get(pre, "add_prefix_space")))
            return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED,
                              "%s: ByteLevel pre_tokenizer with add_prefix_space=true is not supported", file);
        json_t *ur = json_object_get(pre, "use_regex");
        *byte_level = true;
        if (!ur || json_is_true(ur)) return add_step(t, RE_GPT2, strlen(RE_GPT2), 0, false, file, err, errlen);
        return MOE_OK;
    }
    if (!strcmp(type, "Digits")) {
        const char *re = json_is_true(json_object_get(pre, "individual_digits")) ? "\\p{N}" : "\\p{N}+";
        return add_step(t, re, strlen(re), 0, false, file, err, errlen);
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(pre, "pattern");
        const char *behavior = json_string_value(json_object_get(pre, "behavior"));
        if (json_is_true(json_object_get(pre, "invert")))
            return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: Split with invert=true is not supported", file);
        bool removed = behavior && !strcmp(behavior, "Removed");
        if (!behavior || (!removed && strcmp(behavior, "Isolated") != 0))
            return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED,
                              "%s: Split behavior '%s' is not supported (Isolated and Removed are)", file,
                              behavior ? behavior : "(none)");
        json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        if (json_is_string(re))
            return add_step(t, json_string_value(re), json_string_length(re), 0, removed, file, err, errlen);
        if (json_is_string(lit))
            return add_step(t, json_string_value(lit), json_string_length(lit), PCRE2_LITERAL, removed, file, err,
                            errlen);
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: Split pre_tokenizer without a Regex or String pattern", file);
    }
    return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported", file, type);
}

static int load_hf_config(struct moe_tokenizer *t, const char *dir, char *err, size_t errlen, json_t *post)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    json_error_t je;
    FILE *f = fopen(path, "rb");
    if (!f) return MOE_OK; /* optional: no BOS/EOS/template then */
    json_t *c = json_loadf(f, 0, &je);
    fclose(f);
    if (!c) return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    if (!json_is_object(c)) {
        json_decref(c);
        return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: not a JSON object", path);
    }
    int rc = MOE_OK;
    static const char *const keys[2] = {"bos_token", "eos_token"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(c, keys[k]);
        if (!v || json_is_null(v)) continue;
        const char *s = token_text(v);
        if (!s) {
            rc = moe_errorf(err, errlen, MOE_ERR_TYPE, "%s: %s is neither a string nor {\"content\": ...}", path, keys[k]);
            goto done;
        }
        int32_t id = find_any(t, s, strlen(s));
        if (id < 0) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: %s '%s' is not a token of tokenizer.json", path, keys[k], s);
            goto done;
        }
        if (k == 0) t->bos = id;
        else t->eos = id;
    }
    json_t *ab = json_object_get(c, "add_bos_token");
    if (ab && !json_is_null(ab)) {
        if (!json_is_boolean(ab)) {
            rc = moe_errorf(err, errlen, MOE_ERR_TYPE, "%s: add_bos_token is not true/false", path);
            goto done;
        }
        t->add_bos = json_is_true(ab);
    } else {
        /* No flag: a TemplateProcessing post-processor that starts with a
         * special token adds it; LlamaTokenizerFast adds BOS by default. */
        json_t *single = json_object_get(post, "single");
        json_t *first = json_array_get(single, 0);
        const char *cls = json_string_value(json_object_get(c, "tokenizer_class"));
        if (json_object_get(first, "SpecialToken")) t->add_bos = 1;
        else if (cls && !strcmp(cls, "LlamaTokenizerFast")) t->add_bos = 1;
    }
    json_t *tmpl = json_object_get(c, "chat_template");
    const char *ts = json_string_value(tmpl);
    if (json_is_array(tmpl)) { /* [{"name": ..., "template": ...}]: the default one */
        size_t i;
        json_t *e;
        json_array_foreach(tmpl, i, e)
        {
            const char *n = json_string_value(json_object_get(e, "name"));
            if (n && !strcmp(n, "default")) ts = json_string_value(json_object_get(e, "template"));
        }
    }
    if (ts && !(t->chat_template = strdup(ts))) rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
done:
    json_decref(c);
    return rc;
}

static int load_hf(struct moe_tokenizer *t, const char *json_path, const char *dir, char *err, size_t errlen)
{
    const char *file = json_path;
    size_t len;
    int missing;
    char *text = read_text_file(json_path, &len, &missing);
    if (!text) {
        if (missing)
            return moe_errorf(err, errlen, MOE_ERR_NOT_FOUND,
                              "%s: not found (a Hugging Face model directory needs tokenizer.json; or give a .gguf file)",
                              json_path);
        return moe_errorf(err, errlen, MOE_ERR_IO, "%s: cannot read: %s", json_path, strerror(errno));
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root) return moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: line %d: %s", file, je.line, je.text);
    int rc = MOE_OK;
#define FAIL(st, ...)                                          \
    do {                                                       \
        rc = moe_errorf(err, errlen, st, __VA_ARGS__);         \
        goto done;                                             \
    } while (0)
    if (!json_is_object(root)) FAIL(MOE_ERR_FORMAT, "%s: not a JSON object", file);
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) FAIL(MOE_ERR_FORMAT, "%s: no \"model\" object", file);
    const char *mtype = json_string_value(json_object_get(model, "type"));
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (mtype && strcmp(mtype, "BPE") != 0)
        FAIL(MOE_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (only byte-level BPE)", file, mtype);
    if (!json_is_object(vocab)) FAIL(MOE_ERR_FORMAT, "%s: model.vocab is not an object", file);
    if (!json_is_array(merges)) FAIL(MOE_ERR_FORMAT, "%s: model.merges is not an array", file);
    if (json_is_true(json_object_get(model, "byte_fallback")))
        FAIL(MOE_ERR_UNSUPPORTED, "%s: BPE with byte_fallback is not supported", file);
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        const char *nt = json_string_value(json_object_get(norm, "type"));
        json_t *list = json_object_get(norm, "normalizers");
        if (!nt || strcmp(nt, "Sequence") != 0 || json_array_size(list) != 0)
            FAIL(MOE_ERR_UNSUPPORTED, "%s: normalizer '%s' is not supported (only none)", file, nt ? nt : "?");
    }
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added)) FAIL(MOE_ERR_FORMAT, "%s: added_tokens is not an array", file);

    /* ids: vocab and added tokens */
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val)
    {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= INT32_MAX)
            FAIL(MOE_ERR_FORMAT, "%s: vocab entry '%.80s' has no valid id", file, key);
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    size_t i;
    json_array_foreach(added, i, val)
    {
        json_t *id = json_object_get(val, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX ||
            !json_is_string(json_object_get(val, "content")))
            FAIL(MOE_ERR_FORMAT, "%s: added_tokens[%zu] needs an integer id >= 0 and a string content", file, i);
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    if (max_id < 0) FAIL(MOE_ERR_FORMAT, "%s: the vocabulary is empty", file);
    t->n_vocab = (int32_t)(max_id + 1);
    t->tok = calloc((size_t)t->n_vocab, sizeof *t->tok);
    if (!t->tok || map_init(&t->vocab, json_object_size(vocab)) || map_init(&t->added, json_array_size(added) + 1) ||
        merges_init(&t->merges, json_array_size(merges) + 1))
        FAIL(MOE_ERR_NOMEM, "%s: out of memory", file);
    json_object_foreach(vocab, key, val)
    {
        int32_t id = (int32_t)json_integer_value(val);
        size_t kl = strlen(key);
        if (t->tok[id].kind != TK_NONE) FAIL(MOE_ERR_FORMAT, "%s: two vocab entries have id %d", file, (int)id);
        uint32_t off = blob_add(t, key, kl);
        if (off == UINT32_MAX || map_put(t, &t->vocab, off, (uint32_t)kl, id) || set_token(t, id, key, kl, TK_NORMAL))
            FAIL(MOE_ERR_NOMEM, "%s: out of memory", file);
    }
    json_array_foreach(added, i, val)
    {
        int32_t id = (int32_t)json_integer_value(json_object_get(val, "id"));
        json_t *content = json_object_get(val, "content");
        const char *s = json_string_value(content);
        size_t sl = json_string_length(content);
        bool special = json_is_true(json_object_get(val, "special"));
        bool normalized = json_is_true(json_object_get(val, "normalized"));
        bool control = special || looks_special(s, sl);
        uint32_t off = blob_add(t, s, sl);
        if (off == UINT32_MAX || map_put(t, &t->added, off, (uint32_t)sl, id) ||
            set_token(t, id, s, sl, control ? TK_CONTROL : TK_USER) ||
            trie_add(&t->trie[normalized ? 1 : 0], (const unsigned char *)s, sl, id, control))
            FAIL(MOE_ERR_NOMEM, "%s: out of memory", file);
    }
    find_byte_ids(t);

    json_array_foreach(merges, i, val)
    {
        if (i >= UINT32_MAX - 1) FAIL(MOE_ERR_UNSUPPORTED, "%s: too many merges", file);
        if (json_is_string(val)) {
            rc = add_merge(t, json_string_value(val), json_string_length(val), (uint32_t)i, file, err, errlen);
        } else if (json_is_array(val) && json_array_size(val) == 2 && json_is_string(json_array_get(val, 0)) &&
                   json_is_string(json_array_get(val, 1))) {
            json_t *a = json_array_get(val, 0), *b = json_array_get(val, 1);
            size_t la = json_string_length(a), lb = json_string_length(b);
            char *m = malloc(la + lb + 1);
            if (!m) FAIL(MOE_ERR_NOMEM, "%s: out of memory", file);
            memcpy(m, json_string_value(a), la);
            m[la] = ' ';
            memcpy(m + la + 1, json_string_value(b), lb);
            /* a token may not contain ' ' here, so splitting at the first space is exact */
            rc = memchr(m, ' ', la) ? moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED,
                                                 "%s: merge %zu has a token containing a space", file, i)
                                    : add_merge(t, m, la + lb + 1, (uint32_t)i, file, err, errlen);
            free(m);
        } else {
            FAIL(MOE_ERR_FORMAT, "%s: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", file, i);
        }
        if (rc) goto done;
    }

    bool byte_level = false;
    if ((rc = hf_pre_tokenizer(t, json_object_get(root, "pre_tokenizer"), file, 0, &byte_level, err, errlen)))
        goto done;
    const char *dt = json_string_value(json_object_get(json_object_get(root, "decoder"), "type"));
    if (!byte_level || (dt && strcmp(dt, "ByteLevel") != 0))
        FAIL(MOE_ERR_UNSUPPORTED, "%s: only byte-level BPE (a ByteLevel pre_tokenizer and decoder) is supported", file);
    rc = load_hf_config(t, dir, err, errlen, json_object_get(root, "post_processor"));
    if (!rc && !t->chat_template) { /* newer repositories keep the template in its own file */
        char path[4096];
        snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
        size_t tl;
        int miss;
        t->chat_template = read_text_file(path, &tl, &miss);
    }
#undef FAIL
done:
    json_decref(root);
    return rc;
}

/* ----------------------------------------------------------- GGUF loading */

static int load_gguf(struct moe_tokenizer *t, const char *path, char *err, size_t errlen)
{
    struct moe_gguf *g;
    int rc = moe_gguf_open(&g, path, err, errlen);
    if (rc) return rc;
    const char *model, *pre = NULL;
    const struct moe_gguf_value *tokens, *merges, *types = NULL;
#define FAIL(st, ...)                                          \
    do {                                                       \
        rc = moe_errorf(err, errlen, st, __VA_ARGS__);         \
        goto done;                                             \
    } while (0)
    if ((rc = moe_gguf_get_str(g, "tokenizer.ggml.model", &model, err, errlen))) goto done;
    if (strcmp(model, "gpt2") != 0)
        FAIL(MOE_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model '%s' is not supported (only gpt2: byte-level BPE)", path,
             model);
    if (moe_gguf_find(g, "tokenizer.ggml.pre") && (rc = moe_gguf_get_str(g, "tokenizer.ggml.pre", &pre, err, errlen)))
        goto done;
    const char *const *re;
    if (pre && !strcmp(pre, "deepseek-v3")) re = RE_DEEPSEEK_V3;
    else if (pre && !strcmp(pre, "deepseek-llm")) re = RE_DEEPSEEK_LLM;
    else
        FAIL(MOE_ERR_UNSUPPORTED, "%s: tokenizer.ggml.pre '%s' is not supported (deepseek-v3, deepseek-llm)", path,
             pre ? pre : "(missing)");
    if ((rc = moe_gguf_get_arr(g, "tokenizer.ggml.tokens", MOE_GGUF_STRING, &tokens, err, errlen))) goto done;
    if ((rc = moe_gguf_get_arr(g, "tokenizer.ggml.merges", MOE_GGUF_STRING, &merges, err, errlen))) goto done;
    if (moe_gguf_find(g, "tokenizer.ggml.token_type") &&
        (rc = moe_gguf_get_arr(g, "tokenizer.ggml.token_type", MOE_GGUF_TYPE_COUNT, &types, err, errlen)))
        goto done;
    uint64_t n = tokens->arr.n;
    if (n == 0 || n >= INT32_MAX) FAIL(MOE_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path,
                                       (unsigned long long)n);
    if (types && types->arr.n != n)
        FAIL(MOE_ERR_FORMAT, "%s: tokenizer.ggml.token_type has %llu entries, tokens %llu", path,
             (unsigned long long)types->arr.n, (unsigned long long)n);
    t->n_vocab = (int32_t)n;
    t->tok = calloc((size_t)n, sizeof *t->tok);
    if (!t->tok || map_init(&t->vocab, (size_t)n) || merges_init(&t->merges, (size_t)merges->arr.n + 1))
        FAIL(MOE_ERR_NOMEM, "%s: out of memory", path);
    for (uint64_t i = 0; i < n; i++) {
        const struct moe_gguf_str *s = &tokens->arr.strs[i];
        int64_t ty = 1;
        if (types && moe_gguf_arr_int(types, i, &ty) != 0)
            FAIL(MOE_ERR_TYPE, "%s: tokenizer.ggml.token_type is not an integer array", path);
        enum tok_kind kind;
        switch (ty) {
        case 1: case 6: kind = TK_NORMAL; break;             /* normal, byte */
        case 2: case 3: kind = TK_CONTROL; break;            /* unknown, control */
        case 4: kind = TK_USER; break;                       /* user-defined */
        case 5: kind = TK_UNUSED; break;
        default: FAIL(MOE_ERR_FORMAT, "%s: token %llu has type %lld (expected 1..6)", path, (unsigned long long)i,
                      (long long)ty);
        }
        if (s->len > UINT32_MAX / 4) FAIL(MOE_ERR_FORMAT, "%s: token %llu is too long", path, (unsigned long long)i);
        uint32_t off = blob_add(t, s->s, (size_t)s->len);
        if (off == UINT32_MAX || map_put(t, &t->vocab, off, (uint32_t)s->len, (int32_t)i) ||
            set_token(t, (int32_t)i, s->s, (size_t)s->len, kind))
            FAIL(MOE_ERR_NOMEM, "%s: out of memory", path);
        if (kind == TK_CONTROL || kind == TK_USER) {
            if (map_put(t, &t->added, off, (uint32_t)s->len, (int32_t)i) ||
                trie_add(&t->trie[0], (const unsigned char *)s->s, (size_t)s->len, (int32_t)i, kind == TK_CONTROL))
                FAIL(MOE_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    find_byte_ids(t);
    for (uint64_t i = 0; i < merges->arr.n; i++) {
        if (i >= UINT32_MAX - 1) FAIL(MOE_ERR_UNSUPPORTED, "%s: too many merges", path);
        const struct moe_gguf_str *s = &merges->arr.strs[i];
        if ((rc = add_merge(t, s->s, (size_t)s->len, (uint32_t)i, path, err, errlen))) goto done;
    }
    for (int i = 0; re[i]; i++)
        if ((rc = add_step(t, re[i], strlen(re[i]), 0, false, path, err, errlen))) goto done;
    static const char *const idkeys[2] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
    for (int k = 0; k < 2; k++) {
        if (!moe_gguf_find(g, idkeys[k])) continue;
        int64_t v;
        if ((rc = moe_gguf_get_int(g, idkeys[k], &v, err, errlen))) goto done;
        if (v < 0 || v >= (int64_t)n)
            FAIL(MOE_ERR_FORMAT, "%s: %s = %lld is outside the %llu tokens", path, idkeys[k], (long long)v,
                 (unsigned long long)n);
        if (k == 0) t->bos = (int32_t)v;
        else t->eos = (int32_t)v;
    }
    if (moe_gguf_find(g, "tokenizer.ggml.add_bos_token")) {
        bool b;
        if ((rc = moe_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b, err, errlen))) goto done;
        t->add_bos = b;
    }
    if (moe_gguf_find(g, "tokenizer.chat_template")) {
        const char *ct;
        if ((rc = moe_gguf_get_str(g, "tokenizer.chat_template", &ct, err, errlen))) goto done;
        if (!(t->chat_template = strdup(ct))) FAIL(MOE_ERR_NOMEM, "out of memory");
    }
#undef FAIL
done:
    moe_gguf_close(g);
    return rc;
}

/* ------------------------------------------------------------------ open */

int moe_tokenizer_open(struct moe_tokenizer **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return moe_errorf(err, errlen, MOE_ERR_NOT_FOUND, "%s: %s (give a Hugging Face directory or a .gguf file)", path,
                          strerror(errno));
    struct moe_tokenizer *t = tok_new();
    if (!t) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
    int rc;
    if (S_ISDIR(sb.st_mode)) {
        char p[4096];
        if ((size_t)snprintf(p, sizeof p, "%s/tokenizer.json", path) >= sizeof p)
            rc = moe_errorf(err, errlen, MOE_ERR_INVALID, "%s: path too long", path);
        else
            rc = load_hf(t, p, path, err, errlen);
    } else if (moe_gguf_is_gguf(path)) {
        rc = load_gguf(t, path, err, errlen);
    } else if (strlen(path) > 5 && !strcmp(path + strlen(path) - 5, ".json")) {
        /* tokenizer.json itself; tokenizer_config.json is looked for beside it */
        char dir[4096];
        const char *slash = strrchr(path, '/');
        if (!slash) strcpy(dir, ".");
        else snprintf(dir, sizeof dir, "%.*s", (int)(slash == path ? 1 : slash - path), path);
        rc = load_hf(t, path, dir, err, errlen);
    } else {
        rc = moe_errorf(err, errlen, MOE_ERR_FORMAT,
                        "%s: neither a directory (tokenizer.json) nor a GGUF file nor a tokenizer .json", path);
    }
    if (rc) {
        moe_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return MOE_OK;
}

/* ------------------------------------------------------------- accessors */

int32_t moe_tokenizer_n_vocab(const struct moe_tokenizer *t) { return t->n_vocab; }
int32_t moe_tokenizer_bos(const struct moe_tokenizer *t) { return t->bos; }
int32_t moe_tokenizer_eos(const struct moe_tokenizer *t) { return t->eos; }
int moe_tokenizer_add_bos(const struct moe_tokenizer *t) { return t->add_bos && t->bos >= 0; }
const char *moe_tokenizer_chat_template(const struct moe_tokenizer *t) { return t->chat_template; }
size_t moe_tokenizer_max_piece(const struct moe_tokenizer *t) { return t->max_piece; }

const char *moe_tokenizer_piece(const struct moe_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab || t->tok[id].kind == TK_NONE) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->tok[id].piece_len;
    return t->blob + t->tok[id].piece_off;
}

int moe_tokenizer_is_special(const struct moe_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab) return 0;
    return t->tok[id].kind == TK_CONTROL || t->tok[id].kind == TK_UNUSED;
}

int32_t moe_tokenizer_find(const struct moe_tokenizer *t, const char *s) { return find_any(t, s, strlen(s)); }

/* ----------------------------------------------------------------- encode */

struct sym {
    int32_t id, prev, next;
};
struct cand {
    uint32_t rank;
    int32_t pos;
};

struct enc {
    const struct moe_tokenizer *t;
    bool parse_special;
    int32_t *ids;
    size_t n, cap;
    struct sym *sym;
    struct cand *heap;
    size_t sym_cap, heap_n, heap_cap;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    int status;                /* first error */
    char *err;
    size_t errlen;
};

static void push_id(struct enc *e, int32_t id)
{
    if (e->status) return;
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 256;
        int32_t *p = realloc(e->ids, cap * sizeof *p);
        if (!p) {
            e->status = moe_errorf(e->err, e->errlen, MOE_ERR_NOMEM, "tokenizer: out of memory");
            return;
        }
        e->ids = p;
        e->cap = cap;
    }
    e->ids[e->n++] = id;
}

static inline bool cand_less(struct cand a, struct cand b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(struct enc *e, struct cand c)
{
    if (e->heap_n == e->heap_cap) {
        size_t cap = e->heap_cap ? e->heap_cap * 2 : 256;
        struct cand *h = realloc(e->heap, cap * sizeof *h);
        if (!h) {
            e->status = moe_errorf(e->err, e->errlen, MOE_ERR_NOMEM, "tokenizer: out of memory");
            return;
        }
        e->heap = h;
        e->heap_cap = cap;
    }
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(c, e->heap[p])) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = c;
}

static struct cand heap_pop(struct enc *e)
{
    struct cand top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t m = l + 1 < n && cand_less(e->heap[l + 1], e->heap[l]) ? l + 1 : l;
        if (!cand_less(e->heap[m], last)) break;
        e->heap[i] = e->heap[m];
        i = m;
    }
    if (n) e->heap[i] = last;
    return top;
}

static void try_pair(struct enc *e, int32_t pos)
{
    const struct sym *s = e->sym;
    int32_t nx = s[pos].next;
    if (nx < 0) return;
    const struct merge_slot *m = merge_get(&e->t->merges, s[pos].id, s[nx].id);
    if (m) heap_push(e, (struct cand){m->rank, pos});
}

/* BPE over one pre-tokenized piece of raw bytes. */
static void bpe_word(struct enc *e, const unsigned char *w, size_t n)
{
    const struct moe_tokenizer *t = e->t;
    if (n == 1) {
        if (t->byte_id[w[0]] >= 0) push_id(e, t->byte_id[w[0]]);
        return;
    }
    if (n > (size_t)INT32_MAX) {
        e->status = moe_errorf(e->err, e->errlen, MOE_ERR_INVALID, "tokenizer: a %zu-byte word is too long", n);
        return;
    }
    if (n > e->sym_cap) {
        struct sym *s = realloc(e->sym, n * sizeof *s);
        if (!s) {
            e->status = moe_errorf(e->err, e->errlen, MOE_ERR_NOMEM, "tokenizer: out of memory");
            return;
        }
        e->sym = s;
        e->sym_cap = n;
    }
    struct sym *s = e->sym;
    for (size_t i = 0; i < n; i++) s[i] = (struct sym){t->byte_id[w[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
    e->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(e, (int32_t)i);
    while (e->heap_n && !e->status) {
        struct cand c = heap_pop(e);
        int32_t p = c.pos, nx = s[p].next;
        if (s[p].id == -2 || nx < 0) continue; /* merged away since */
        const struct merge_slot *m = merge_get(&t->merges, s[p].id, s[nx].id);
        if (!m || m->rank != c.rank) continue;  /* the pair changed since */
        s[p].id = m->id;
        s[p].next = s[nx].next;
        if (s[nx].next >= 0) s[s[nx].next].prev = p;
        s[nx].id = -2;
        if (s[p].prev >= 0) try_pair(e, s[p].prev);
        try_pair(e, p);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        if (s[i].id >= 0) push_id(e, s[i].id); /* a byte the vocabulary lacks is dropped, as HF does */
}

/* Pre-tokenizer step k over piece s[0..n). */
static void pre_split(struct enc *e, int k, const char *s, size_t n)
{
    if (!n || e->status) return;
    const struct moe_tokenizer *t = e->t;
    if (k == t->n_steps) {
        bpe_word(e, (const unsigned char *)s, n);
        return;
    }
    const struct pre_step *st = &t->step[k];
    size_t off = 0, last = 0;
    while (off < n && !e->status) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            e->status = moe_errorf(e->err, e->errlen, MOE_ERR_INVALID, "tokenizer: regex match failed: %s",
                                   (const char *)msg);
            return;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* an empty match splits nothing: step over one character */
            int inc;
            int l = utf8_char((const unsigned char *)s + ms, n - ms, &inc);
            off = ms + (size_t)(l > 0 ? l : 1);
            continue;
        }
        if (ms > last) pre_split(e, k + 1, s + last, ms - last);
        if (!st->removed) pre_split(e, k + 1, s + ms, me - ms);
        last = off = me;
    }
    if (last < n) pre_split(e, k + 1, s + last, n - last);
}

/* Added tokens of trie level, then the next level / the pre-tokenizer in the gaps. */
static void split_added(struct enc *e, int level, const char *s, size_t n)
{
    if (!n || e->status) return;
    const struct trie *tr = level < 2 ? &e->t->trie[level] : NULL;
    if (!tr || !tr->n) {
        if (level < 2) split_added(e, level + 1, s, n);
        else pre_split(e, 0, s, n);
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    size_t last = 0;
    for (size_t i = 0; i < n && !e->status;) {
        int32_t id;
        size_t l = tr->first[u[i]] ? trie_match(tr, u + i, n - i, e->parse_special, &id) : 0;
        if (!l) {
            i++;
            continue;
        }
        split_added(e, level + 1, s + last, i - last);
        push_id(e, id);
        i += l;
        last = i;
    }
    split_added(e, level + 1, s + last, n - last);
}

/* Text with each maximal invalid UTF-8 subpart replaced by U+FFFD; NULL
 * when the text is valid (nothing to replace) or on allocation failure
 * (*oom set). */
static char *replace_invalid(const char *text, size_t len, size_t *out_len, int *oom)
{
    const unsigned char *u = (const unsigned char *)text;
    size_t i = 0;
    *oom = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int inc, l = utf8_char(u + i, len - i, &inc);
        if (l < 0) break;
        i += (size_t)l;
    }
    if (i == len) return NULL;
    char *o = malloc(len * 3 + 1); /* each invalid byte becomes at most 3 */
    if (!o) {
        *oom = 1;
        return NULL;
    }
    memcpy(o, text, i);
    size_t k = i;
    while (i < len) {
        int inc, l = utf8_char(u + i, len - i, &inc);
        if (l > 0) {
            memcpy(o + k, text + i, (size_t)l);
            k += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
            i += (size_t)-l;
        }
    }
    *out_len = k;
    return o;
}

int moe_tokenizer_encode(const struct moe_tokenizer *t, const char *text, size_t len, unsigned flags, int32_t **ids,
                         int64_t *n, char *err, size_t errlen)
{
    *ids = NULL;
    *n = 0;
    struct enc e = {.t = t, .parse_special = (flags & MOE_TOK_PARSE_SPECIAL) != 0, .err = err, .errlen = errlen};
    int oom;
    size_t clen = len;
    char *clean = replace_invalid(text, len, &clen, &oom);
    if (oom) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "tokenizer: out of memory");
    if (clean) text = clean;
    e.md = pcre2_match_data_create(16, NULL);
    e.mctx = pcre2_match_context_create(NULL);
    if (!e.md || !e.mctx) e.status = moe_errorf(err, errlen, MOE_ERR_NOMEM, "tokenizer: out of memory");
    if (!e.status && clen > 4096) { /* long runs of one class need more than PCRE2's default 32 KiB JIT stack */
        e.jit = pcre2_jit_stack_create(32 << 10, 8 << 20, NULL);
        if (e.jit) pcre2_jit_stack_assign(e.mctx, NULL, e.jit);
    }
    if (!e.status && (flags & MOE_TOK_ADD_BOS) && t->bos >= 0) push_id(&e, t->bos);
    if (!e.status) split_added(&e, 0, text, clen);
    pcre2_jit_stack_free(e.jit);
    pcre2_match_context_free(e.mctx);
    pcre2_match_data_free(e.md);
    free(e.sym);
    free(e.heap);
    free(clean);
    if (e.status) {
        free(e.ids);
        return e.status;
    }
    if (!e.ids) { /* empty text: still a valid (empty) malloc'd array */
        e.ids = malloc(sizeof *e.ids);
        if (!e.ids) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "tokenizer: out of memory");
    }
    *ids = e.ids;
    *n = (int64_t)e.n;
    return MOE_OK;
}

/* --------------------------------------------------------- detokenizer */

struct out_buf {
    char *p;
    size_t n, cap;
};

static void out_put(struct out_buf *o, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n && o->n < o->cap; i++) o->p[o->n++] = (char)b[i];
}

/* Bytes of a character the lead byte b0 announces (2..4). */
static int utf8_need(unsigned b0) { return b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4; }

static void detok_byte(struct moe_detok *d, unsigned char b, struct out_buf *o)
{
    for (;;) {
        if (d->npend == 0) {
            if (b >= 0xC2 && b <= 0xF4) {
                d->pend[0] = b;
                d->npend = 1;
            } else {
                out_put(o, &b, 1); /* ASCII, or a byte no character starts with */
            }
            return;
        }
        unsigned b0 = d->pend[0], lo = 0x80, hi = 0xBF;
        if (d->npend == 1) {
            if (b0 == 0xE0) lo = 0xA0;
            else if (b0 == 0xED) hi = 0x9F;
            else if (b0 == 0xF0) lo = 0x90;
            else if (b0 == 0xF4) hi = 0x8F;
        }
        if (b >= lo && b <= hi) {
            d->pend[d->npend++] = b;
            if (d->npend == utf8_need(b0)) {
                out_put(o, d->pend, (size_t)d->npend);
                d->npend = 0;
            }
            return;
        }
        out_put(o, d->pend, (size_t)d->npend); /* can never complete: pass it through */
        d->npend = 0;
    }
}

size_t moe_detok_push(struct moe_detok *d, const struct moe_tokenizer *t, int32_t id, int show_special, char *out,
                      size_t cap)
{
    struct out_buf o = {out, 0, cap};
    size_t len;
    const char *p = moe_tokenizer_piece(t, id, &len);
    if (!p || (!show_special && moe_tokenizer_is_special(t, id))) return 0;
    if (d->npend < 0 || d->npend > 3) d->npend = 0;
    for (size_t i = 0; i < len; i++) detok_byte(d, (unsigned char)p[i], &o);
    return o.n;
}

size_t moe_detok_flush(struct moe_detok *d, char *out, size_t cap)
{
    struct out_buf o = {out, 0, cap};
    if (d->npend > 0 && d->npend <= 3) out_put(&o, d->pend, (size_t)d->npend);
    d->npend = 0;
    return o.n;
}
