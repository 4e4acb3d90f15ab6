/*
 * tests/test_loaders.c — model-file readers and writers: GGUF, safetensors
 * (single and sharded), the unified moe_model_files view and config
 * parsing.  Small models are written with our writers into a mkdtemp()
 * directory and read back; corrupt inputs (truncations, garbage, huge
 * counts, bad offsets, bad shapes, unknown dtypes, missing files) must fail
 * with the right message and never crash; a fuzz loop flips bytes and
 * truncates valid files a few thousand times (ASan/UBSan catch overreads).
 * MOECPU_TEST_QUICK=1 shortens the fuzz loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../quant/formats.h"
#include "../src/config.h"
#include "../src/gguf.h"
#include "../src/model_files.h"
#include "../src/safetensors.h"

static char g_dir[256];
static char err[1024];

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint32_t rnd32(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rndf(void) { return (float)((int)(rnd32() % 2001) - 1000) / 250.0f; }

static const char *P(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/moecpu-loaders-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(sz > 0 ? (size_t)sz : 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return p;
}

/* A fresh inode each time: truncating a file in place makes ext4 flush it
 * (auto_da_alloc), which turns the fuzz loop from seconds into minutes. */
static void write_all(const char *path, const void *p, size_t n)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *path, const char *s) { write_all(path, s, strlen(s)); }

static void mkdir_p(const char *path) { assert_true(mkdir(path, 0755) == 0 || access(path, F_OK) == 0); }

#define assert_err_has(s) \
    do { if (!strstr(err, (s))) fail_msg("error message \"%s\" lacks \"%s\"", err, (s)); } while (0)

static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }

/* Position just after the name bytes of the tensor info `name`
 * (u32 n_dims, ne[], u32 type, u64 offset follow). */
static size_t find_info(const uint8_t *b, size_t n, const char *name)
{
    size_t k = strlen(name);
    for (size_t i = 8; i + k <= n; i++)
        if (memcmp(b + i, name, k) == 0 && b[i - 8] == (uint8_t)k && b[i - 7] == 0) return i + k;
    fail_msg("tensor info %s not found", name);
    return 0;
}

/* ------------------------------------------------------------------ */
/* A small GGUF model with every tensor type and every metadata type.  */

static float f32_a[64];
static uint16_t f16_b[3 * 64];
static uint16_t bf16_c[5 * 32];
static struct moe_block_q8_0 q8_d[4 * 2];         /* [4, 64] */
static struct moe_block_q8_0 q8_e[3 * 2 * 2];     /* experts [3, 2, 64] */
static float f32_f[2 * 3 * 4];                    /* [2, 3, 4] */

static void make_tensor_data(void)
{
    float tmp[64];
    for (int i = 0; i < 64; i++) f32_a[i] = rndf();
    for (int i = 0; i < 3 * 64; i++) f16_b[i] = moe_f32_to_f16(rndf());
    for (int i = 0; i < 5 * 32; i++) bf16_c[i] = moe_f32_to_bf16(rndf());
    for (int r = 0; r < 4; r++) {
        for (int i = 0; i < 64; i++) tmp[i] = rndf();
        moe_quantize_row_q8_0(q8_d + 2 * r, tmp, 64);
    }
    for (int r = 0; r < 6; r++) {
        for (int i = 0; i < 64; i++) tmp[i] = rndf();
        moe_quantize_row_q8_0(q8_e + 2 * r, tmp, 64);
    }
    for (int i = 0; i < 24; i++) f32_f[i] = rndf();
}

static const char *const toks[] = {"<s>", "</s>", "hello", "", "w\xc3\xb6rld"};

static void write_small_gguf(const char *path, uint32_t alignment)
{
    make_tensor_data();
    struct moe_gguf_writer *w = moe_gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(moe_gguf_writer_add_str(w, "general.architecture", "deepseek2"), 0);
    if (alignment) assert_int_equal(moe_gguf_writer_add_u32(w, "general.alignment", alignment), 0);
    struct moe_gguf_value v;
    v = (struct moe_gguf_value){.type = MOE_GGUF_UINT8, .u = 200};
    assert_int_equal(moe_gguf_writer_add_kv(w, "t.u8", &v), 0);
    v = (struct moe_gguf_value){.type = MOE_GGUF_INT8, .i = -100};
    assert_int_equal(moe_gguf_writer_add_kv(w, "t.i8", &v), 0);
    v = (struct moe_gguf_value){.type = MOE_GGUF_UINT16, .u = 65000};
    assert_int_equal(moe_gguf_writer_add_kv(w, "t.u16", &v), 0);
    v = (struct moe_gguf_value){.type = MOE_GGUF_INT16, .i = -30000};
    assert_int_equal(moe_gguf_writer_add_kv(w, "t.i16", &v), 0);
    assert_int_equal(moe_gguf_writer_add_u32(w, "t.u32", 4000000000u), 0);
    assert_int_equal(moe_gguf_writer_add_i32(w, "t.i32", -2000000000), 0);
    assert_int_equal(moe_gguf_writer_add_f32(w, "t.f32", 0.15625f), 0);
    assert_int_equal(moe_gguf_writer_add_bool(w, "t.bool", true), 0);
    assert_int_equal(moe_gguf_writer_add_str(w, "t.str", "héllo"), 0);
    assert_int_equal(moe_gguf_writer_add_u64(w, "t.u64", 0xFFFFFFFFFFFFFFFFull), 0);
    v = (struct moe_gguf_value){.type = MOE_GGUF_INT64, .i = INT64_MIN};
    assert_int_equal(moe_gguf_writer_add_kv(w, "t.i64", &v), 0);
    v = (struct moe_gguf_value){.type = MOE_GGUF_FLOAT64, .f = 1e-300};
    assert_int_equal(moe_gguf_writer_add_kv(w, "t.f64", &v), 0);
    uint8_t au8[3] = {1, 2, 255};
    int32_t ai32[4] = {-1, 0, 1, INT32_MAX};
    float af32[2] = {1.5f, -0.25f};
    double af64[2] = {3.25, -1e10};
    uint8_t abool[3] = {1, 0, 1};
    assert_int_equal(moe_gguf_writer_add_arr(w, "a.u8", MOE_GGUF_UINT8, au8, 3), 0);
    assert_int_equal(moe_gguf_writer_add_arr(w, "a.i32", MOE_GGUF_INT32, ai32, 4), 0);
    assert_int_equal(moe_gguf_writer_add_arr(w, "a.f32", MOE_GGUF_FLOAT32, af32, 2), 0);
    assert_int_equal(moe_gguf_writer_add_arr(w, "a.f64", MOE_GGUF_FLOAT64, af64, 2), 0);
    assert_int_equal(moe_gguf_writer_add_arr(w, "a.bool", MOE_GGUF_BOOL, abool, 3), 0);
    assert_int_equal(moe_gguf_writer_add_arr(w, "a.empty", MOE_GGUF_INT32, NULL, 0), 0);
    assert_int_equal(moe_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 5), 0);
    /* nested: [[u16 7, 8], [[str "x"]]] is not allowed (arrays of arrays
     * hold arrays), so: [[u16 7, 8], [str "x", "yz"]] */
    uint8_t u16raw[4] = {7, 0, 8, 0};
    struct moe_gguf_str xs[2] = {{"x", 1}, {"yz", 2}};
    struct moe_gguf_value inner[2];
    memset(inner, 0, sizeof inner);
    inner[0].type = MOE_GGUF_ARRAY;
    inner[0].arr.type = MOE_GGUF_UINT16;
    inner[0].arr.n = 2;
    inner[0].arr.raw = u16raw;
    inner[1].type = MOE_GGUF_ARRAY;
    inner[1].arr.type = MOE_GGUF_STRING;
    inner[1].arr.n = 2;
    inner[1].arr.strs = xs;
    struct moe_gguf_value outer = {.type = MOE_GGUF_ARRAY};
    outer.arr.type = MOE_GGUF_ARRAY;
    outer.arr.n = 2;
    outer.arr.arrs = inner;
    assert_int_equal(moe_gguf_writer_add_kv(w, "a.nested", &outer), 0);

    assert_int_equal(moe_gguf_writer_add_tensor(w, "a.f32", MOE_W_F32, 1, (int64_t[]){64}, f32_a, sizeof f32_a), 0);
    assert_int_equal(moe_gguf_writer_add_tensor(w, "b.f16", MOE_W_F16, 2, (int64_t[]){3, 64}, f16_b, sizeof f16_b), 0);
    assert_int_equal(moe_gguf_writer_add_tensor(w, "c.bf16", MOE_W_BF16, 2, (int64_t[]){5, 32}, bf16_c, sizeof bf16_c), 0);
    assert_int_equal(moe_gguf_writer_add_tensor(w, "d.q8", MOE_W_Q8_0, 2, (int64_t[]){4, 64}, q8_d, sizeof q8_d), 0);
    assert_int_equal(moe_gguf_writer_add_tensor(w, "blk.0.ffn_up_exps.weight", MOE_W_Q8_0, 3, (int64_t[]){3, 2, 64},
                                                q8_e, sizeof q8_e), 0);
    assert_int_equal(moe_gguf_writer_add_tensor(w, "f.f32", MOE_W_F32, 3, (int64_t[]){2, 3, 4}, f32_f, sizeof f32_f), 0);
    /* a known type moecpu does not compute with: q4_K, ne [256, 2] */
    static uint8_t q4k[2 * 144];
    assert_int_equal(moe_gguf_writer_add_tensor_raw(w, "g.q4k", 12, 2, (uint64_t[]){256, 2}, q4k, sizeof q4k), 0);
    assert_int_equal(moe_gguf_writer_write(w, path, err, sizeof err), 0);
    moe_gguf_writer_free(w);
    assert_int_equal(access(P("small.gguf.tmp"), F_OK), -1); /* renamed away */
}

static void check_tensor(const struct moe_tensor *t, enum moe_wtype type, int n_dims, const int64_t *shape,
                         const void *data, size_t nbytes)
{
    assert_non_null(t);
    assert_int_equal(t->type, type);
    assert_int_equal(t->n_dims, n_dims);
    for (int i = 0; i < n_dims; i++) assert_int_equal(t->shape[i], shape[i]);
    assert_int_equal(t->nbytes, nbytes);
    assert_memory_equal(t->data, data, nbytes);
}

static void test_gguf_roundtrip(void **state)
{
    (void)state;
    const char *path = P("small.gguf");
    write_small_gguf(path, 0);
    struct moe_gguf *g;
    assert_int_equal(moe_gguf_open(&g, path, err, sizeof err), 0);
    assert_int_equal(g->version, 3);
    assert_int_equal(g->alignment, 32);
    assert_int_equal(g->data_offset % 32, 0);
    assert_int_equal(g->n_tensors, 7);

    int64_t i;
    double d;
    bool b;
    const char *s;
    assert_int_equal(moe_gguf_get_int(g, "t.u8", &i, err, sizeof err), 0); assert_int_equal(i, 200);
    assert_int_equal(moe_gguf_get_int(g, "t.i8", &i, err, sizeof err), 0); assert_int_equal(i, -100);
    assert_int_equal(moe_gguf_get_int(g, "t.u16", &i, err, sizeof err), 0); assert_int_equal(i, 65000);
    assert_int_equal(moe_gguf_get_int(g, "t.i16", &i, err, sizeof err), 0); assert_int_equal(i, -30000);
    assert_int_equal(moe_gguf_get_int(g, "t.u32", &i, err, sizeof err), 0); assert_int_equal(i, 4000000000LL);
    assert_int_equal(moe_gguf_get_int(g, "t.i32", &i, err, sizeof err), 0); assert_int_equal(i, -2000000000LL);
    assert_int_equal(moe_gguf_get_int(g, "t.i64", &i, err, sizeof err), 0); assert_true(i == INT64_MIN);
    assert_int_equal(moe_gguf_find(g, "t.u64")->u, 0xFFFFFFFFFFFFFFFFull);
    assert_int_equal(moe_gguf_get_int(g, "t.u64", &i, err, sizeof err), MOE_ERR_TYPE); /* does not fit */
    assert_int_equal(moe_gguf_get_float(g, "t.f32", &d, err, sizeof err), 0); assert_true(d == 0.15625);
    assert_int_equal(moe_gguf_get_float(g, "t.f64", &d, err, sizeof err), 0); assert_true(d == 1e-300);
    assert_int_equal(moe_gguf_get_bool(g, "t.bool", &b, err, sizeof err), 0); assert_true(b);
    assert_int_equal(moe_gguf_get_str(g, "t.str", &s, err, sizeof err), 0); assert_string_equal(s, "héllo");
    assert_int_equal(moe_gguf_find(g, "t.u8")->type, MOE_GGUF_UINT8);
    assert_int_equal(moe_gguf_find(g, "t.i16")->type, MOE_GGUF_INT16);

    /* typed getters: missing key, wrong type */
    assert_int_equal(moe_gguf_get_int(g, "no.such.key", &i, err, sizeof err), MOE_ERR_NOT_FOUND);
    assert_err_has("'no.such.key' missing");
    assert_err_has("small.gguf");
    assert_int_equal(moe_gguf_get_int(g, "t.str", &i, err, sizeof err), MOE_ERR_TYPE);
    assert_err_has("'t.str' is str, expected an integer");
    assert_int_equal(moe_gguf_get_float(g, "t.u32", &d, err, sizeof err), MOE_ERR_TYPE);
    assert_int_equal(moe_gguf_get_str(g, "t.f32", &s, err, sizeof err), MOE_ERR_TYPE);
    assert_int_equal(moe_gguf_get_bool(g, "t.u8", &b, err, sizeof err), MOE_ERR_TYPE);

    const struct moe_gguf_value *a;
    assert_int_equal(moe_gguf_get_arr(g, "a.u8", MOE_GGUF_UINT8, &a, err, sizeof err), 0);
    assert_int_equal(a->arr.n, 3);
    assert_int_equal(moe_gguf_arr_int(a, 2, &i), 0); assert_int_equal(i, 255);
    assert_int_equal(moe_gguf_arr_int(a, 3, &i), MOE_ERR_TYPE); /* out of range */
    assert_int_equal(moe_gguf_get_arr(g, "a.i32", MOE_GGUF_INT32, &a, err, sizeof err), 0);
    assert_int_equal(moe_gguf_arr_int(a, 0, &i), 0); assert_int_equal(i, -1);
    assert_int_equal(moe_gguf_arr_int(a, 3, &i), 0); assert_int_equal(i, INT32_MAX);
    assert_int_equal(moe_gguf_arr_float(a, 0, &d), MOE_ERR_TYPE);
    assert_int_equal(moe_gguf_get_arr(g, "a.f32", MOE_GGUF_FLOAT32, &a, err, sizeof err), 0);
    assert_int_equal(moe_gguf_arr_float(a, 1, &d), 0); assert_true(d == -0.25);
    assert_int_equal(moe_gguf_get_arr(g, "a.f64", MOE_GGUF_FLOAT64, &a, err, sizeof err), 0);
    assert_int_equal(moe_gguf_arr_float(a, 1, &d), 0); assert_true(d == -1e10);
    assert_int_equal(moe_gguf_get_arr(g, "a.bool", MOE_GGUF_BOOL, &a, err, sizeof err), 0);
    assert_int_equal(((const uint8_t *)a->arr.raw)[1], 0);
    assert_int_equal(moe_gguf_get_arr(g, "a.empty", MOE_GGUF_TYPE_COUNT, &a, err, sizeof err), 0);
    assert_int_equal(a->arr.n, 0);
    assert_int_equal(moe_gguf_get_arr(g, "a.u8", MOE_GGUF_INT32, &a, err, sizeof err), MOE_ERR_TYPE);
    assert_err_has("array of u8");
    assert_int_equal(moe_gguf_get_arr(g, "tokenizer.ggml.tokens", MOE_GGUF_STRING, &a, err, sizeof err), 0);
    assert_int_equal(a->arr.n, 5);
    for (int k = 0; k < 5; k++) assert_string_equal(moe_gguf_arr_str(a, (uint64_t)k), toks[k]);
    assert_null(moe_gguf_arr_str(a, 5));
    assert_int_equal(moe_gguf_get_arr(g, "a.nested", MOE_GGUF_ARRAY, &a, err, sizeof err), 0);
    assert_int_equal(a->arr.n, 2);
    assert_int_equal(a->arr.arrs[0].arr.type, MOE_GGUF_UINT16);
    assert_int_equal(moe_gguf_arr_int(&a->arr.arrs[0], 1, &i), 0); assert_int_equal(i, 8);
    assert_string_equal(moe_gguf_arr_str(&a->arr.arrs[1], 1), "yz");

    /* tensors: shapes outermost first, bytes as written, aligned */
    check_tensor(moe_gguf_find_tensor(g, "a.f32"), MOE_W_F32, 1, (int64_t[]){64}, f32_a, sizeof f32_a);
    check_tensor(moe_gguf_find_tensor(g, "b.f16"), MOE_W_F16, 2, (int64_t[]){3, 64}, f16_b, sizeof f16_b);
    check_tensor(moe_gguf_find_tensor(g, "c.bf16"), MOE_W_BF16, 2, (int64_t[]){5, 32}, bf16_c, sizeof bf16_c);
    check_tensor(moe_gguf_find_tensor(g, "d.q8"), MOE_W_Q8_0, 2, (int64_t[]){4, 64}, q8_d, sizeof q8_d);
    check_tensor(moe_gguf_find_tensor(g, "blk.0.ffn_up_exps.weight"), MOE_W_Q8_0, 3, (int64_t[]){3, 2, 64}, q8_e,
                 sizeof q8_e);
    check_tensor(moe_gguf_find_tensor(g, "f.f32"), MOE_W_F32, 3, (int64_t[]){2, 3, 4}, f32_f, sizeof f32_f);
    const struct moe_tensor *q4 = moe_gguf_find_tensor(g, "g.q4k");
    assert_non_null(q4);
    assert_int_equal(q4->type, MOE_W_UNSUPPORTED);
    assert_string_equal(q4->dtype, "q4_K");
    assert_int_equal(q4->nbytes, 288);
    assert_int_equal(moe_tensor_check_type(q4, err, sizeof err), MOE_ERR_UNSUPPORTED);
    assert_err_has("tensor 'g.q4k': unsupported dtype q4_K");
    assert_null(moe_gguf_find_tensor(g, "nope"));
    for (size_t k = 0; k < g->n_tensors; k++) {
        assert_int_equal(((const uint8_t *)g->tensors[k].data - g->map) % 32, 0);
        assert_string_equal(g->tensors[k].file, path);
    }
    assert_int_equal(g->ggml_type[3], MOE_GGML_Q8_0);
    moe_gguf_close(g);

    /* a v2 header is accepted too */
    size_t n;
    uint8_t *buf = read_all(path, &n);
    put_u32(buf + 4, 2);
    write_all(P("v2.gguf"), buf, n);
    assert_int_equal(moe_gguf_open(&g, P("v2.gguf"), err, sizeof err), 0);
    assert_int_equal(g->version, 2);
    moe_gguf_close(g);
    free(buf);

    /* general.alignment is honoured by writer and reader */
    write_small_gguf(P("a64.gguf"), 64);
    assert_int_equal(moe_gguf_open(&g, P("a64.gguf"), err, sizeof err), 0);
    assert_int_equal(g->alignment, 64);
    for (size_t k = 0; k < g->n_tensors; k++) assert_int_equal(((const uint8_t *)g->tensors[k].data - g->map) % 64, 0);
    check_tensor(moe_gguf_find_tensor(g, "d.q8"), MOE_W_Q8_0, 2, (int64_t[]){4, 64}, q8_d, sizeof q8_d);
    moe_gguf_close(g);
}

static void test_gguf_writer_rejects(void **state)
{
    (void)state;
    struct moe_gguf_writer *w = moe_gguf_writer_new();
    float x[40] = {0};
    /* Q8_0 needs cols % 32 == 0; FP8 does not exist in GGUF; size must match */
    assert_int_equal(moe_gguf_writer_add_tensor(w, "q", MOE_W_Q8_0, 2, (int64_t[]){1, 40}, x, 34), MOE_ERR_INVALID);
    assert_int_equal(moe_gguf_writer_write(w, P("never.gguf"), err, sizeof err), MOE_ERR_INVALID);
    assert_err_has("'q'");
    assert_int_equal(access(P("never.gguf"), F_OK), -1);
    moe_gguf_writer_free(w);
    w = moe_gguf_writer_new();
    assert_int_equal(moe_gguf_writer_add_tensor(w, "e", MOE_W_FP8, 1, (int64_t[]){40}, x, 40), MOE_ERR_UNSUPPORTED);
    moe_gguf_writer_free(w);
    w = moe_gguf_writer_new();
    assert_int_equal(moe_gguf_writer_add_tensor(w, "f", MOE_W_F32, 1, (int64_t[]){40}, x, 100), MOE_ERR_INVALID);
    moe_gguf_writer_free(w);
    w = moe_gguf_writer_new();
    assert_int_equal(moe_gguf_writer_add_u32(w, "k", 1), 0);
    assert_int_equal(moe_gguf_writer_add_u32(w, "k", 2), MOE_ERR_INVALID);
    moe_gguf_writer_free(w);
    /* a directory that does not exist */
    w = moe_gguf_writer_new();
    assert_int_equal(moe_gguf_writer_write(w, P("no/such/dir/x.gguf"), err, sizeof err), MOE_ERR_IO);
    moe_gguf_writer_free(w);
}

/* Open bytes as a GGUF file; returns the status (err holds the message). */
static int open_gguf_bytes(const uint8_t *b, size_t n)
{
    const char *path = P("bad.gguf");
    write_all(path, b, n);
    struct moe_gguf *g = NULL;
    err[0] = 0;
    int rc = moe_gguf_open(&g, path, err, sizeof err);
    if (rc == 0) {
        assert_non_null(g);
        moe_gguf_close(g);
    } else {
        assert_null(g);
        assert_true(err[0] != 0);
    }
    return rc;
}

static void test_gguf_corrupt(void **state)
{
    (void)state;
    const char *path = P("small.gguf");
    write_small_gguf(path, 0);
    size_t n;
    uint8_t *orig = read_all(path, &n);
    uint8_t *b = malloc(n + 64);

    /* the end of the last tensor's bytes: cutting anywhere before must fail */
    struct moe_gguf *g;
    assert_int_equal(moe_gguf_open(&g, path, err, sizeof err), 0);
    size_t data_end = 0;
    for (size_t k = 0; k < g->n_tensors; k++) {
        size_t e = (size_t)((const uint8_t *)g->tensors[k].data - g->map) + g->tensors[k].nbytes;
        if (e > data_end) data_end = e;
    }
    moe_gguf_close(g);
    for (size_t cut = 0; cut < n; cut++) {
        int rc = open_gguf_bytes(orig, cut);
        if (cut < data_end) {
            assert_int_not_equal(rc, 0);
            if (cut >= 4 && !strstr(err, "truncated") && !strstr(err, "past end") && !strstr(err, "fit"))
                fail_msg("cut at %zu: %s", cut, err);
        }
    }
    assert_int_equal(open_gguf_bytes(orig, 4), MOE_ERR_FORMAT);
    assert_err_has("truncated");

    /* garbage, zeros, empty */
    for (size_t i = 0; i < 512; i++) b[i] = (uint8_t)rnd32();
    b[0] = 'X';
    assert_int_equal(open_gguf_bytes(b, 512), MOE_ERR_FORMAT);
    assert_err_has("not a GGUF file");
    memset(b, 0, 512);
    assert_int_equal(open_gguf_bytes(b, 512), MOE_ERR_FORMAT);
    assert_int_equal(open_gguf_bytes(b, 0), MOE_ERR_FORMAT);
    /* magic then zeros: version 0 */
    memcpy(b, "GGUF", 4);
    assert_int_equal(open_gguf_bytes(b, 512), MOE_ERR_FORMAT);

    /* versions */
    memcpy(b, orig, n);
    put_u32(b + 4, 1);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_UNSUPPORTED);
    put_u32(b + 4, 0x03000000); /* big-endian v3 */
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_UNSUPPORTED);
    assert_err_has("big-endian");

    /* huge counts */
    memcpy(b, orig, n);
    put_u64(b + 8, 1ull << 62);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("tensors cannot fit");
    memcpy(b, orig, n);
    put_u64(b + 16, UINT64_MAX);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("metadata entries cannot fit");
    /* more entries than there are: runs into the tensor infos, then fails */
    memcpy(b, orig, n);
    put_u64(b + 16, 40);
    assert_int_not_equal(open_gguf_bytes(b, n), 0);
    /* the first key's length */
    memcpy(b, orig, n);
    put_u64(b + 24, 1ull << 40);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("past end of file");
    put_u64(b + 24, UINT64_MAX);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    /* the first value's type */
    memcpy(b, orig, n);
    size_t klen = 20; /* "general.architecture" */
    put_u32(b + 32 + klen, 13);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("unknown value type 13");
    assert_err_has("general.architecture");
    /* an array count: tokenizer.ggml.tokens is "arr" u32 type, u64 n */
    memcpy(b, orig, n);
    size_t at = find_info(b, n, "tokenizer.ggml.tokens");
    assert_int_equal(b[at], MOE_GGUF_ARRAY);
    put_u64(b + at + 8, 1ull << 61);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("does not fit");
    /* a bool that is neither 0 nor 1 */
    memcpy(b, orig, n);
    at = find_info(b, n, "t.bool");
    b[at + 4] = 7;
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("bool");

    /* tensor infos: offset past the end, misaligned, unknown type, dims */
    memcpy(b, orig, n);
    at = find_info(b, n, "d.q8"); /* n_dims 2, ne0, ne1, type, offset */
    size_t t_at = at + 4 + 16, o_at = t_at + 4;
    put_u64(b + o_at, (uint64_t)n);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("tensor 'd.q8'");
    assert_err_has("past end of file");
    put_u64(b + o_at, UINT64_MAX - 31); /* overflow, still aligned */
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("past end of file");
    memcpy(b, orig, n);
    put_u64(b + o_at, 8);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("not a multiple of the alignment");
    memcpy(b, orig, n);
    put_u32(b + t_at, 99);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("unknown ggml type 99");
    put_u32(b + t_at, 4); /* a removed type number */
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    memcpy(b, orig, n);
    put_u64(b + at + 4, 40); /* Q8_0 with 40 columns */
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("not a multiple of the q8_0 block");
    memcpy(b, orig, n);
    put_u64(b + at + 4, 1ull << 62); /* shape times block bytes overflows */
    assert_int_not_equal(open_gguf_bytes(b, n), 0);
    put_u64(b + at + 4, 64);
    put_u64(b + at + 12, 1ull << 60);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    memcpy(b, orig, n);
    put_u32(b + at, 5);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("5 dimensions");
    put_u32(b + at, 0);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    /* shape grown so the data no longer fits: 4 rows -> 4000 */
    memcpy(b, orig, n);
    put_u64(b + at + 12, 4000);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("past end of file");
    /* a duplicate tensor name: rename b.f16 to a.f32's name length-alike */
    memcpy(b, orig, n);
    at = find_info(b, n, "b.f16");
    memcpy(b + at - 5, "a.f32", 5);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("appears twice");
    /* a duplicate key */
    memcpy(b, orig, n);
    at = find_info(b, n, "t.i16");
    memcpy(b + at - 5, "t.u16", 5);
    assert_int_equal(open_gguf_bytes(b, n), MOE_ERR_FORMAT);
    assert_err_has("appears twice");
    /* alignment not a power of two */
    write_small_gguf(P("a.gguf"), 64);
    size_t n2;
    uint8_t *b2 = read_all(P("a.gguf"), &n2);
    at = find_info(b2, n2, "general.alignment");
    put_u32(b2 + at + 4, 48);
    assert_int_equal(open_gguf_bytes(b2, n2), MOE_ERR_FORMAT);
    assert_err_has("general.alignment");
    free(b2);
    /* a split GGUF part */
    struct moe_gguf_writer *w = moe_gguf_writer_new();
    moe_gguf_writer_add_kv(w, "split.count", &(struct moe_gguf_value){.type = MOE_GGUF_UINT16, .u = 3});
    assert_int_equal(moe_gguf_writer_write(w, P("split.gguf"), err, sizeof err), 0);
    moe_gguf_writer_free(w);
    assert_int_equal(moe_gguf_open(&g, P("split.gguf"), err, sizeof err), MOE_ERR_UNSUPPORTED);
    assert_err_has("split");
    /* deeply nested arrays */
    {
        uint8_t d[24 + 8 + 1 + 4 + 20 * 12 + 12];
        size_t k = 0;
        memcpy(d, "GGUF", 4);
        put_u32(d + 4, 3);
        put_u64(d + 8, 0);
        put_u64(d + 16, 1);
        k = 24;
        put_u64(d + k, 1), k += 8;
        d[k++] = 'k';
        put_u32(d + k, MOE_GGUF_ARRAY), k += 4;
        for (int lvl = 0; lvl < 20; lvl++) {
            put_u32(d + k, MOE_GGUF_ARRAY), k += 4;
            put_u64(d + k, 1), k += 8;
        }
        put_u32(d + k, MOE_GGUF_UINT8), k += 4;
        put_u64(d + k, 0), k += 8;
        assert_int_equal(open_gguf_bytes(d, k), MOE_ERR_FORMAT);
        assert_err_has("nested");
    }
    free(orig);
    free(b);
}

/* ------------------------------------------------------------------ */
/* safetensors                                                         */

static uint8_t fp8_w[6 * 40];
static float fp8_s[1 * 1];
static uint16_t st_bf16[3 * 5 * 8];  /* [3, 5, 8] experts */
static uint16_t st_f16[7];
static float st_f32[4 * 4];
static int64_t st_i64[3] = {1, -2, 3};
static float st_scalar = 2.5f;

static struct moe_st_writer *small_st_writer(void)
{
    for (size_t i = 0; i < sizeof fp8_w; i++) fp8_w[i] = moe_f32_to_fp8(rndf());
    fp8_s[0] = 0.5f;
    for (size_t i = 0; i < sizeof st_bf16 / 2; i++) st_bf16[i] = moe_f32_to_bf16(rndf());
    for (size_t i = 0; i < 7; i++) st_f16[i] = moe_f32_to_f16(rndf());
    for (size_t i = 0; i < 16; i++) st_f32[i] = rndf();
    struct moe_st_writer *w = moe_st_writer_new();
    assert_non_null(w);
    /* odd sizes first so the writer has to reorder for alignment */
    assert_int_equal(moe_st_writer_add(w, "model.layers.0.mlp.down_proj.weight", "F8_E4M3", 2, (int64_t[]){6, 40},
                                       fp8_w, sizeof fp8_w), 0);
    assert_int_equal(moe_st_writer_add(w, "h.f16", "F16", 1, (int64_t[]){7}, st_f16, sizeof st_f16), 0);
    assert_int_equal(moe_st_writer_add(w, "model.layers.0.mlp.down_proj.weight_scale_inv", "F32", 2,
                                       (int64_t[]){1, 1}, fp8_s, sizeof fp8_s), 0);
    assert_int_equal(moe_st_writer_add(w, "experts.bf16", "BF16", 3, (int64_t[]){3, 5, 8}, st_bf16, sizeof st_bf16), 0);
    assert_int_equal(moe_st_writer_add(w, "m.f32", "F32", 2, (int64_t[]){4, 4}, st_f32, sizeof st_f32), 0);
    assert_int_equal(moe_st_writer_add(w, "ids.i64", "I64", 1, (int64_t[]){3}, st_i64, sizeof st_i64), 0);
    assert_int_equal(moe_st_writer_add(w, "scalar", "F32", 0, NULL, &st_scalar, 4), 0);
    assert_int_equal(moe_st_writer_add_metadata(w, "format", "pt"), 0);
    return w;
}

static void check_small_st(const struct moe_safetensors *st)
{
    assert_int_equal(st->n_tensors, 7);
    check_tensor(moe_safetensors_find(st, "model.layers.0.mlp.down_proj.weight"), MOE_W_FP8, 2, (int64_t[]){6, 40},
                 fp8_w, sizeof fp8_w);
    check_tensor(moe_safetensors_find(st, "model.layers.0.mlp.down_proj.weight_scale_inv"), MOE_W_F32, 2,
                 (int64_t[]){1, 1}, fp8_s, sizeof fp8_s);
    check_tensor(moe_safetensors_find(st, "h.f16"), MOE_W_F16, 1, (int64_t[]){7}, st_f16, sizeof st_f16);
    check_tensor(moe_safetensors_find(st, "experts.bf16"), MOE_W_BF16, 3, (int64_t[]){3, 5, 8}, st_bf16,
                 sizeof st_bf16);
    check_tensor(moe_safetensors_find(st, "m.f32"), MOE_W_F32, 2, (int64_t[]){4, 4}, st_f32, sizeof st_f32);
    check_tensor(moe_safetensors_find(st, "scalar"), MOE_W_F32, 0, NULL, &st_scalar, 4);
    const struct moe_tensor *t = moe_safetensors_find(st, "ids.i64");
    check_tensor(t, MOE_W_UNSUPPORTED, 1, (int64_t[]){3}, st_i64, sizeof st_i64);
    assert_string_equal(t->dtype, "I64");
    assert_int_equal(moe_tensor_check_type(t, err, sizeof err), MOE_ERR_UNSUPPORTED);
    assert_err_has("tensor 'ids.i64': unsupported dtype I64");
    assert_null(moe_safetensors_find(st, "__metadata__"));
    for (size_t i = 0; i < st->n_tensors; i++) {
        const struct moe_tensor *x = &st->tensors[i];
        size_t es = moe_st_dtype_size(x->dtype, NULL);
        assert_int_equal((uintptr_t)x->data % es, 0);
    }
}

static void test_st_roundtrip(void **state)
{
    (void)state;
    const char *dir = P("st1");
    mkdir_p(dir);
    struct moe_st_writer *w = small_st_writer();
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(moe_st_writer_write_dir(w, dir, 0, err, sizeof err), 0);
    moe_st_writer_free(w);

    struct moe_safetensors *st;
    assert_int_equal(moe_safetensors_open_file(&st, path, err, sizeof err), 0);
    assert_int_equal(st->n_shards, 1);
    check_small_st(st);
    moe_safetensors_close(st);
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), 0);
    check_small_st(st);
    moe_safetensors_close(st);

    /* the unified view: directory, and the file itself */
    struct moe_model_files *mf;
    assert_int_equal(moe_model_files_open(&mf, dir, err, sizeof err), 0);
    assert_int_equal(mf->kind, MOE_FILES_SAFETENSORS);
    assert_int_equal(mf->n_tensors, 7);
    assert_string_equal(mf->dir, dir);
    const struct moe_tensor *t;
    assert_int_equal(moe_model_files_get(mf, "experts.bf16", 3, (int64_t[]){3, 5, 8}, &t, err, sizeof err), 0);
    assert_int_equal(t->type, MOE_W_BF16);
    assert_int_equal(moe_model_files_get(mf, "experts.bf16", 3, (int64_t[]){-1, 5, -1}, &t, err, sizeof err), 0);
    assert_int_equal(moe_model_files_get(mf, "experts.bf16", 2, (int64_t[]){5, 8}, &t, err, sizeof err), MOE_ERR_TYPE);
    assert_err_has("shape [3, 5, 8], expected [5, 8]");
    assert_int_equal(moe_model_files_get(mf, "m.f32", 2, (int64_t[]){4, 5}, &t, err, sizeof err), MOE_ERR_TYPE);
    assert_int_equal(moe_model_files_get(mf, "missing.weight", 0, NULL, &t, err, sizeof err), MOE_ERR_NOT_FOUND);
    assert_err_has("tensor 'missing.weight' missing");
    assert_null(t);
    assert_int_equal(moe_model_files_get(mf, "ids.i64", 0, NULL, &t, err, sizeof err), MOE_ERR_UNSUPPORTED);
    assert_err_has("model.safetensors: tensor 'ids.i64': unsupported dtype I64");
    moe_model_files_close(mf);
    assert_int_equal(moe_model_files_open(&mf, path, err, sizeof err), 0);
    assert_int_equal(mf->kind, MOE_FILES_SAFETENSORS);
    assert_string_equal(mf->dir, dir);
    moe_model_files_close(mf);

    /* one file via write_file */
    w = small_st_writer();
    assert_int_equal(moe_st_writer_write_file(w, P("one.safetensors"), err, sizeof err), 0);
    moe_st_writer_free(w);
    assert_int_equal(moe_safetensors_open_file(&st, P("one.safetensors"), err, sizeof err), 0);
    check_small_st(st);
    moe_safetensors_close(st);
}

static void test_st_sharded(void **state)
{
    (void)state;
    const char *dir = P("st_sharded");
    mkdir_p(dir);
    struct moe_st_writer *w = small_st_writer();
    assert_int_equal(moe_st_writer_write_dir(w, dir, 200, err, sizeof err), 0);
    moe_st_writer_free(w);
    struct moe_safetensors *st;
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), 0);
    assert_true(st->n_shards >= 3);
    check_small_st(st);
    /* each tensor knows its shard */
    const struct moe_tensor *a = moe_safetensors_find(st, "model.layers.0.mlp.down_proj.weight");
    const struct moe_tensor *b = moe_safetensors_find(st, "scalar");
    assert_string_not_equal(a->file, b->file);
    assert_non_null(strstr(a->file, "model-00001-of-"));
    moe_safetensors_close(st);

    struct moe_model_files *mf;
    assert_int_equal(moe_model_files_open(&mf, dir, err, sizeof err), 0);
    size_t seen = 0;
    for (size_t i = 0; i < mf->n_tensors; i++) {
        assert_ptr_equal(moe_model_files_find(mf, mf->tensors[i].name), &mf->tensors[i]);
        seen++;
    }
    assert_int_equal(seen, 7);
    moe_model_files_close(mf);
}

/* A safetensors file with a hand-made header, padded with spaces to a
 * multiple of 8 bytes as real writers do (so the data stays aligned). */
static void write_st_raw(const char *path, const char *hdr, const void *data, size_t n)
{
    size_t h0 = strlen(hdr), h = (h0 + 7) & ~(size_t)7;
    uint8_t *b = malloc(8 + h + n + 1);
    put_u64(b, h);
    memcpy(b + 8, hdr, h0);
    memset(b + 8 + h0, ' ', h - h0);
    if (n) memcpy(b + 8 + h, data, n);
    write_all(path, b, 8 + h + n);
    free(b);
}

static int open_st_raw(const char *hdr, size_t ndata)
{
    static uint8_t zeros[4096];
    assert_true(ndata <= sizeof zeros);
    const char *path = P("raw.safetensors");
    write_st_raw(path, hdr, zeros, ndata);
    struct moe_safetensors *st = NULL;
    err[0] = 0;
    int rc = moe_safetensors_open_file(&st, path, err, sizeof err);
    if (rc == 0) moe_safetensors_close(st);
    else {
        assert_null(st);
        assert_true(err[0] != 0);
    }
    return rc;
}

static int open_st_bytes(const uint8_t *b, size_t n)
{
    const char *path = P("bytes.safetensors");
    write_all(path, b, n);
    struct moe_safetensors *st = NULL;
    err[0] = 0;
    int rc = moe_safetensors_open_file(&st, path, err, sizeof err);
    if (rc == 0) {
        for (size_t i = 0; i < st->n_tensors; i++) {
            const struct moe_tensor *t = &st->tensors[i];
            if (t->nbytes) {
                volatile uint8_t x = ((const uint8_t *)t->data)[0];
                x = ((const uint8_t *)t->data)[t->nbytes - 1];
                (void)x;
            }
        }
        moe_safetensors_close(st);
    } else {
        assert_null(st);
        assert_true(err[0] != 0);
    }
    return rc;
}

static void test_st_corrupt(void **state)
{
    (void)state;
    /* a valid base */
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24), 0);
    assert_int_equal(open_st_raw("{}", 0), 0);
    assert_int_equal(open_st_raw("{\"__metadata__\":{\"format\":\"pt\"}}", 0), 0);
    /* past the end, mismatched sizes, bad fields */
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 20),
                     MOE_ERR_FORMAT);
    assert_err_has("raw.safetensors: tensor 'a': data_offsets end 24 past end of file (20 data bytes)");
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24),
                     MOE_ERR_FORMAT);
    assert_err_has("tensor 'a': data_offsets hold 20 bytes, shape and F32 need 24");
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,2]}}", 8),
                     MOE_ERR_FORMAT);
    assert_err_has("unknown dtype 'Q4'");
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,-8]}}", 8),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8), MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8), MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":[1,2]}", 8), MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 8),
                     MOE_ERR_UNSUPPORTED);
    /* overflowing shapes and offsets */
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", 8),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[9223372036854775800,9223372036854775807]}}", 8),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8),
                     MOE_ERR_FORMAT);
    /* misaligned F32 data */
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1,5]}}", 8),
                     MOE_ERR_FORMAT);
    assert_err_has("not aligned");
    /* duplicate keys, malformed JSON, not an object */
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8),
                     MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{\"a\":{\"dtype\":\"F32\",", 8), MOE_ERR_FORMAT);
    assert_err_has("header JSON");
    assert_int_equal(open_st_raw("[1,2,3]", 0), MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{", 0), MOE_ERR_FORMAT);
    assert_int_equal(open_st_raw("{}  trailing", 0), MOE_ERR_FORMAT);

    /* header lengths: huge, zero, garbage */
    uint8_t b[64] = {0};
    put_u64(b, UINT64_MAX);
    assert_int_equal(open_st_bytes(b, 64), MOE_ERR_FORMAT);
    assert_err_has("past end of file");
    put_u64(b, 56);
    assert_int_equal(open_st_bytes(b, 64), MOE_ERR_FORMAT); /* zeros are not JSON */
    put_u64(b, 0);
    assert_int_equal(open_st_bytes(b, 64), MOE_ERR_FORMAT);
    assert_int_equal(open_st_bytes(b, 5), MOE_ERR_FORMAT);
    assert_err_has("truncated");
    assert_int_equal(open_st_bytes(b, 0), MOE_ERR_FORMAT);
    for (int i = 0; i < 64; i++) b[i] = (uint8_t)rnd32();
    assert_int_equal(open_st_bytes(b, 64), MOE_ERR_FORMAT);

    /* truncation of a real file at every length */
    struct moe_st_writer *w = small_st_writer();
    assert_int_equal(moe_st_writer_write_file(w, P("full.safetensors"), err, sizeof err), 0);
    moe_st_writer_free(w);
    size_t n;
    uint8_t *orig = read_all(P("full.safetensors"), &n);
    for (size_t cut = 0; cut < n; cut++) assert_int_not_equal(open_st_bytes(orig, cut), 0);
    assert_int_equal(open_st_bytes(orig, n), 0);
    free(orig);
}

static void test_st_index_errors(void **state)
{
    (void)state;
    const char *dir = P("st_idx");
    mkdir_p(dir);
    struct moe_st_writer *w = small_st_writer();
    assert_int_equal(moe_st_writer_write_dir(w, dir, 200, err, sizeof err), 0);
    moe_st_writer_free(w);
    char ip[600], sp[600];
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", dir);
    struct moe_safetensors *st;

    /* a shard that does not exist */
    write_text(ip, "{\"weight_map\": {\"h.f16\": \"model-00001-of-00004.safetensors\","
                   " \"m.f32\": \"model-00009-of-00009.safetensors\"}}");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_NOT_FOUND);
    assert_err_has("shard 'model-00009-of-00009.safetensors'");
    assert_err_has("'m.f32'");
    assert_err_has("does not exist");
    /* a tensor the shard lacks */
    write_text(ip, "{\"weight_map\": {\"no.such.tensor\": \"model-00001-of-00004.safetensors\"}}");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_NOT_FOUND);
    assert_err_has("tensor 'no.such.tensor' listed in shard 'model-00001-of-00004.safetensors', which lacks it");
    /* a tensor listed in the wrong shard */
    write_text(ip, "{\"weight_map\": {\"scalar\": \"model-00001-of-00004.safetensors\","
                   " \"h.f16\": \"model-00004-of-00004.safetensors\"}}");
    int rc = moe_safetensors_open_dir(&st, dir, err, sizeof err);
    if (rc == 0) moe_safetensors_close(st); /* (only if the writer happened to put them so) */
    else assert_err_has("which lacks it");
    /* path escapes, malformed json, wrong types */
    write_text(ip, "{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_FORMAT);
    write_text(ip, "{\"weight_map\": {\"a\": \"/etc/passwd\"}}");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_FORMAT);
    write_text(ip, "{\"weight_map\": {\"a\": 3}}");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_FORMAT);
    write_text(ip, "{\"weight_map\": {}}");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_FORMAT);
    write_text(ip, "{\"metadata\": {}}");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_FORMAT);
    assert_err_has("weight_map");
    write_text(ip, "{\"weight_map\": {\"a\": ");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_FORMAT);
    assert_err_has("model.safetensors.index.json");
    write_text(ip, "");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_FORMAT);
    /* a corrupt shard behind a good index */
    write_text(ip, "{\"weight_map\": {\"bad\": \"bad.safetensors\"}}");
    snprintf(sp, sizeof sp, "%s/bad.safetensors", dir);
    write_st_raw(sp, "{\"bad\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "12345678", 8);
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_FORMAT);
    assert_err_has("bad.safetensors: tensor 'bad': data_offsets end 16 past end of file (8 data bytes)");
    /* the same tensor in two shards */
    write_text(ip, "{\"weight_map\": {\"bad\": \"bad.safetensors\", \"x\": \"bad2.safetensors\"}}");
    snprintf(sp, sizeof sp, "%s/bad.safetensors", dir);
    write_st_raw(sp, "{\"bad\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "12345678", 8);
    snprintf(sp, sizeof sp, "%s/bad2.safetensors", dir);
    write_st_raw(sp, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"bad\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "12345678", 8);
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_FORMAT);
    assert_err_has("appears twice");
    /* a good index again */
    write_text(ip, "{\"weight_map\": {\"bad\": \"bad.safetensors\", \"x\": \"bad.safetensors\"}}");
    snprintf(sp, sizeof sp, "%s/bad.safetensors", dir);
    write_st_raw(sp, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"bad\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "12345678", 8);
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), 0);
    moe_safetensors_close(st);

    /* a shard that is a FIFO must fail, not hang */
    snprintf(sp, sizeof sp, "%s/fifo.safetensors", dir);
    assert_int_equal(mkfifo(sp, 0600), 0);
    write_text(ip, "{\"weight_map\": {\"f\": \"fifo.safetensors\"}}");
    assert_int_equal(moe_safetensors_open_dir(&st, dir, err, sizeof err), MOE_ERR_IO);
    assert_err_has("not a regular file");

    /* an empty directory */
    mkdir_p(P("empty_dir"));
    assert_int_equal(moe_safetensors_open_dir(&st, P("empty_dir"), err, sizeof err), MOE_ERR_NOT_FOUND);
    assert_err_has("no model.safetensors");
}

static void test_model_files_paths(void **state)
{
    (void)state;
    struct moe_model_files *mf = (void *)1;
    assert_int_equal(moe_model_files_open(&mf, P("does-not-exist"), err, sizeof err), MOE_ERR_NOT_FOUND);
    assert_null(mf);
    assert_err_has("does-not-exist");
    assert_int_equal(moe_model_files_open(&mf, "", err, sizeof err), MOE_ERR_INVALID);
    write_text(P("notes.txt"), "hello");
    assert_int_equal(moe_model_files_open(&mf, P("notes.txt"), err, sizeof err), MOE_ERR_UNSUPPORTED);
    assert_err_has("neither");
    write_text(P("fake.gguf"), "GGUX and more");
    assert_int_equal(moe_model_files_open(&mf, P("fake.gguf"), err, sizeof err), MOE_ERR_FORMAT);
    assert_err_has("not a GGUF file");
    write_text(P("empty.gguf"), "");
    assert_int_equal(moe_model_files_open(&mf, P("empty.gguf"), err, sizeof err), MOE_ERR_FORMAT);
    if (access("/dev/null", F_OK) == 0) {
        assert_int_equal(moe_model_files_open(&mf, "/dev/null", err, sizeof err), MOE_ERR_UNSUPPORTED);
    }
    mkdir_p(P("nomodel"));
    assert_int_equal(moe_model_files_open(&mf, P("nomodel"), err, sizeof err), MOE_ERR_NOT_FOUND);
    /* a GGUF is known by its magic, whatever its name */
    write_small_gguf(P("small.gguf"), 0);
    size_t n;
    uint8_t *b = read_all(P("small.gguf"), &n);
    write_all(P("weights.bin"), b, n);
    free(b);
    assert_int_equal(moe_model_files_open(&mf, P("weights.bin"), err, sizeof err), 0);
    assert_int_equal(mf->kind, MOE_FILES_GGUF);
    assert_string_equal(mf->dir, g_dir);
    assert_int_equal(mf->n_tensors, 7);
    const struct moe_tensor *t;
    assert_int_equal(moe_model_files_get(mf, "blk.0.ffn_up_exps.weight", 3, (int64_t[]){3, 2, 64}, &t, err, sizeof err), 0);
    assert_int_equal(t->type, MOE_W_Q8_0);
    assert_int_equal(moe_model_files_get(mf, "g.q4k", 0, NULL, &t, err, sizeof err), MOE_ERR_UNSUPPORTED);
    assert_err_has("weights.bin: tensor 'g.q4k': unsupported dtype q4_K");
    moe_model_files_close(mf);
    moe_model_files_close(NULL);
    /* a relative path */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(g_dir), 0);
    assert_int_equal(moe_model_files_open(&mf, "small.gguf", err, sizeof err), 0);
    assert_string_equal(mf->dir, ".");
    moe_model_files_close(mf);
    assert_int_equal(chdir(cwd), 0);
}

/* ------------------------------------------------------------------ */
/* config                                                              */

static const char *v3_json =
    "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\","
    " \"vocab_size\": 129280, \"hidden_size\": 7168, \"intermediate_size\": 18432,"
    " \"moe_intermediate_size\": 2048, \"num_hidden_layers\": 61, \"num_nextn_predict_layers\": 1,"
    " \"num_attention_heads\": 128, \"num_key_value_heads\": 128, \"n_shared_experts\": 1,"
    " \"n_routed_experts\": 256, \"routed_scaling_factor\": 2.5, \"kv_lora_rank\": 512,"
    " \"q_lora_rank\": 1536, \"qk_rope_head_dim\": 64, \"v_head_dim\": 128, \"qk_nope_head_dim\": 128,"
    " \"topk_method\": \"noaux_tc\", \"n_group\": 8, \"topk_group\": 4, \"num_experts_per_tok\": 8,"
    " \"moe_layer_freq\": 1, \"first_k_dense_replace\": 3, \"norm_topk_prob\": true,"
    " \"scoring_func\": \"sigmoid\", \"hidden_act\": \"silu\", \"max_position_embeddings\": 163840,"
    " \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000, \"bos_token_id\": 0, \"eos_token_id\": 1,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\","
    " \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 1.0,"
    "   \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 4096, \"type\": \"yarn\"},"
    " \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\","
    "   \"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}}";

static const char *v2lite_json =
    "{\"model_type\": \"deepseek_v2\", \"vocab_size\": 102400, \"hidden_size\": 2048,"
    " \"intermediate_size\": 10944, \"moe_intermediate_size\": 1408, \"num_hidden_layers\": 27,"
    " \"num_attention_heads\": 16, \"n_shared_experts\": 2, \"n_routed_experts\": 64,"
    " \"routed_scaling_factor\": 1.0, \"kv_lora_rank\": 512, \"q_lora_rank\": null,"
    " \"qk_rope_head_dim\": 64, \"v_head_dim\": 128, \"qk_nope_head_dim\": 128,"
    " \"topk_method\": \"greedy\", \"n_group\": 1, \"topk_group\": 1, \"num_experts_per_tok\": 6,"
    " \"first_k_dense_replace\": 1, \"norm_topk_prob\": false, \"scoring_func\": \"softmax\","
    " \"max_position_embeddings\": 163840, \"rope_theta\": 10000, \"bos_token_id\": 100000,"
    " \"eos_token_id\": 100001, \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40,"
    " \"mscale\": 0.707, \"mscale_all_dim\": 0.707, \"original_max_position_embeddings\": 4096,"
    " \"type\": \"yarn\"}}";

static int parse_cfg(struct moe_config *c, const char *json)
{
    err[0] = 0;
    return moe_config_parse_json(c, json, strlen(json), "config.json", err, sizeof err);
}

/* v3_json with one "key": value replaced (value text as in JSON). */
static int parse_v3_with(struct moe_config *c, const char *key, const char *value)
{
    static char buf[8192];
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *at = strstr(v3_json, pat);
    assert_non_null(at);
    const char *end = at + strlen(pat);
    int depth = 0;
    while (*end && (depth || (*end != ',' && *end != '}'))) {
        if (*end == '{' || *end == '[') depth++;
        if (*end == '}' || *end == ']') depth--;
        end++;
    }
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - v3_json + (int)strlen(pat)), v3_json, value, end);
    return parse_cfg(c, buf);
}

static void test_config_json(void **state)
{
    (void)state;
    struct moe_config c;
    assert_int_equal(parse_cfg(&c, v3_json), 0);
    assert_string_equal(c.model_type, "deepseek_v3");
    assert_int_equal(c.vocab_size, 129280);
    assert_int_equal(c.hidden_size, 7168);
    assert_int_equal(c.n_layers, 61);
    assert_int_equal(c.n_routed_experts, 256);
    assert_int_equal(c.n_experts_per_tok, 8);
    assert_int_equal(c.n_group, 8);
    assert_int_equal(c.topk_group, 4);
    assert_int_equal(c.topk_method, MOE_TOPK_NOAUX_TC);
    assert_int_equal(c.scoring_func, MOE_SCORING_SIGMOID);
    assert_true(c.norm_topk_prob);
    assert_true(c.routed_scaling_factor == 2.5f);
    assert_int_equal(c.q_lora_rank, 1536);
    assert_true(c.rope_scaling.yarn);
    assert_true(c.rope_scaling.factor == 40.0f);
    assert_int_equal(c.rope_scaling.original_max_position_embeddings, 4096);
    assert_true(c.rope_scaling.mscale_all_dim == 1.0f);
    assert_true(c.fp8);
    assert_int_equal(c.fp8_block_rows, 128);
    assert_int_equal(c.max_position_embeddings, 163840);
    assert_int_equal(c.num_nextn_predict_layers, 1);
    assert_true(c.rms_norm_eps == 1e-6f);
    assert_false(moe_config_layer_is_moe(&c, 2));
    assert_true(moe_config_layer_is_moe(&c, 3));

    assert_int_equal(parse_cfg(&c, v2lite_json), 0);
    assert_string_equal(c.model_type, "deepseek_v2");
    assert_int_equal(c.q_lora_rank, 0);
    assert_int_equal(c.topk_method, MOE_TOPK_GREEDY);
    assert_int_equal(c.scoring_func, MOE_SCORING_SOFTMAX);
    assert_int_equal(c.n_shared_experts, 2);
    assert_false(c.norm_topk_prob);
    assert_false(c.fp8);
    assert_true(fabsf(c.rope_scaling.mscale_all_dim - 0.707f) < 1e-7f);
    assert_int_equal(c.num_nextn_predict_layers, 0);
    assert_false(moe_config_layer_is_moe(&c, 0));
    assert_true(moe_config_layer_is_moe(&c, 1));

    /* defaults: HF's DeepseekV3Config / DeepseekV2Config */
    assert_int_equal(parse_cfg(&c, "{\"model_type\": \"deepseek_v3\"}"), 0);
    assert_int_equal(c.hidden_size, 7168);
    assert_int_equal(c.n_routed_experts, 256);
    assert_int_equal(c.first_k_dense_replace, 3);
    assert_int_equal(c.max_position_embeddings, 4096);
    assert_false(c.rope_scaling.yarn);
    assert_int_equal(c.eos_token_id, 1);
    assert_int_equal(parse_cfg(&c, "{\"model_type\": \"deepseek_v2\", \"n_routed_experts\": 64,"
                                   " \"num_experts_per_tok\": 6, \"topk_method\": \"gready\"}"), 0);
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.moe_intermediate_size, 1407);
    assert_int_equal(c.first_k_dense_replace, 0);
    assert_int_equal(c.n_group, 1);
    assert_int_equal(c.topk_method, MOE_TOPK_GREEDY);
    assert_int_equal(c.scoring_func, MOE_SCORING_SOFTMAX);
    assert_int_equal(c.bos_token_id, 100000);
    /* a V2 with no experts is dense */
    assert_int_equal(parse_cfg(&c, "{\"model_type\": \"deepseek_v2\"}"), 0);
    assert_int_equal(c.n_routed_experts, 0);
    assert_false(moe_config_layer_is_moe(&c, 5));
    /* kimi_k2 and the architecture fallback; an eos list; null bos */
    assert_int_equal(parse_cfg(&c, "{\"model_type\": \"kimi_k2\", \"vocab_size\": 163840, \"n_routed_experts\": 384,"
                                   " \"n_group\": 1, \"topk_group\": 1, \"eos_token_id\": [163585, 163586],"
                                   " \"bos_token_id\": null}"), 0);
    assert_int_equal(c.eos_token_id, 163585);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(parse_cfg(&c, "{\"architectures\": [\"DeepseekV3ForCausalLM\"]}"), 0);
    assert_string_equal(c.model_type, "deepseek_v3");
    /* integral floats are accepted as integers */
    assert_int_equal(parse_v3_with(&c, "hidden_size", "7168.0"), 0);
    assert_int_equal(c.hidden_size, 7168);
    /* rope_type instead of type (newer transformers) */
    assert_int_equal(parse_v3_with(&c, "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4}"), 0);
    assert_true(c.rope_scaling.factor == 4.0f);
    assert_true(c.rope_scaling.beta_fast == 32.0f);
    assert_true(c.rope_scaling.mscale_all_dim == 0.0f);
    assert_int_equal(parse_v3_with(&c, "rope_scaling", "null"), 0);
    assert_false(c.rope_scaling.yarn);
    assert_int_equal(parse_v3_with(&c, "quantization_config", "null"), 0);
    assert_false(c.fp8);

    /* bad values, each named */
    static const struct { const char *key, *value, *msg; int rc; } bad[] = {
        {"num_experts_per_tok", "300", "num_experts_per_tok = 300", MOE_ERR_INVALID},
        {"num_experts_per_tok", "0", "num_experts_per_tok", MOE_ERR_INVALID},
        {"n_group", "7", "n_group = 7 must divide n_routed_experts = 256", MOE_ERR_INVALID},
        {"topk_group", "9", "topk_group = 9", MOE_ERR_INVALID},
        {"n_group", "256", "exceeds the 4 experts in topk_group = 4 groups", MOE_ERR_INVALID},
        {"hidden_size", "-5", "hidden_size = -5", MOE_ERR_INVALID},
        {"hidden_size", "0", "hidden_size", MOE_ERR_INVALID},
        {"hidden_size", "\"big\"", "hidden_size must be an integer", MOE_ERR_INVALID},
        {"hidden_size", "7168.5", "hidden_size must be an integer", MOE_ERR_INVALID},
        {"hidden_size", "null", "hidden_size must not be null", MOE_ERR_INVALID},
        {"vocab_size", "99999999999", "vocab_size", MOE_ERR_INVALID},
        {"num_hidden_layers", "3000000000", "num_hidden_layers", MOE_ERR_INVALID},
        {"qk_rope_head_dim", "63", "qk_rope_head_dim = 63 must be even", MOE_ERR_INVALID},
        {"first_k_dense_replace", "62", "first_k_dense_replace", MOE_ERR_INVALID},
        {"moe_layer_freq", "0", "moe_layer_freq", MOE_ERR_INVALID},
        {"rms_norm_eps", "0", "rms_norm_eps", MOE_ERR_INVALID},
        {"rms_norm_eps", "\"x\"", "rms_norm_eps must be a number", MOE_ERR_INVALID},
        {"routed_scaling_factor", "-1", "routed_scaling_factor", MOE_ERR_INVALID},
        {"norm_topk_prob", "1", "norm_topk_prob must be true or false", MOE_ERR_INVALID},
        {"topk_method", "\"random\"", "topk_method 'random' unknown", MOE_ERR_INVALID},
        {"scoring_func", "\"relu\"", "scoring_func 'relu' unknown", MOE_ERR_INVALID},
        {"model_type", "\"llama\"", "model_type 'llama'", MOE_ERR_UNSUPPORTED},
        {"rope_scaling", "{\"type\": \"linear\", \"factor\": 2}", "rope_scaling type 'linear'", MOE_ERR_UNSUPPORTED},
        {"rope_scaling", "{\"type\": \"yarn\"}", "rope_scaling.factor missing", MOE_ERR_INVALID},
        {"rope_scaling", "{\"type\": \"yarn\", \"factor\": 0.5}", "rope_scaling.factor", MOE_ERR_INVALID},
        {"rope_scaling", "[1]", "rope_scaling must be an object", MOE_ERR_INVALID},
        {"quantization_config", "{\"quant_method\": \"gptq\"}", "quant_method 'gptq'", MOE_ERR_UNSUPPORTED},
        {"quantization_config", "{\"quant_method\": \"fp8\", \"weight_block_size\": [64, 64]}", "[64, 64]",
         MOE_ERR_UNSUPPORTED},
        {"quantization_config", "{\"quant_method\": \"fp8\"}", "weight_block_size", MOE_ERR_INVALID},
        {"eos_token_id", "-3", "eos_token_id", MOE_ERR_INVALID},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse_v3_with(&c, bad[i].key, bad[i].value);
        if (rc != bad[i].rc || !strstr(err, bad[i].msg))
            fail_msg("%s = %s: rc %d, message \"%s\" (wanted %d, \"%s\")", bad[i].key, bad[i].value, rc, err,
                     bad[i].rc, bad[i].msg);
        assert_non_null(strstr(err, "config.json"));
    }
    /* malformed JSON */
    assert_int_equal(parse_cfg(&c, "{\"model_type\": \"deepseek_v3\","), MOE_ERR_FORMAT);
    assert_err_has("config.json");
    assert_int_equal(parse_cfg(&c, ""), MOE_ERR_FORMAT);
    assert_int_equal(parse_cfg(&c, "[]"), MOE_ERR_INVALID);
    assert_int_equal(parse_cfg(&c, "{\"a\": 1, \"a\": 2}"), MOE_ERR_FORMAT);
    assert_int_equal(parse_cfg(&c, "{}"), MOE_ERR_UNSUPPORTED);
    assert_err_has("model_type missing");

    /* through the model directory */
    const char *dir = P("cfgdir");
    mkdir_p(dir);
    struct moe_st_writer *w = small_st_writer();
    assert_int_equal(moe_st_writer_write_dir(w, dir, 0, err, sizeof err), 0);
    moe_st_writer_free(w);
    struct moe_model_files *mf;
    assert_int_equal(moe_model_files_open(&mf, dir, err, sizeof err), 0);
    assert_int_equal(moe_config_load(&c, mf, err, sizeof err), MOE_ERR_NOT_FOUND);
    assert_err_has("config.json");
    char cp[600];
    snprintf(cp, sizeof cp, "%s/config.json", dir);
    write_text(cp, v2lite_json);
    assert_int_equal(moe_config_load(&c, mf, err, sizeof err), 0);
    assert_int_equal(c.n_routed_experts, 64);
    write_text(cp, "{\"model_type\": \"deepseek_v3\", \"n_group\": 3}");
    assert_int_equal(moe_config_load(&c, mf, err, sizeof err), MOE_ERR_INVALID);
    assert_err_has("config.json: n_group = 3");
    write_text(cp, "");
    assert_int_equal(moe_config_load(&c, mf, err, sizeof err), MOE_ERR_FORMAT);
    moe_model_files_close(mf);
}

/* deepseek2.* metadata as llama.cpp's convert_hf_to_gguf.py writes it. */
static struct moe_gguf_writer *deepseek2_writer(int split_layout, int with_qlora)
{
    struct moe_gguf_writer *w = moe_gguf_writer_new();
    moe_gguf_writer_add_str(w, "general.architecture", "deepseek2");
    moe_gguf_writer_add_u32(w, "deepseek2.block_count", 4);
    moe_gguf_writer_add_u32(w, "deepseek2.context_length", 163840);
    moe_gguf_writer_add_u32(w, "deepseek2.embedding_length", 256);
    moe_gguf_writer_add_u32(w, "deepseek2.feed_forward_length", 512);
    moe_gguf_writer_add_u32(w, "deepseek2.attention.head_count", 4);
    moe_gguf_writer_add_u32(w, "deepseek2.attention.head_count_kv", split_layout ? 1 : 4);
    moe_gguf_writer_add_f32(w, "deepseek2.rope.freq_base", 10000.0f);
    moe_gguf_writer_add_f32(w, "deepseek2.attention.layer_norm_rms_epsilon", 1e-6f);
    moe_gguf_writer_add_u32(w, "deepseek2.leading_dense_block_count", 1);
    if (with_qlora) moe_gguf_writer_add_u32(w, "deepseek2.attention.q_lora_rank", 96);
    moe_gguf_writer_add_u32(w, "deepseek2.attention.kv_lora_rank", 64);
    if (split_layout) {
        moe_gguf_writer_add_u32(w, "deepseek2.attention.key_length", 64 + 16);
        moe_gguf_writer_add_u32(w, "deepseek2.attention.value_length", 64);
        moe_gguf_writer_add_u32(w, "deepseek2.attention.key_length_mla", 32 + 16);
        moe_gguf_writer_add_u32(w, "deepseek2.attention.value_length_mla", 24);
    } else {
        moe_gguf_writer_add_u32(w, "deepseek2.attention.key_length", 32 + 16);
        moe_gguf_writer_add_u32(w, "deepseek2.attention.value_length", 24);
    }
    moe_gguf_writer_add_u32(w, "deepseek2.rope.dimension_count", 16);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_feed_forward_length", 128);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_count", 16);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_shared_count", 1);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_used_count", 4);
    moe_gguf_writer_add_f32(w, "deepseek2.expert_weights_scale", 2.5f);
    moe_gguf_writer_add_bool(w, "deepseek2.expert_weights_norm", true);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_gating_func", 2);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_group_count", 4);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_group_used_count", 2);
    moe_gguf_writer_add_str(w, "deepseek2.rope.scaling.type", "yarn");
    moe_gguf_writer_add_f32(w, "deepseek2.rope.scaling.factor", 40.0f);
    moe_gguf_writer_add_u32(w, "deepseek2.rope.scaling.original_context_length", 4096);
    moe_gguf_writer_add_f32(w, "deepseek2.rope.scaling.yarn_log_multiplier", 0.1f);
    moe_gguf_writer_add_u32(w, "deepseek2.nextn_predict_layers", 1);
    moe_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 5);
    moe_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 0);
    moe_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 1);
    return w;
}

static int gguf_cfg(struct moe_gguf_writer *w, struct moe_config *c)
{
    const char *path = P("cfg.gguf");
    assert_int_equal(moe_gguf_writer_write(w, path, err, sizeof err), 0);
    moe_gguf_writer_free(w);
    struct moe_gguf *g;
    assert_int_equal(moe_gguf_open(&g, path, err, sizeof err), 0);
    err[0] = 0;
    int rc = moe_config_from_gguf(c, g, err, sizeof err);
    moe_gguf_close(g);
    return rc;
}

static void test_config_gguf(void **state)
{
    (void)state;
    struct moe_config c;
    assert_int_equal(gguf_cfg(deepseek2_writer(1, 1), &c), 0);
    assert_string_equal(c.model_type, "deepseek2");
    assert_int_equal(c.n_layers, 4);
    assert_int_equal(c.hidden_size, 256);
    assert_int_equal(c.intermediate_size, 512);
    assert_int_equal(c.moe_intermediate_size, 128);
    assert_int_equal(c.n_heads, 4);
    assert_int_equal(c.q_lora_rank, 96);
    assert_int_equal(c.kv_lora_rank, 64);
    assert_int_equal(c.qk_nope_head_dim, 32);
    assert_int_equal(c.qk_rope_head_dim, 16);
    assert_int_equal(c.v_head_dim, 24);
    assert_int_equal(c.n_routed_experts, 16);
    assert_int_equal(c.n_shared_experts, 1);
    assert_int_equal(c.n_experts_per_tok, 4);
    assert_int_equal(c.n_group, 4);
    assert_int_equal(c.topk_group, 2);
    assert_int_equal(c.first_k_dense_replace, 1);
    assert_int_equal(c.scoring_func, MOE_SCORING_SIGMOID);
    assert_int_equal(c.topk_method, MOE_TOPK_NOAUX_TC);
    assert_true(c.norm_topk_prob);
    assert_true(c.routed_scaling_factor == 2.5f);
    assert_true(c.rope_scaling.yarn);
    assert_true(c.rope_scaling.factor == 40.0f);
    assert_int_equal(c.rope_scaling.original_max_position_embeddings, 4096);
    assert_true(fabsf(c.rope_scaling.mscale_all_dim - 1.0f) < 1e-6f); /* 0.1 * mscale_all_dim was stored */
    assert_true(c.rope_scaling.beta_fast == 32.0f && c.rope_scaling.beta_slow == 1.0f);
    assert_int_equal(c.vocab_size, 5); /* from tokenizer.ggml.tokens */
    assert_int_equal(c.max_position_embeddings, 163840);
    assert_int_equal(c.num_nextn_predict_layers, 1);
    assert_int_equal(c.eos_token_id, 1);
    assert_true(c.tie_word_embeddings); /* no output.weight */
    assert_true(c.rms_norm_eps == 1e-6f);

    /* the legacy layout (attn_kv_b): per-head widths under the plain keys;
     * no q LoRA; softmax, V2-style */
    struct moe_gguf_writer *w = deepseek2_writer(0, 0);
    assert_int_equal(gguf_cfg(w, &c), MOE_OK);
    assert_int_equal(c.qk_nope_head_dim, 32);
    assert_int_equal(c.v_head_dim, 24);
    assert_int_equal(c.q_lora_rank, 0);
    /* gating 1 (softmax) with groups: group-limited greedy; no tokenizer,
     * so the vocabulary comes from the output tensor */
    w = moe_gguf_writer_new();
    moe_gguf_writer_add_str(w, "general.architecture", "deepseek2");
    moe_gguf_writer_add_u32(w, "deepseek2.block_count", 2);
    moe_gguf_writer_add_u32(w, "deepseek2.context_length", 4096);
    moe_gguf_writer_add_u32(w, "deepseek2.embedding_length", 64);
    moe_gguf_writer_add_u32(w, "deepseek2.feed_forward_length", 128);
    moe_gguf_writer_add_u32(w, "deepseek2.attention.head_count", 2);
    moe_gguf_writer_add_f32(w, "deepseek2.attention.layer_norm_rms_epsilon", 1e-6f);
    moe_gguf_writer_add_u32(w, "deepseek2.attention.kv_lora_rank", 32);
    moe_gguf_writer_add_u32(w, "deepseek2.attention.key_length", 24);
    moe_gguf_writer_add_u32(w, "deepseek2.attention.value_length", 16);
    moe_gguf_writer_add_u32(w, "deepseek2.rope.dimension_count", 8);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_count", 8);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_used_count", 2);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_feed_forward_length", 32);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_group_count", 2);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_group_used_count", 1);
    moe_gguf_writer_add_u32(w, "deepseek2.expert_gating_func", 1);
    static float out_w[7 * 64];
    moe_gguf_writer_add_tensor(w, "output.weight", MOE_W_F32, 2, (int64_t[]){7, 64}, out_w, sizeof out_w);
    assert_int_equal(gguf_cfg(w, &c), 0);
    assert_int_equal(c.vocab_size, 7);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.topk_method, MOE_TOPK_GROUP_LIMITED_GREEDY);
    assert_int_equal(c.scoring_func, MOE_SCORING_SOFTMAX);
    assert_false(c.rope_scaling.yarn);
    assert_true(c.routed_scaling_factor == 1.0f);
    assert_int_equal(c.bos_token_id, -1);

    /* errors: missing key, wrong type, wrong arch, bad values */
    w = moe_gguf_writer_new();
    moe_gguf_writer_add_str(w, "general.architecture", "deepseek2");
    assert_int_equal(gguf_cfg(w, &c), MOE_ERR_NOT_FOUND);
    assert_err_has("'deepseek2.block_count' missing");
    w = moe_gguf_writer_new();
    moe_gguf_writer_add_str(w, "general.architecture", "llama");
    assert_int_equal(gguf_cfg(w, &c), MOE_ERR_UNSUPPORTED);
    assert_err_has("'llama'");
    w = moe_gguf_writer_new();
    assert_int_equal(gguf_cfg(w, &c), MOE_ERR_NOT_FOUND);
    assert_err_has("general.architecture");
    w = moe_gguf_writer_new();
    moe_gguf_writer_add_str(w, "general.architecture", "deepseek2");
    moe_gguf_writer_add_str(w, "deepseek2.block_count", "four");
    assert_int_equal(gguf_cfg(w, &c), MOE_ERR_TYPE);
    assert_err_has("'deepseek2.block_count' is str");
    /* top-k above the expert count, via a patched good file */
    w = deepseek2_writer(1, 1);
    assert_int_equal(moe_gguf_writer_write(w, P("cfg.gguf"), err, sizeof err), 0);
    moe_gguf_writer_free(w);
    size_t n;
    uint8_t *b = read_all(P("cfg.gguf"), &n);
    size_t at = find_info(b, n, "deepseek2.expert_used_count");
    put_u32(b + at + 4, 17);
    write_all(P("cfg2.gguf"), b, n);
    at = find_info(b, n, "deepseek2.expert_used_count");
    put_u32(b + at + 4, 4);
    at = find_info(b, n, "deepseek2.expert_gating_func");
    put_u32(b + at + 4, 7);
    write_all(P("cfg3.gguf"), b, n);
    free(b);
    struct moe_model_files *mf;
    assert_int_equal(moe_model_files_open(&mf, P("cfg2.gguf"), err, sizeof err), 0);
    assert_int_equal(moe_config_load(&c, mf, err, sizeof err), MOE_ERR_INVALID);
    assert_err_has("num_experts_per_tok = 17");
    assert_err_has("cfg2.gguf");
    moe_model_files_close(mf);
    assert_int_equal(moe_model_files_open(&mf, P("cfg3.gguf"), err, sizeof err), 0);
    assert_int_equal(moe_config_load(&c, mf, err, sizeof err), MOE_ERR_UNSUPPORTED);
    assert_err_has("expert_gating_func = 7");
    moe_model_files_close(mf);
}

/* ------------------------------------------------------------------ */
/* fuzz: flip bytes / truncate valid files; open must succeed or fail
 * cleanly, and what opens must describe readable bytes.               */

static int open_gguf_touch(const uint8_t *b, size_t n)
{
    const char *path = P("fuzz.gguf");
    write_all(path, b, n);
    struct moe_model_files *mf = NULL;
    err[0] = 0;
    int rc = moe_model_files_open(&mf, path, err, sizeof err);
    if (rc == 0) {
        for (size_t i = 0; i < mf->n_tensors; i++) {
            const struct moe_tensor *t = &mf->tensors[i];
            assert_ptr_equal(moe_model_files_find(mf, t->name), t);
            if (t->nbytes) {
                volatile uint8_t x = ((const uint8_t *)t->data)[0];
                x = ((const uint8_t *)t->data)[t->nbytes - 1];
                (void)x;
            }
        }
        /* walk the metadata too */
        for (size_t i = 0; i < mf->gguf->n_kv; i++) {
            const struct moe_gguf_value *v = &mf->gguf->kv[i].v;
            if (v->type == MOE_GGUF_ARRAY && v->arr.n) {
                int64_t iv;
                double dv;
                moe_gguf_arr_int(v, v->arr.n - 1, &iv);
                moe_gguf_arr_float(v, v->arr.n - 1, &dv);
                const char *s = moe_gguf_arr_str(v, v->arr.n - 1);
                if (s) assert_true(strlen(s) <= v->arr.strs[v->arr.n - 1].len);
            }
        }
        struct moe_config c;
        moe_config_load(&c, mf, err, sizeof err);
        moe_model_files_close(mf);
    } else {
        assert_null(mf);
        assert_true(err[0] != 0);
    }
    return rc;
}

static void mutate(uint8_t *b, size_t n, size_t hot)
{
    int kind = (int)(rnd32() % 4);
    size_t span = hot < n ? hot : n;
    if (kind == 0 || kind == 1) { /* flip 1-8 bytes, mostly in the header */
        int k = 1 + (int)(rnd32() % 8);
        for (int i = 0; i < k; i++) {
            size_t at = (rnd32() % 4) ? rnd32() % span : rnd32() % n;
            b[at] ^= (uint8_t)(1u << (rnd32() % 8));
        }
    } else if (kind == 2) { /* a random byte value */
        b[rnd32() % span] = (uint8_t)rnd32();
    } else { /* a big 64-bit value at a random header position */
        size_t at = rnd32() % span;
        if (at + 8 <= n) put_u64(b + at, ((uint64_t)rnd32() << 32 | rnd32()) >> (rnd32() % 64));
    }
}

static void test_fuzz(void **state)
{
    (void)state;
    int iters = getenv("MOECPU_TEST_QUICK") ? 400 : 3000;
    /* longer runs by hand: MOECPU_FUZZ_ITERS=200000 MOECPU_FUZZ_SEED=7 */
    if (getenv("MOECPU_FUZZ_ITERS")) iters = atoi(getenv("MOECPU_FUZZ_ITERS"));
    if (getenv("MOECPU_FUZZ_SEED")) rng_state ^= strtoull(getenv("MOECPU_FUZZ_SEED"), NULL, 0) * 0x9E3779B97F4A7C15ull;
    if (iters < 10) iters = 10;
    write_small_gguf(P("small.gguf"), 0);
    size_t gn, sn;
    uint8_t *g = read_all(P("small.gguf"), &gn);
    struct moe_st_writer *w = small_st_writer();
    assert_int_equal(moe_st_writer_write_file(w, P("fz.safetensors"), err, sizeof err), 0);
    moe_st_writer_free(w);
    uint8_t *s = read_all(P("fz.safetensors"), &sn);
    uint8_t *b = malloc(gn > sn ? gn : sn);
    struct moe_gguf *gg;
    assert_int_equal(moe_gguf_open(&gg, P("small.gguf"), err, sizeof err), 0);
    size_t ghot = gg->data_offset;
    moe_gguf_close(gg);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | s[i];
    size_t shot = 8 + (size_t)hlen;
    int ok_g = 0, ok_s = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(b, g, gn);
        size_t n = gn;
        if (rnd32() % 5 == 0) n = rnd32() % gn;
        else mutate(b, n, ghot);
        ok_g += open_gguf_touch(b, n) == 0;

        memcpy(b, s, sn);
        n = sn;
        if (rnd32() % 5 == 0) n = rnd32() % sn;
        else mutate(b, n, shot);
        ok_s += open_st_bytes(b, n) == 0;
    }
    if (getenv("MOECPU_FUZZ_ITERS"))
        print_message("fuzz: %d iterations, %d GGUF and %d safetensors variants opened\n", iters, ok_g, ok_s);
    /* the loop must have exercised both outcomes */
    assert_true(ok_g > 0 && ok_g < iters);
    assert_true(ok_s > 0 && ok_s < iters);
    free(b);
    free(g);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_roundtrip),
        cmocka_unit_test(test_gguf_writer_rejects),
        cmocka_unit_test(test_gguf_corrupt),
        cmocka_unit_test(test_st_roundtrip),
        cmocka_unit_test(test_st_sharded),
        cmocka_unit_test(test_st_corrupt),
        cmocka_unit_test(test_st_index_errors),
        cmocka_unit_test(test_model_files_paths),
        cmocka_unit_test(test_config_json),
        cmocka_unit_test(test_config_gguf),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests_name("loaders", tests, group_setup, group_teardown);
}
