/*
 * tests/test_tokenizer.c — the tokenizer on a tiny hand-made vocabulary
 * (expected ids worked out by hand from the merge ranks), its error paths
 * (missing, garbage and inconsistent tokenizer.json / GGUF files must give
 * one message naming the file, never a crash), invalid UTF-8 handling and
 * the streaming detokenizer, and a randomized round trip (pieces and
 * streamed text = the text with invalid UTF-8 replaced, checked against a
 * separate transcription of Unicode Table 3-7).  Agreement with
 * DeepSeek's real tokenizer is tests/tokenizer_ref.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "../src/gguf.h"
#include "../src/moecpu.h"

static char g_dir[256];
static char err[1024];

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/moecpu-tok-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh subdirectory of g_dir. */
static const char *subdir(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
    mkdir(buf, 0777);
    return buf;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* GPT-2's byte-to-unicode, written out from its definition. */
static unsigned byte_cp(unsigned b)
{
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    if (printable) return b;
    unsigned n = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) n++;
    return 256 + n;
}

static void byte_str(unsigned b, char *o)
{
    unsigned cp = byte_cp(b);
    if (cp < 0x80) { o[0] = (char)cp; o[1] = 0; }
    else { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); o[2] = 0; }
}

/* The tiny vocabulary: ids 0..255 the bytes (id = byte value), then
 * 256 "ab", 257 "bc", 258 "abc", 259 " a", 260 "aa" with merges of ranks
 * 0..4 in that order; added tokens 261 "<|bos|>" (special), 262 "<|user|>"
 * (not special but looks it: control), 263 "[X]" and 264 "[X]!" (user). */
enum { ID_AB = 256, ID_BC, ID_ABC, ID_SA, ID_AA, ID_BOS, ID_USER, ID_X, ID_XBANG };

static json_t *tiny_json(void)
{
    json_t *vocab = json_object();
    char s[8];
    for (unsigned b = 0; b < 256; b++) {
        byte_str(b, s);
        json_object_set_new(vocab, s, json_integer(b));
    }
    char sp[8];
    byte_str(' ', sp);
    char sa[16];
    snprintf(sa, sizeof sa, "%sa", sp);
    json_object_set_new(vocab, "ab", json_integer(ID_AB));
    json_object_set_new(vocab, "bc", json_integer(ID_BC));
    json_object_set_new(vocab, "abc", json_integer(ID_ABC));
    json_object_set_new(vocab, sa, json_integer(ID_SA));
    json_object_set_new(vocab, "aa", json_integer(ID_AA));
    char m3[16];
    snprintf(m3, sizeof m3, "%s a", sp);
    json_t *merges = json_pack("[s, s, s, s, [s, s]]", "a b", "b c", "ab c", m3, "a", "a");
    json_t *added = json_pack("[{s:i, s:s, s:b, s:b}, {s:i, s:s, s:b, s:b}, {s:i, s:s, s:b, s:b}, {s:i, s:s, s:b, s:b}]",
                              "id", ID_BOS, "content", "<|bos|>", "special", 1, "normalized", 0,
                              "id", ID_USER, "content", "<|user|>", "special", 0, "normalized", 1,
                              "id", ID_X, "content", "[X]", "special", 0, "normalized", 1,
                              "id", ID_XBANG, "content", "[X]!", "special", 0, "normalized", 1);
    json_t *pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b}]}", "type", "Sequence", "pretokenizers",
                            "type", "Split", "pattern", "Regex", "\\p{N}{1,3}", "behavior", "Isolated", "invert", 0,
                            "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 1);
    return json_pack("{s:s, s:o, s:n, s:o, s:{s:s}, s:{s:s, s:o, s:o}}", "version", "1.0", "added_tokens", added,
                     "normalizer", "pre_tokenizer", pre, "decoder", "type", "ByteLevel", "model", "type", "BPE", "vocab",
                     vocab, "merges", merges);
}

static const char *write_tiny(const char *name, json_t *j, const char *config)
{
    const char *d = subdir(name);
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", d);
    assert_int_equal(json_dump_file(j, p, 0), 0);
    json_decref(j);
    if (config) write_file(d, "tokenizer_config.json", config);
    return d;
}

static const char *TINY_CONFIG =
    "{\"add_bos_token\": true, \"bos_token\": {\"content\": \"<|bos|>\"}, \"eos_token\": \"<|user|>\","
    " \"chat_template\": \"{{ bos_token }}T\"}";

static struct moe_tokenizer *open_ok(const char *path)
{
    struct moe_tokenizer *t = NULL;
    int rc = moe_tokenizer_open(&t, path, err, sizeof err);
    if (rc) fail_msg("open %s: %s", path, err);
    return t;
}

/* encode and compare with the expected ids */
static void expect(const struct moe_tokenizer *t, const char *text, size_t len, unsigned flags, const int32_t *want,
                   int64_t n_want)
{
    int32_t *ids;
    int64_t n;
    assert_int_equal(moe_tokenizer_encode(t, text, len, flags, &ids, &n, err, sizeof err), 0);
    if (n != n_want) {
        for (int64_t i = 0; i < n; i++) print_message("%d ", ids[i]);
        fail_msg("'%.*s': %lld ids, expected %lld", (int)len, text, (long long)n, (long long)n_want);
    }
    for (int64_t i = 0; i < n; i++)
        if (ids[i] != want[i]) fail_msg("'%.*s': id %lld is %d, expected %d", (int)len, text, (long long)i, ids[i], want[i]);
    free(ids);
}
#define EXPECT(t, s, flags, ...)                                                                \
    do {                                                                                        \
        const int32_t w_[] = {__VA_ARGS__};                                                     \
        expect(t, s, sizeof(s) - 1, flags, w_, (int64_t)(sizeof w_ / sizeof w_[0]));            \
    } while (0)

static void test_bpe_by_hand(void **state)
{
    (void)state;
    struct moe_tokenizer *t = open_ok(write_tiny("tiny", tiny_json(), TINY_CONFIG));
    assert_int_equal(moe_tokenizer_n_vocab(t), 265);
    EXPECT(t, "abc", 0, ID_ABC);                 /* ab (rank 0) first, then ab+c */
    EXPECT(t, "bca", 0, ID_BC, 'a');
    EXPECT(t, "aaa", 0, ID_AA, 'a');             /* equal ranks: the leftmost pair merges */
    EXPECT(t, " abc", 0, ' ', ID_ABC);           /* a+b (rank 0) beats space+a (rank 3) */
    EXPECT(t, " a", 0, ID_SA);
    EXPECT(t, "ab ab", 0, ID_AB, ' ', ID_AB);  /* words "ab" and " ab"; in " ab" a+b (rank 0) beats space+a (3) */
    EXPECT(t, "x12345", 0, 'x', '1', '2', '3', '4', '5');
    /* added tokens: control ones only with PARSE_SPECIAL, user ones always, longest first */
    EXPECT(t, "x<|bos|>y", MOE_TOK_PARSE_SPECIAL, 'x', ID_BOS, 'y');
    EXPECT(t, "x<|bos|>y", 0, 'x', '<', '|', 'b', 'o', 's', '|', '>', 'y');
    EXPECT(t, "<|user|>", MOE_TOK_PARSE_SPECIAL, ID_USER);
    EXPECT(t, "[X]![X]?", 0, ID_XBANG, ID_X, '?');
    EXPECT(t, "[X]![X]?", MOE_TOK_PARSE_SPECIAL, ID_XBANG, ID_X, '?');
    EXPECT(t, "ab", MOE_TOK_ADD_BOS, ID_BOS, ID_AB);
    /* invalid UTF-8: U+FFFD (EF BF BD) per maximal invalid subpart */
    EXPECT(t, "\xff", 0, 0xEF, 0xBF, 0xBD);
    EXPECT(t, "\xe2\x82", 0, 0xEF, 0xBF, 0xBD);
    EXPECT(t, "\xe2\x82z", 0, 0xEF, 0xBF, 0xBD, 'z');
    EXPECT(t, "\xed\xa0\x80", 0, 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD);
    EXPECT(t, "\xc3\xa9", 0, 0xC3, 0xA9);        /* valid: unchanged */
    /* NUL bytes are text too */
    expect(t, "a\0b", 3, 0, (const int32_t[]){'a', 0, 'b'}, 3);
    /* empty text: no ids, but a valid array */
    int32_t *ids;
    int64_t n = -1;
    assert_int_equal(moe_tokenizer_encode(t, "", 0, 0, &ids, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    assert_non_null(ids);
    free(ids);

    assert_int_equal(moe_tokenizer_bos(t), ID_BOS);
    assert_int_equal(moe_tokenizer_eos(t), ID_USER);
    assert_int_equal(moe_tokenizer_add_bos(t), 1);
    assert_string_equal(moe_tokenizer_chat_template(t), "{{ bos_token }}T");
    assert_int_equal(moe_tokenizer_find(t, "<|bos|>"), ID_BOS);
    assert_int_equal(moe_tokenizer_find(t, "abc"), ID_ABC);
    assert_int_equal(moe_tokenizer_find(t, "zzz"), -1);
    assert_int_equal(moe_tokenizer_is_special(t, ID_BOS), 1);
    assert_int_equal(moe_tokenizer_is_special(t, ID_USER), 1);
    assert_int_equal(moe_tokenizer_is_special(t, ID_X), 0);
    assert_int_equal(moe_tokenizer_is_special(t, 'a'), 0);
    size_t len;
    const char *p = moe_tokenizer_piece(t, ID_SA, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(p, " a", 2);
    p = moe_tokenizer_piece(t, 0, &len); /* byte 0 (U+0100 in the vocabulary) */
    assert_int_equal(len, 1);
    assert_int_equal(p[0], 0);
    assert_null(moe_tokenizer_piece(t, 265, &len));
    assert_int_equal(len, 0);
    assert_null(moe_tokenizer_piece(t, -1, &len));
    moe_tokenizer_free(t);

    /* tokenizer.json given directly; no tokenizer_config.json: no BOS */
    const char *d = write_tiny("tiny_nocfg", tiny_json(), NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", d);
    t = open_ok(path);
    assert_int_equal(moe_tokenizer_bos(t), -1);
    assert_int_equal(moe_tokenizer_add_bos(t), 0);
    assert_null(moe_tokenizer_chat_template(t));
    EXPECT(t, "ab", MOE_TOK_ADD_BOS, ID_AB);
    moe_tokenizer_free(t);
}

/* A GGUF with the same vocabulary (pre-tokenizer deepseek-v3) gives the same ids here. */
static const char *write_tiny_gguf(const char *name, int variant)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/%s.gguf", g_dir, name);
    struct moe_gguf_writer *w = moe_gguf_writer_new();
    assert_non_null(w);
    char *toks[265];
    int32_t types[265];
    char s[8];
    for (unsigned b = 0; b < 256; b++) {
        byte_str(b, s);
        toks[b] = strdup(s);
        types[b] = 1;
    }
    char sp[8];
    byte_str(' ', sp);
    toks[ID_AB] = strdup("ab");
    toks[ID_BC] = strdup("bc");
    toks[ID_ABC] = strdup("abc");
    toks[ID_SA] = malloc(16);
    snprintf(toks[ID_SA], 16, "%sa", sp);
    toks[ID_AA] = strdup("aa");
    toks[ID_BOS] = strdup("<|bos|>");
    toks[ID_USER] = strdup("<|user|>");
    toks[ID_X] = strdup("[X]");
    toks[ID_XBANG] = strdup("[X]!");
    for (int i = ID_AB; i <= ID_AA; i++) types[i] = 1;
    types[ID_BOS] = types[ID_USER] = 3;
    types[ID_X] = types[ID_XBANG] = 4;
    char m3[16];
    snprintf(m3, sizeof m3, "%s a", sp);
    const char *merges[5] = {"a b", "b c", "ab c", m3, variant == 3 ? "a zz" : "a a"};
    if (variant != 1) assert_int_equal(moe_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2"), 0);
    assert_int_equal(moe_gguf_writer_add_str(w, "tokenizer.ggml.pre", variant == 4 ? "llama3" : "deepseek-v3"), 0);
    if (variant == 2) assert_int_equal(moe_gguf_writer_add_arr(w, "tokenizer.ggml.tokens", MOE_GGUF_INT32, types, 265), 0);
    else assert_int_equal(moe_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, 265), 0);
    assert_int_equal(moe_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", MOE_GGUF_INT32, types,
                                             variant == 5 ? 264 : 265), 0);
    assert_int_equal(moe_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, 5), 0);
    assert_int_equal(moe_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", ID_BOS), 0);
    assert_int_equal(moe_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true), 0);
    assert_int_equal(moe_gguf_writer_write(w, path, err, sizeof err), 0);
    moe_gguf_writer_free(w);
    for (int i = 0; i < 265; i++) free(toks[i]);
    return path;
}

static void test_gguf(void **state)
{
    (void)state;
    struct moe_tokenizer *t = open_ok(write_tiny_gguf("tiny", 0));
    assert_int_equal(moe_tokenizer_n_vocab(t), 265);
    EXPECT(t, "abc", 0, ID_ABC);
    EXPECT(t, "aaa", 0, ID_AA, 'a');
    EXPECT(t, " abc", 0, ' ', ID_ABC);
    EXPECT(t, "x<|bos|>y", MOE_TOK_PARSE_SPECIAL, 'x', ID_BOS, 'y');
    EXPECT(t, "x<|bos|>y", 0, 'x', '<', '|', 'b', 'o', 's', '|', '>', 'y');
    EXPECT(t, "[X]![X]?", 0, ID_XBANG, ID_X, '?');
    EXPECT(t, "ab", MOE_TOK_ADD_BOS, ID_BOS, ID_AB);
    assert_int_equal(moe_tokenizer_add_bos(t), 1);
    assert_int_equal(moe_tokenizer_eos(t), -1);
    assert_null(moe_tokenizer_chat_template(t));
    moe_tokenizer_free(t);
}

/* open must fail with status want and a message containing `needle`. */
static void expect_open_error(const char *path, int want, const char *needle)
{
    struct moe_tokenizer *t = (struct moe_tokenizer *)1;
    err[0] = 0;
    int rc = moe_tokenizer_open(&t, path, err, sizeof err);
    if (rc != want || !strstr(err, needle))
        fail_msg("%s: status %d (wanted %d), message '%s' (wanted '%s' in it)", path, rc, want, err, needle);
    assert_null(t);
}

static void test_errors(void **state)
{
    (void)state;
    expect_open_error("/nonexistent/model", MOECPU_ERR_NOT_FOUND, "/nonexistent/model");
    const char *d = subdir("empty");
    expect_open_error(d, MOECPU_ERR_NOT_FOUND, "tokenizer.json");
    d = subdir("garbage");
    write_file(d, "tokenizer.json", "{\"model\": {\"vocab\": [1, 2,");
    expect_open_error(d, MOECPU_ERR_FORMAT, "garbage/tokenizer.json");
    d = subdir("notobj");
    write_file(d, "tokenizer.json", "[1, 2, 3]");
    expect_open_error(d, MOECPU_ERR_FORMAT, "not a JSON object");
    d = subdir("nomodel");
    write_file(d, "tokenizer.json", "{\"version\": \"1.0\"}");
    expect_open_error(d, MOECPU_ERR_FORMAT, "no \"model\"");
    write_file(d, "plain.txt", "hello");
    char p[600];
    snprintf(p, sizeof p, "%s/plain.txt", d);
    expect_open_error(p, MOECPU_ERR_FORMAT, "plain.txt");

    json_t *j = tiny_json(); /* vocab of the wrong type */
    json_object_set_new(json_object_get(j, "model"), "vocab", json_pack("[i]", 1));
    expect_open_error(write_tiny("vocab_arr", j, NULL), MOECPU_ERR_FORMAT, "model.vocab is not an object");
    j = tiny_json(); /* an id that is not a number */
    json_object_set_new(json_object_get(json_object_get(j, "model"), "vocab"), "zz", json_string("7"));
    expect_open_error(write_tiny("vocab_str", j, NULL), MOECPU_ERR_FORMAT, "'zz' has no valid id");
    j = tiny_json(); /* two tokens with one id */
    json_object_set_new(json_object_get(json_object_get(j, "model"), "vocab"), "zz", json_integer(ID_AB));
    expect_open_error(write_tiny("vocab_dup", j, NULL), MOECPU_ERR_FORMAT, "two vocab entries have id 256");
    j = tiny_json(); /* a merge of an unknown token */
    json_array_append_new(json_object_get(json_object_get(j, "model"), "merges"), json_string("a zz"));
    expect_open_error(write_tiny("merge_unk", j, NULL), MOECPU_ERR_FORMAT, "not in the vocabulary ('zz')");
    j = tiny_json(); /* a merge whose result is not a token */
    json_array_append_new(json_object_get(json_object_get(j, "model"), "merges"), json_string("c a"));
    expect_open_error(write_tiny("merge_res", j, NULL), MOECPU_ERR_FORMAT, "merged token");
    j = tiny_json(); /* a merge without a space */
    json_array_append_new(json_object_get(json_object_get(j, "model"), "merges"), json_string("abc"));
    expect_open_error(write_tiny("merge_nosp", j, NULL), MOECPU_ERR_FORMAT, "two tokens separated by a space");
    j = tiny_json(); /* a merge of the wrong type */
    json_array_append_new(json_object_get(json_object_get(j, "model"), "merges"), json_integer(5));
    expect_open_error(write_tiny("merge_int", j, NULL), MOECPU_ERR_FORMAT, "merges[5]");
    j = tiny_json(); /* an added token without an id */
    json_array_append_new(json_object_get(j, "added_tokens"), json_pack("{s:s}", "content", "<x>"));
    expect_open_error(write_tiny("added_noid", j, NULL), MOECPU_ERR_FORMAT, "added_tokens[4]");
    j = tiny_json();
    json_object_set_new(json_object_get(j, "model"), "type", json_string("WordPiece"));
    expect_open_error(write_tiny("wordpiece", j, NULL), MOECPU_ERR_UNSUPPORTED, "WordPiece");
    j = tiny_json();
    json_object_set_new(j, "normalizer", json_pack("{s:s}", "type", "NFC"));
    expect_open_error(write_tiny("nfc", j, NULL), MOECPU_ERR_UNSUPPORTED, "normalizer 'NFC'");
    j = tiny_json(); /* a Split behavior we do not implement */
    json_object_set_new(json_array_get(json_object_get(json_object_get(j, "pre_tokenizer"), "pretokenizers"), 0),
                        "behavior", json_string("MergedWithPrevious"));
    expect_open_error(write_tiny("merged", j, NULL), MOECPU_ERR_UNSUPPORTED, "MergedWithPrevious");
    j = tiny_json(); /* a regex that does not compile */
    json_object_set_new(json_array_get(json_object_get(json_object_get(j, "pre_tokenizer"), "pretokenizers"), 0),
                        "pattern", json_pack("{s:s}", "Regex", "(\\p{N}"));
    expect_open_error(write_tiny("badre", j, NULL), MOECPU_ERR_FORMAT, "does not compile");
    j = tiny_json(); /* not byte-level */
    json_object_set_new(j, "pre_tokenizer", json_pack("{s:s, s:b}", "type", "Digits", "individual_digits", 1));
    expect_open_error(write_tiny("nobytelevel", j, NULL), MOECPU_ERR_UNSUPPORTED, "byte-level");
    /* tokenizer_config.json of the wrong types / naming an unknown token */
    expect_open_error(write_tiny("cfg_bool", tiny_json(), "{\"add_bos_token\": \"yes\"}"), MOECPU_ERR_TYPE,
                      "add_bos_token");
    expect_open_error(write_tiny("cfg_bos", tiny_json(), "{\"bos_token\": \"<nope>\"}"), MOECPU_ERR_FORMAT, "<nope>");
    expect_open_error(write_tiny("cfg_garbage", tiny_json(), "{{"), MOECPU_ERR_FORMAT, "tokenizer_config.json");

    /* GGUF files */
    expect_open_error(write_tiny_gguf("nomodel", 1), MOECPU_ERR_NOT_FOUND, "tokenizer.ggml.model");
    expect_open_error(write_tiny_gguf("inttokens", 2), MOECPU_ERR_TYPE, "tokenizer.ggml.tokens");
    expect_open_error(write_tiny_gguf("badmerge", 3), MOECPU_ERR_FORMAT, "not in the vocabulary");
    expect_open_error(write_tiny_gguf("llama3", 4), MOECPU_ERR_UNSUPPORTED, "llama3");
    expect_open_error(write_tiny_gguf("types", 5), MOECPU_ERR_FORMAT, "token_type has 264 entries");
    /* a truncated GGUF */
    const char *g = write_tiny_gguf("trunc", 0);
    assert_int_equal(truncate(g, 100), 0);
    expect_open_error(g, MOECPU_ERR_FORMAT, "trunc.gguf");
}

/* Feed ids one at a time; return the concatenated output. */
static size_t stream(const struct moe_tokenizer *t, const int32_t *ids, int n, int show, char *out, size_t cap_each)
{
    struct moe_detok d = {{0}, 0};
    size_t o = 0;
    char buf[256];
    for (int i = 0; i < n; i++) {
        size_t w = moe_detok_push(&d, t, ids[i], show, buf, cap_each);
        assert_true(w <= cap_each);
        memcpy(out + o, buf, w);
        o += w;
    }
    o += moe_detok_flush(&d, out + o, 64);
    return o;
}

static void test_detok(void **state)
{
    (void)state;
    struct moe_tokenizer *t = open_ok(write_tiny("detok", tiny_json(), TINY_CONFIG));
    struct moe_detok d = {{0}, 0};
    char out[256];
    /* é split over two byte tokens: nothing, then both bytes */
    assert_int_equal(moe_detok_push(&d, t, 0xC3, 0, out, sizeof out), 0);
    assert_int_equal(moe_detok_push(&d, t, 0xA9, 0, out, sizeof out), 2);
    assert_memory_equal(out, "\xc3\xa9", 2);
    /* a 4-byte emoji in four pushes */
    const int32_t emoji[] = {0xF0, 0x9F, 0x98, 0x80};
    for (int i = 0; i < 3; i++) assert_int_equal(moe_detok_push(&d, t, emoji[i], 0, out, sizeof out), 0);
    assert_int_equal(moe_detok_push(&d, t, emoji[3], 0, out, sizeof out), 4);
    assert_memory_equal(out, "\xf0\x9f\x98\x80", 4);
    assert_int_equal(moe_detok_flush(&d, out, sizeof out), 0);
    /* bytes that never form a character pass through as they are */
    size_t n = stream(t, (const int32_t[]){0xFF, 'a', 0x80, 0xC3, 'b', 0xE2, 0x82}, 7, 0, out, 64);
    assert_int_equal(n, 7);
    assert_memory_equal(out, "\xff" "a\x80\xc3" "b\xe2\x82", 7);
    /* E0 needs A0..BF next; ED 80..9F: surrogates and overlongs pass through byte by byte */
    n = stream(t, (const int32_t[]){0xE0, 0x80, 0xED, 0xA0, 0x80}, 5, 0, out, 64);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "\xe0\x80\xed\xa0\x80", 5);
    /* special tokens: hidden, or shown as their text; a hidden one inside a split character */
    n = stream(t, (const int32_t[]){'a', ID_BOS, 'b'}, 3, 0, out, 64);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "ab", 2);
    n = stream(t, (const int32_t[]){'a', ID_BOS, 'b'}, 3, 1, out, 64);
    assert_int_equal(n, 9);
    assert_memory_equal(out, "a<|bos|>b", 9);
    n = stream(t, (const int32_t[]){0xC3, ID_USER, 0xA9}, 3, 0, out, 64);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "\xc3\xa9", 2);
    /* user-defined added tokens are text: always shown */
    n = stream(t, (const int32_t[]){ID_X, ID_SA}, 2, 0, out, 64);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "[X] a", 5);
    /* ids outside the vocabulary write nothing */
    n = stream(t, (const int32_t[]){-5, 265, 1 << 30, 'z'}, 4, 1, out, 64);
    assert_int_equal(n, 1);
    /* never more than cap */
    struct moe_detok d2 = {{0}, 0};
    assert_int_equal(moe_detok_push(&d2, t, ID_BOS, 1, out, 3), 3);
    assert_memory_equal(out, "<|b", 3);
    assert_true(moe_tokenizer_max_piece(t) >= 7);
    /* a round trip through encode and the streaming decoder, byte for byte */
    const char text[] = "aaa abc <|bos|>\xc3\xa9\xf0\x9f\x98\x80[X]! bca";
    int32_t *ids;
    int64_t m;
    assert_int_equal(moe_tokenizer_encode(t, text, sizeof text - 1, MOE_TOK_PARSE_SPECIAL, &ids, &m, err, sizeof err), 0);
    n = stream(t, ids, (int)m, 1, out, 64);
    assert_int_equal(n, sizeof text - 1);
    assert_memory_equal(out, text, n);
    free(ids);
    moe_tokenizer_free(t);
}


/* Unicode Table 3-7 (well-formed byte sequences), applied the slow way: the
 * length of the well-formed character at s, or 0. */
static int well_formed(const unsigned char *s, size_t n)
{
    static const struct { unsigned char lo0, hi0, lo1, hi1; int len; } rows[] = {
        {0x00, 0x7F, 0, 0, 1},       {0xC2, 0xDF, 0x80, 0xBF, 2}, {0xE0, 0xE0, 0xA0, 0xBF, 3},
        {0xE1, 0xEC, 0x80, 0xBF, 3}, {0xED, 0xED, 0x80, 0x9F, 3}, {0xEE, 0xEF, 0x80, 0xBF, 3},
        {0xF0, 0xF0, 0x90, 0xBF, 4}, {0xF1, 0xF3, 0x80, 0xBF, 4}, {0xF4, 0xF4, 0x80, 0x8F, 4},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        if (s[0] < rows[r].lo0 || s[0] > rows[r].hi0) continue;
        int len = rows[r].len;
        if ((size_t)len > n) return 0;
        if (len > 1 && (s[1] < rows[r].lo1 || s[1] > rows[r].hi1)) return 0;
        for (int k = 2; k < len; k++)
            if (s[k] < 0x80 || s[k] > 0xBF) return 0;
        return len;
    }
    return 0;
}

/* U+FFFD for each maximal subpart: the longest prefix of a well-formed
 * sequence, at least one byte (Unicode 3.9, "U+FFFD substitution of maximal
 * subparts"). */
static size_t replace_ref(const unsigned char *s, size_t n, unsigned char *o)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int l = well_formed(s + i, n - i);
        if (l) {
            memcpy(o + k, s + i, (size_t)l);
            k += (size_t)l;
            i += (size_t)l;
            continue;
        }
        size_t best = 1; /* the longest prefix of s+i that some well-formed sequence starts with */
        for (size_t m = 2; m <= 3 && i + m <= n; m++) {
            unsigned char buf[4];
            memcpy(buf, s + i, m);
            int extendable = 0;
            for (unsigned c = 0x80; c <= 0xBF && !extendable; c++) {
                buf[m] = (unsigned char)c;
                for (unsigned d = 0x80; d <= 0xBF && !extendable; d++) {
                    unsigned char full[4] = {buf[0], buf[1], buf[2], (unsigned char)d};
                    for (size_t q = m + 1; q < 4; q++) full[q] = (unsigned char)(q == m ? c : d);
                    for (int L = (int)m + 1; L <= 4 && !extendable; L++) extendable = well_formed(full, (size_t)L) == L;
                }
            }
            if (extendable) best = m;
            else break;
        }
        memcpy(o + k, "\xef\xbf\xbd", 3);
        k += 3;
        i += best;
    }
    return k;
}

/* Random texts from pieces that matter (letters, digits, spaces, newlines,
 * added tokens, multi-byte characters, stray and truncated bytes): pieces
 * of the ids and the streamed decoding both give back the text with
 * invalid UTF-8 replaced. */
static void test_fuzz_roundtrip(void **state)
{
    (void)state;
    static const char *const parts[] = {"a", "b", "c", "ab", " ", "  ", "\n", "\r\n", "\t", "1", "12345", "<|bos|>",
                                        "<|user|>", "[X]", "[X]!", "<|", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
                                        "\xff", "\x80", "\xc3", "\xe4\xb8", "\xf0\x9f", "\xed\xa0\x80", "\xc0\xaf", "'s", "!?", "\x00"};
    struct moe_tokenizer *t = open_ok(write_tiny("fuzz", tiny_json(), TINY_CONFIG));
    const char *q = getenv("MOECPU_TEST_QUICK");
    int iters = q && *q && strcmp(q, "0") ? 300 : 3000;
    uint32_t rng = 12345;
    unsigned char text[512], want[2048], got[4096];
    for (int it = 0; it < iters; it++) {
        size_t n = 0;
        int k = (int)((rng = rng * 1664525u + 1013904223u) >> 27); /* 0..31 parts */
        for (int j = 0; j < k; j++) {
            rng = rng * 1664525u + 1013904223u;
            const char *p = parts[(rng >> 16) % (sizeof parts / sizeof parts[0])];
            size_t l = p[0] ? strlen(p) : 0;
            if (!strcmp(p, "\x00")) l = 1;
            memcpy(text + n, p, l);
            n += l;
        }
        size_t wn = replace_ref(text, n, want);
        for (unsigned fl = 0; fl <= MOE_TOK_PARSE_SPECIAL; fl += MOE_TOK_PARSE_SPECIAL) {
            int32_t *ids;
            int64_t m;
            assert_int_equal(moe_tokenizer_encode(t, (const char *)text, n, fl, &ids, &m, err, sizeof err), 0);
            size_t gn = 0;
            for (int64_t i = 0; i < m; i++) {
                size_t pl;
                const char *p = moe_tokenizer_piece(t, ids[i], &pl);
                assert_non_null(p);
                if (!fl) assert_int_equal(moe_tokenizer_is_special(t, ids[i]), 0);
                memcpy(got + gn, p, pl);
                gn += pl;
            }
            if (gn != wn || memcmp(got, want, wn)) fail_msg("iteration %d: pieces differ from the text", it);
            size_t sn = stream(t, ids, (int)m, 1, (char *)got, 64);
            if (sn != wn || memcmp(got, want, wn)) fail_msg("iteration %d: streamed text differs", it);
            free(ids);
        }
    }
    moe_tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bpe_by_hand),
        cmocka_unit_test(test_gguf),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_detok),
        cmocka_unit_test(test_fuzz_roundtrip),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, group_setup, group_teardown);
}
