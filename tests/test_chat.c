/*
 * tests/test_chat.c — src/chat.c against the real DeepSeek-V3 and R1 chat
 * templates (tests/data/chat/) rendered by an independent Jinja engine,
 * @huggingface/jinja (scripts/chat-ref/render.mjs, run with node).  Run from
 * the repository root.  A missing node or engine is a failure (run
 * scripts/setup.sh), never a skip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/moecpu.h"

#define S MOE_CHAT_SYSTEM
#define U MOE_CHAT_USER
#define A MOE_CHAT_ASSISTANT

struct conv {
    int n, gen;
    const char *bos;
    struct moe_chat_msg m[8];
};

static const struct conv convs[] = {
    {1, 1, "<｜begin▁of▁sentence｜>", {{U, "Hello"}}},
    {2, 1, "<｜begin▁of▁sentence｜>", {{S, "You are terse."}, {U, "What is 2+2?"}}},
    {3, 1, "<｜begin▁of▁sentence｜>", {{S, "First system."}, {S, "Second system."}, {U, "Hi"}}},
    {3, 1, "<｜begin▁of▁sentence｜>",
     {{U, "Why is the sky blue?"},
      {A, "<think>\nRayleigh scattering...\n</think>\n\nBecause of Rayleigh scattering."},
      {U, "And sunsets?"}}},
    {3, 0, "<｜begin▁of▁sentence｜>",
     {{S, "sys"}, {U, "one"}, {A, "<think>a</think>b</think>  two"}}},
    {5, 1, "",
     {{U, ""}, {A, "no think here"}, {U, "中文，日本語、한국어 🙂👩‍💻\n\n\ttabs"}, {A, "{{ not a template }} {% raw %}"},
      {U, "quote ' and \" and \\ backslash"}}},
    {2, 1, "<s>", {{U, "text with <｜User｜> and <｜Assistant｜> inside"}, {S, "late system"}}},
    {0, 1, "<｜begin▁of▁sentence｜>", {{U, ""}}},
    {6, 1, "<｜begin▁of▁sentence｜>",
     {{S, "s"}, {U, "u1"}, {A, "<think>\n\n</think>\n\nx"}, {U, "u2"}, {A, "</think>"}, {U, "u3"}}},
};
#define NCONV (sizeof convs / sizeof *convs)

static const char *role_name(enum moe_chat_role r)
{
    return r == S ? "system" : r == U ? "user" : "assistant";
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, fp) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = 0;
    fclose(fp);
    return s;
}

/* Render every conversation with the reference engine: a JSON array of strings. */
static json_t *reference(const char *tmpl_path)
{
    char cases[] = "/tmp/moecpu-chat-cases-XXXXXX";
    int fd = mkstemp(cases);
    assert_true(fd >= 0);
    json_t *arr = json_array();
    for (size_t i = 0; i < NCONV; i++) {
        json_t *msgs = json_array();
        for (int j = 0; j < convs[i].n; j++)
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", role_name(convs[i].m[j].role), "content",
                                                  convs[i].m[j].content));
        json_array_append_new(arr, json_pack("{s:o, s:b, s:s, s:s}", "messages", msgs, "add_generation_prompt",
                                             convs[i].gen, "bos_token", convs[i].bos, "eos_token",
                                             MOE_CHAT_END_TEXT));
    }
    assert_int_equal(json_dumpfd(arr, fd, 0), 0);
    close(fd);
    json_decref(arr);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "node scripts/chat-ref/render.mjs '%s' '%s'", tmpl_path, cases);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    json_error_t e;
    json_t *out = json_loadf(p, 0, &e);
    const int rc = pclose(p);
    remove(cases);
    if (!out || rc != 0)
        fail_msg("'%s' failed (exit %d; %s): run from the repository root after scripts/setup.sh", cmd, rc, e.text);
    assert_int_equal(json_array_size(out), NCONV);
    return out;
}

static void check_template(const char *path, int want_think, int want_strip, int want_join)
{
    char *tmpl = slurp(path);
    if (!tmpl) fail_msg("cannot read %s (run from the repository root)", path);
    json_t *ref = reference(path);
    char err[256];
    for (size_t i = 0; i < NCONV; i++) {
        struct moe_chat_format f;
        assert_int_equal(moe_chat_format_from_template(&f, tmpl, convs[i].bos, err, sizeof err), 0);
        assert_int_equal(f.think_prompt, want_think);
        assert_int_equal(f.strip_think, want_strip);
        assert_int_equal(f.join_system, want_join);
        char *got = moe_chat_render(&f, convs[i].m, convs[i].n, convs[i].gen);
        assert_non_null(got);
        const char *want = json_string_value(json_array_get(ref, i));
        assert_non_null(want);
        if (strcmp(got, want)) fail_msg("%s, conversation %zu:\n ours: [%s]\n jinja: [%s]", path, i, got, want);
        free(got);
    }
    json_decref(ref);
    free(tmpl);
}

static void test_v3_template(void **state)
{
    (void)state;
    check_template("tests/data/chat/deepseek-v3.jinja", 0, 0, 1);
}

static void test_r1_template(void **state)
{
    (void)state;
    check_template("tests/data/chat/deepseek-r1.jinja", 1, 1, 0);
}

/* No template: V3's semantics (the same text as the V3 template gives). */
static void test_default_is_v3(void **state)
{
    (void)state;
    char *tmpl = slurp("tests/data/chat/deepseek-v3.jinja");
    assert_non_null(tmpl);
    char err[256];
    for (size_t i = 0; i < NCONV; i++) {
        struct moe_chat_format a, b;
        assert_int_equal(moe_chat_format_from_template(&a, NULL, convs[i].bos, err, sizeof err), 0);
        assert_int_equal(moe_chat_format_from_template(&b, tmpl, convs[i].bos, err, sizeof err), 0);
        char *x = moe_chat_render(&a, convs[i].m, convs[i].n, convs[i].gen);
        char *y = moe_chat_render(&b, convs[i].m, convs[i].n, convs[i].gen);
        assert_string_equal(x, y);
        free(x);
        free(y);
    }
    free(tmpl);
}

/* Hand-written expectation of one R1 turn, independent of any engine. */
static void test_r1_by_hand(void **state)
{
    (void)state;
    struct moe_chat_format f;
    char err[256];
    const char *tmpl = "{{'<｜User｜>'}}{{'<｜Assistant｜><think>\\n'}}{% set c = c.split('</think>')[-1] %}";
    assert_int_equal(moe_chat_format_from_template(&f, tmpl, "<B>", err, sizeof err), 0);
    const struct moe_chat_msg m[3] = {{U, "q1"}, {A, "<think>t</think>a1"}, {U, "q2"}};
    char *s = moe_chat_render(&f, m, 3, 1);
    assert_string_equal(s, "<B><｜User｜>q1<｜Assistant｜>a1<｜end▁of▁sentence｜><｜User｜>q2<｜Assistant｜><think>\n");
    free(s);
}

/* Spans: each assistant message's rendered (stripped) content, by offsets. */
static void test_spans(void **state)
{
    (void)state;
    struct moe_chat_format v3, r1;
    char err[256];
    assert_int_equal(moe_chat_format_from_template(&v3, NULL, "<B>", err, sizeof err), 0);
    assert_int_equal(moe_chat_format_from_template(&r1, "<｜User｜><｜Assistant｜><think>\\n split('</think>')", "<B>", err,
                                                   sizeof err), 0);
    const struct moe_chat_msg m[4] = {{U, "q1"}, {A, "<think>t</think>a1"}, {U, "q2"}, {A, "plain"}};
    size_t sp[8];
    const struct moe_chat_format *fs[2] = {&v3, &r1};
    const char *want1[2] = {"<think>t</think>a1", "a1"};
    for (int k = 0; k < 2; k++) {
        char *s = moe_chat_render_spans(fs[k], m, 4, 1, sp);
        assert_non_null(s);
        assert_true(sp[0] == 0 && sp[1] == 0 && sp[4] == 0 && sp[5] == 0);
        assert_int_equal(sp[3] - sp[2], strlen(want1[k]));
        assert_memory_equal(s + sp[2], want1[k], strlen(want1[k]));
        assert_memory_equal(s + sp[2] - strlen(MOE_CHAT_ASSISTANT_TEXT), MOE_CHAT_ASSISTANT_TEXT,
                            strlen(MOE_CHAT_ASSISTANT_TEXT));
        assert_memory_equal(s + sp[3], MOE_CHAT_END_TEXT, strlen(MOE_CHAT_END_TEXT));
        assert_memory_equal(s + sp[6], "plain", 5);
        assert_int_equal(sp[7] - sp[6], 5);
        char *t = moe_chat_render(fs[k], m, 4, 1);
        assert_string_equal(s, t);
        free(s);
        free(t);
    }
}

static void test_unsupported(void **state)
{
    (void)state;
    struct moe_chat_format f;
    char err[256] = "";
    const char *llama3 = "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>{% endfor %}";
    assert_int_equal(moe_chat_format_from_template(&f, llama3, "", err, sizeof err), MOECPU_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "without --chat"));
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(moe_chat_format_from_template(&f, NULL, big, err, sizeof err), MOECPU_ERR_UNSUPPORTED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v3_template), cmocka_unit_test(test_r1_template), cmocka_unit_test(test_default_is_v3),
        cmocka_unit_test(test_r1_by_hand),  cmocka_unit_test(test_spans), cmocka_unit_test(test_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
