/*
 * tests/test_cli_stream.c — the streaming output of `moecpu run`/`chat`
 * (src/cli_stream.c): stop strings split across pushes are never printed,
 * text that might start a stop string or a think tag is held back and then
 * released, R1 <think> sections shown, dimmed or hidden.  Expected outputs
 * are written out by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/cli_gen.h"

struct out {
    char *buf;
    size_t len;
    FILE *f;
};

static void out_open(struct out *o)
{
    memset(o, 0, sizeof *o);
    o->f = open_memstream(&o->buf, &o->len);
    assert_non_null(o->f);
}

static const char *out_text(struct out *o)
{
    fflush(o->f);
    return o->buf;
}

static void out_close(struct out *o)
{
    fclose(o->f);
    free(o->buf);
}

static struct cli_text_opts opts(enum cli_think think, const char *stop1, const char *stop2)
{
    struct cli_text_opts t;
    memset(&t, 0, sizeof t);
    t.think = think;
    if (stop1) t.stops[t.n_stops++] = stop1;
    if (stop2) t.stops[t.n_stops++] = stop2;
    return t;
}

static int push(struct cli_stream *s, const char *p) { return cli_stream_push(s, p, strlen(p)); }

static void test_stop_split_across_pushes(void **state)
{
    (void)state;
    struct out o;
    out_open(&o);
    struct cli_text_opts t = opts(CLI_THINK_SHOW, "o w", NULL);
    struct cli_stream s;
    cli_stream_init(&s, o.f, &t, 0);
    assert_int_equal(push(&s, "Hel"), 0);
    assert_string_equal(out_text(&o), "Hel");
    assert_int_equal(push(&s, "lo"), 0);
    assert_string_equal(out_text(&o), "Hell");      /* "o" could start "o w" */
    assert_int_equal(push(&s, " world"), 1);       /* stop: nothing of it printed */
    assert_int_equal(push(&s, "more"), 1);         /* stays stopped */
    cli_stream_finish(&s);
    assert_string_equal(out_text(&o), "Hell");
    assert_int_equal(s.nraw, 4);
    assert_memory_equal(s.raw, "Hell", 4);
    cli_stream_free(&s);
    out_close(&o);
}

static void test_held_back_then_released(void **state)
{
    (void)state;
    struct out o;
    out_open(&o);
    struct cli_text_opts t = opts(CLI_THINK_SHOW, "abc", "xyz");
    struct cli_stream s;
    cli_stream_init(&s, o.f, &t, 0);
    assert_int_equal(push(&s, "1a"), 0);
    assert_string_equal(out_text(&o), "1");
    assert_int_equal(push(&s, "b"), 0);
    assert_string_equal(out_text(&o), "1");
    assert_int_equal(push(&s, "d2x"), 0);          /* "abd" is no stop; "x" may start "xyz" */
    assert_string_equal(out_text(&o), "1abd2");
    cli_stream_finish(&s);                          /* the end releases what was held */
    assert_string_equal(out_text(&o), "1abd2x");
    cli_stream_free(&s);
    out_close(&o);
}

static void test_earliest_stop_wins(void **state)
{
    (void)state;
    struct out o;
    out_open(&o);
    struct cli_text_opts t = opts(CLI_THINK_SHOW, "END", "STOP");
    struct cli_stream s;
    cli_stream_init(&s, o.f, &t, 0);
    assert_int_equal(push(&s, "one STOP two END"), 1);
    cli_stream_finish(&s);
    assert_string_equal(out_text(&o), "one ");
    cli_stream_free(&s);
    out_close(&o);
}

static void run_think(enum cli_think mode, int ansi, int in_think, const char *const *pieces, const char *want)
{
    struct out o;
    out_open(&o);
    struct cli_text_opts t = opts(mode, NULL, NULL);
    struct cli_stream s;
    cli_stream_init_ansi(&s, o.f, &t, in_think, ansi);   /* ansi: as on a terminal */
    for (int i = 0; pieces[i]; i++) assert_int_equal(push(&s, pieces[i]), 0);
    cli_stream_finish(&s);
    assert_string_equal(out_text(&o), want);
    cli_stream_free(&s);
    out_close(&o);
}

static void test_think_sections(void **state)
{
    (void)state;
    static const char *const p[] = {"Hi <thi", "nk>plan", "s</th", "ink>\n\nAnswer.", NULL};
    run_think(CLI_THINK_SHOW, 0, 0, p, "Hi <think>plans</think>\n\nAnswer.");
    run_think(CLI_THINK_HIDE, 0, 0, p, "Hi Answer.");
    run_think(CLI_THINK_DIM, 0, 0, p, "Hi <think>plans</think>\n\nAnswer.");   /* not a terminal */
    run_think(CLI_THINK_DIM, 1, 0, p, "Hi \x1b[2m<think>plans</think>\x1b[0m\n\nAnswer.");
    /* R1: the prompt opened the section */
    static const char *const q[] = {"plan</think>", "\nok", NULL};
    run_think(CLI_THINK_SHOW, 0, 1, q, "<think>\nplan</think>\nok");
    run_think(CLI_THINK_HIDE, 0, 1, q, "ok");
    run_think(CLI_THINK_DIM, 1, 1, q, "\x1b[2m<think>\nplan</think>\x1b[0m\nok");
    /* an unfinished section: the style is reset at the end */
    static const char *const r[] = {"still thinking", NULL};
    run_think(CLI_THINK_DIM, 1, 1, r, "\x1b[2m<think>\nstill thinking\x1b[0m");
    run_think(CLI_THINK_HIDE, 0, 1, r, "");
    /* "<" that is not a tag is released */
    static const char *const u[] = {"a <", "b> <th", "is", NULL};
    run_think(CLI_THINK_HIDE, 0, 0, u, "a <b> <this");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_split_across_pushes),
        cmocka_unit_test(test_held_back_then_released),
        cmocka_unit_test(test_earliest_stop_wins),
        cmocka_unit_test(test_think_sections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
