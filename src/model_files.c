/*
 * src/model_files.c — the format-independent model view (struct
 * moe_model_files) and the small helpers the readers and writers share:
 * error messages, an arena, a name index, read-only mmaps, temp-file writes.
 */
#include "model_files.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "safetensors.h"

int moe_errorf(char *err, size_t errlen, int status, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* ---- Arena */

struct moe_arena_block {
    struct moe_arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

#define ARENA_BLOCK (64 * 1024)

void *moe_arena_alloc(struct moe_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    struct moe_arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        if (cap > SIZE_MAX - sizeof *b) return NULL;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->used = 0;
        b->cap = cap;
        if (a->head && cap > ARENA_BLOCK) {
            /* keep filling the current block: put the big one behind it */
            b->next = a->head->next;
            a->head->next = b;
            b->used = n;
            return b->data;
        }
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

char *moe_arena_strndup(struct moe_arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX) return NULL;
    char *p = moe_arena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void moe_arena_free(struct moe_arena *a)
{
    struct moe_arena_block *b = a->head;
    while (b) {
        struct moe_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- Name index: open addressing, FNV-1a. */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

int moe_tensor_index_build(struct moe_tensor_index *ix, const struct moe_tensor *t, size_t n, size_t *dup)
{
    ix->slots = NULL;
    ix->mask = 0;
    if (n >= UINT32_MAX / 2) return MOE_ERR_NOMEM;
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    ix->slots = calloc(cap, sizeof *ix->slots);
    if (!ix->slots) return MOE_ERR_NOMEM;
    ix->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        size_t h = (size_t)hash_name(t[i].name) & ix->mask;
        while (ix->slots[h]) {
            if (strcmp(t[ix->slots[h] - 1].name, t[i].name) == 0) {
                if (dup) *dup = i;
                return MOE_ERR_FORMAT;
            }
            h = (h + 1) & ix->mask;
        }
        ix->slots[h] = (uint32_t)(i + 1);
    }
    return MOE_OK;
}

const struct moe_tensor *moe_tensor_index_find(const struct moe_tensor_index *ix, const struct moe_tensor *t,
                                               const char *name)
{
    if (!ix->slots || !name) return NULL;
    size_t h = (size_t)hash_name(name) & ix->mask;
    while (ix->slots[h]) {
        const struct moe_tensor *c = &t[ix->slots[h] - 1];
        if (strcmp(c->name, name) == 0) return c;
        h = (h + 1) & ix->mask;
    }
    return NULL;
}

void moe_tensor_index_free(struct moe_tensor_index *ix)
{
    free(ix->slots);
    ix->slots = NULL;
    ix->mask = 0;
}

/* ---- mmap */

int moe_map_file(const char *path, const uint8_t **map, size_t *size, char *err, size_t errlen)
{
    *map = NULL;
    *size = 0;
    /* O_NONBLOCK: a FIFO must not hang us; fstat then rejects it */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return moe_errorf(err, errlen, e == ENOENT ? MOE_ERR_NOT_FOUND : MOE_ERR_IO, "%s: cannot open: %s", path,
                          strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return moe_errorf(err, errlen, MOE_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return moe_errorf(err, errlen, MOE_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return moe_errorf(err, errlen, MOE_ERR_IO, "%s: file too large to map", path);
    }
    size_t n = (size_t)st.st_size;
    if (n == 0) {
        close(fd);
        return MOE_OK;
    }
    void *p = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return moe_errorf(err, errlen, MOE_ERR_IO, "%s: cannot mmap: %s", path, strerror(e));
#ifdef MADV_HUGEPAGE
    /* Page faults on a VM_HUGEPAGE mapping read the file into 2 MiB page
     * cache folios, which map with one TLB entry each.  Decode streams the
     * weights through the mapping: with 4 KiB pages the FP8 GEMV ran at
     * 73-76% of the read bandwidth bound, with 2 MiB ones 83-87% (V2-Lite
     * FP8, same session).  Without the flag the kernel builds mostly small
     * folios for faults; pages already cached keep whatever folios they
     * have.  Only a hint: ignored where THP is off. */
    (void)madvise(p, n, MADV_HUGEPAGE);
#endif
    *map = p;
    *size = n;
    return MOE_OK;
}

void moe_unmap_file(const uint8_t *map, size_t size)
{
    if (map && size) munmap((void *)(uintptr_t)map, size);
}

/* ---- Temp file + rename */

int moe_tmpfile_open(struct moe_tmpfile *f, const char *path, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    size_t n = strlen(path);
    f->path = malloc(n + 1);
    f->tmp = malloc(n + 5);
    if (!f->path || !f->tmp) {
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
        return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(f->path, path, n + 1);
    memcpy(f->tmp, path, n);
    memcpy(f->tmp + n, ".tmp", 5);
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* A device or pipe (/dev/null, /dev/stdout, a FIFO): write to it
         * directly; renaming a temp file over it would replace it. */
        free(f->tmp);
        f->tmp = NULL;
        f->fp = fopen(path, "wb");
        if (!f->fp) {
            int e = errno;
            free(f->path);
            f->path = NULL;
            return moe_errorf(err, errlen, MOE_ERR_IO, "%s: cannot open for writing: %s", path, strerror(e));
        }
        return MOE_OK;
    }
    f->fp = fopen(f->tmp, "wb");
    if (!f->fp) {
        int e = errno;
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
        return moe_errorf(err, errlen, MOE_ERR_IO, "%s.tmp: cannot create: %s", path, strerror(e));
    }
    return MOE_OK;
}

void moe_tmpfile_write(struct moe_tmpfile *f, const void *p, size_t n)
{
    if (f->failed || n == 0) return;
    if (fwrite(p, 1, n, f->fp) != n) f->failed = errno ? errno : EIO;
}

void moe_tmpfile_pad(struct moe_tmpfile *f, size_t n, uint8_t byte)
{
    uint8_t buf[64];
    memset(buf, byte, sizeof buf);
    while (n) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        moe_tmpfile_write(f, buf, k);
        n -= k;
    }
}

static void tmpfile_release(struct moe_tmpfile *f)
{
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
    f->fp = NULL;
}

int moe_tmpfile_commit(struct moe_tmpfile *f, char *err, size_t errlen)
{
    int e = f->failed;
    if (fclose(f->fp) != 0 && !e) e = errno ? errno : EIO;
    f->fp = NULL;
    if (e) {
        if (f->tmp) unlink(f->tmp);
        moe_errorf(err, errlen, MOE_ERR_IO, "%s: write failed: %s", f->tmp ? f->tmp : f->path, strerror(e));
        tmpfile_release(f);
        return MOE_ERR_IO;
    }
    if (f->tmp && rename(f->tmp, f->path) != 0) {
        e = errno;
        unlink(f->tmp);
        moe_errorf(err, errlen, MOE_ERR_IO, "%s: cannot rename to %s: %s", f->tmp, f->path, strerror(e));
        tmpfile_release(f);
        return MOE_ERR_IO;
    }
    tmpfile_release(f);
    return MOE_OK;
}

void moe_tmpfile_write_fill(struct moe_tmpfile *f, moe_fill_fn fill, void *user, size_t nbytes, size_t unit)
{
    size_t piece = nbytes;
    if (unit) {
        piece = ((size_t)64 << 20) / unit * unit;
        if (piece == 0) piece = unit;
        if (piece > nbytes) piece = nbytes;
    }
    void *buf = malloc(piece ? piece : 1);
    if (!buf) {
        if (!f->failed) f->failed = ENOMEM;
        return;
    }
    for (size_t o = 0; o < nbytes && !f->failed; o += piece) {
        const size_t n = nbytes - o < piece ? nbytes - o : piece;
        fill(user, buf, o, n);
        moe_tmpfile_write(f, buf, n);
    }
    free(buf);
}

void moe_tmpfile_abort(struct moe_tmpfile *f)
{
    if (f->fp) fclose(f->fp);
    if (f->tmp) unlink(f->tmp);
    tmpfile_release(f);
}

/* ---- Tensors */

int64_t moe_tensor_nelements(const struct moe_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->shape[i]; /* readers checked it fits */
    return n;
}

int moe_tensor_check_type(const struct moe_tensor *t, char *err, size_t errlen)
{
    if ((int)t->type >= 0 && t->type < MOE_W_COUNT) return MOE_OK;
    return moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported dtype %s", t->file, t->name,
                      t->dtype ? t->dtype : "?");
}

/* ---- The unified view */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return dup_str(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, path, n);
    p[n] = 0;
    return p;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int moe_model_files_open(struct moe_model_files **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    if (!path || !*path) return moe_errorf(err, errlen, MOE_ERR_INVALID, "no model path given");
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        return moe_errorf(err, errlen, e == ENOENT ? MOE_ERR_NOT_FOUND : MOE_ERR_IO, "%s: %s", path, strerror(e));
    }
    struct moe_model_files *mf = calloc(1, sizeof *mf);
    if (!mf) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
    mf->path = dup_str(path);
    int rc;
    if (!mf->path) {
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        mf->kind = MOE_FILES_SAFETENSORS;
        mf->dir = dup_str(path);
        if (!mf->dir) {
            rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        rc = moe_safetensors_open_dir(&mf->st, path, err, errlen);
    } else if (S_ISREG(st.st_mode)) {
        mf->dir = dir_of(path);
        if (!mf->dir) {
            rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        if (moe_gguf_is_gguf(path)) {
            mf->kind = MOE_FILES_GGUF;
            rc = moe_gguf_open(&mf->gguf, path, err, errlen);
        } else if (ends_with(path, ".safetensors")) {
            mf->kind = MOE_FILES_SAFETENSORS;
            rc = moe_safetensors_open_file(&mf->st, path, err, errlen);
        } else if (ends_with(path, ".gguf")) {
            rc = moe_errorf(err, errlen, MOE_ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
        } else {
            rc = moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED,
                            "%s: neither a model directory, a GGUF file nor a .safetensors file", path);
        }
    } else {
        rc = moe_errorf(err, errlen, MOE_ERR_UNSUPPORTED, "%s: neither a directory nor a regular file", path);
    }
    if (rc) goto fail;
    if (mf->gguf) {
        mf->n_tensors = mf->gguf->n_tensors;
        mf->tensors = mf->gguf->tensors;
    } else {
        mf->n_tensors = mf->st->n_tensors;
        mf->tensors = mf->st->tensors;
    }
    *out = mf;
    return MOE_OK;
fail:
    moe_model_files_close(mf);
    return rc;
}

void moe_model_files_close(struct moe_model_files *mf)
{
    if (!mf) return;
    moe_gguf_close(mf->gguf);
    moe_safetensors_close(mf->st);
    free(mf->path);
    free(mf->dir);
    free(mf);
}

const struct moe_tensor *moe_model_files_find(const struct moe_model_files *mf, const char *name)
{
    if (mf->gguf) return moe_gguf_find_tensor(mf->gguf, name);
    if (mf->st) return moe_safetensors_find(mf->st, name);
    return NULL;
}

static void shape_str(char *buf, size_t n, int n_dims, const int64_t *shape)
{
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < n_dims && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

int moe_model_files_get(const struct moe_model_files *mf, const char *name, int n_dims, const int64_t *shape,
                        const struct moe_tensor **out, char *err, size_t errlen)
{
    *out = NULL;
    const struct moe_tensor *t = moe_model_files_find(mf, name);
    if (!t) return moe_errorf(err, errlen, MOE_ERR_NOT_FOUND, "%s: tensor '%s' missing", mf->path, name);
    int rc = moe_tensor_check_type(t, err, errlen);
    if (rc) return rc;
    if (n_dims > 0) {
        int ok = t->n_dims == n_dims;
        for (int i = 0; ok && i < n_dims; i++) ok = shape[i] < 0 || shape[i] == t->shape[i];
        if (!ok) {
            char want[96], have[96];
            shape_str(want, sizeof want, n_dims, shape);
            shape_str(have, sizeof have, t->n_dims, t->shape);
            return moe_errorf(err, errlen, MOE_ERR_TYPE, "%s: tensor '%s': shape %s, expected %s", t->file, name,
                              have, want);
        }
    }
    *out = t;
    return MOE_OK;
}
