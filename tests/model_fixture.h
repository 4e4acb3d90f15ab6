/*
 * tests/model_fixture.h — the fixture shared by the tests that run random
 * models: a fresh directory under /tmp, models made in it by
 * tests/gen_model.c ($MOECPU_GEN_MODEL, else build/gen_model), removed at
 * the end.  Tests that need a model call NEED_GEN(), which fails (never
 * skips) when the generator is missing.  Header-only: include it in one
 * test file.
 */
#ifndef MOE_TESTS_MODEL_FIXTURE_H
#define MOE_TESTS_MODEL_FIXTURE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256];
static char g_gen[512];
static int g_have_gen;

/* g_dir/name (four rotating buffers: up to four paths in one call). */
static const char *P(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_dir, name);
    return buf[i];
}

/* Make a model with gen_model (once per name). */
static int gen(const char *name, const char *args)
{
    const char *path = P(name);
    if (access(path, F_OK) == 0) return 0;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s --out %s > /dev/null", g_gen, args, path);
    return system(cmd);
}

/* Find the generator and make /tmp/moecpu-test-<tag>-XXXXXX; -1 on failure. */
static int fixture_open(const char *tag)
{
    const char *g = getenv("MOECPU_GEN_MODEL");
    snprintf(g_gen, sizeof g_gen, "%s", g && *g ? g : "build/gen_model");
    g_have_gen = access(g_gen, X_OK) == 0;
    snprintf(g_dir, sizeof g_dir, "/tmp/moecpu-test-%s-XXXXXX", tag);
    return mkdtemp(g_dir) ? 0 : -1;
}

static int fixture_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void fixture_close(void) { nftw(g_dir, fixture_rm, 16, FTW_DEPTH | FTW_PHYS); }

#define NEED_GEN()                                                                                             \
    do {                                                                                                       \
        if (!g_have_gen) fail_msg("no model generator at %s (build tests/gen_model.c or set MOECPU_GEN_MODEL)", \
                                  g_gen);                                                                      \
    } while (0)

#endif
