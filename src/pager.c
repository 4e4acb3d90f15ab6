/*
 * src/pager.c — the expert pager (see pager.h for the contract).
 *
 * State of each routed expert (layer * E + e): ABSENT, WAITING (needed,
 * no room yet), LOADING (chunks queued or being read), READY.  Reads are
 * split into chunks of PAGER_CHUNK bytes so the I/O threads read one
 * expert, or the several a token needs, in parallel; demand chunks always
 * go before look-ahead ones.  One mutex guards all state; the I/O itself
 * runs outside it.  Memory held = the bytes of LOADING + READY experts
 * (MMAP) or the slots in use (PREAD/DIRECT), kept within the budget by
 * evicting unpinned READY experts; nothing pinned is ever evicted.
 */
#include "pager.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "model.h"
#include "safetensors.h"

#define PAGER_CHUNK ((size_t)4 << 20)
#define PAGER_ALIGN ((uint64_t)4096)
#define HISTORY_MAX ((int64_t)1 << 20)
#define MAX_RANGES 6

enum { ST_ABSENT, ST_WAITING, ST_LOADING, ST_READY };

struct prange {
    int file;
    uint64_t off;              /* in the file */
    size_t len;
    const uint8_t *map;        /* the same bytes in the mapping */
    uint64_t aoff;             /* off rounded down to PAGER_ALIGN */
    size_t alen;               /* [aoff, off + len) rounded up to PAGER_ALIGN */
    size_t slot_off;           /* where [aoff, ...) goes in a slot (multiple of PAGER_ALIGN) */
};

struct pexp {
    struct prange r[MAX_RANGES];
    int nr;
    int data_r[3], scale_r[3]; /* range of each matrix's data / scale (-1: none) */
    size_t bytes;              /* sum of r[].len */
    struct moe_mat map_mats[3];
    struct moe_mat mats[3];    /* what the forward pass computes with */
    unsigned char state, prefetched, io_err;
    int pins, slot, chunks_left;
    double key;                /* FREQ: log2(decayed count) + t / half-life */
    int64_t last_tok;
    uint64_t last_seq;         /* LRU */
};

struct pjob {
    int idx, range;
    uint64_t fo;               /* file offset of the chunk */
    size_t n;
};

struct jobq {
    struct pjob *v;
    size_t head, n, cap;       /* live jobs are v[head, head + n) */
};

struct pfile {
    const char *path;
    int fd, dfd;               /* dfd: O_DIRECT, or -1 */
    const uint8_t *map;
    size_t size;
};

struct moe_pager {
    struct moe_model *m;
    int mode, policy, lookahead;
    int n_layers, E;
    struct pexp *ex;           /* [n_layers * E]; absent entries (dense layers) have nr == 0 */
    int n_files;
    struct pfile *files;
    size_t budget, resident;
    /* PREAD / DIRECT */
    size_t slot_bytes;
    int n_slots, n_alloc;      /* slots allowed / handed out so far: slots[0, n_alloc) */
    int n_made;                /* slots[0, n_made) allocated (n_alloc <= n_made <= n_slots) */
    pthread_t zt;              /* the prefault thread (zt_on): keeps n_made <= n_alloc + z_ahead */
    pthread_cond_t zcv;        /* n_alloc grew, or stop */
    int zt_on, z_ahead;
    unsigned char **slots;
    int *free_slots, n_free;
    /* experts waiting for room, in request order */
    int *waitlist, n_wait;
    struct jobq dq, pq;        /* demand, prefetch */
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pthread_t *io;
    int n_io;
    int la_busy, la_cap;       /* look-ahead pieces being read; at most la_cap at once */
    int stop;
    FILE *trace;
    int64_t tok;               /* tokens finished */
    uint64_t seq;
    struct moe_pager_stats st, last;
    struct moe_pager_stats *hist;
    int64_t n_hist, cap_hist;
};

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- policy (shared with the replay) */

static double freq_touch(double key, double now)
{
    const double t = now / MOE_PAGER_HALF_LIFE;
    const double decayed = isinf(key) ? 0.0 : exp2(key - t);
    return log2(decayed + 1.0) + t;
}

/* a < b: a is the better victim */
static bool worse(int policy, double ka, uint64_t sa, double kb, uint64_t sb)
{
    if (policy == MOE_POLICY_LRU) return sa < sb;
    return ka < kb || (ka == kb && sa < sb);
}

/* ---- queues */

static int q_push(struct jobq *q, struct pjob j)
{
    if (q->head + q->n == q->cap) {
        if (q->head > 0) {
            memmove(q->v, q->v + q->head, q->n * sizeof *q->v);
            q->head = 0;
        }
        if (q->n == q->cap) {
            size_t nc = q->cap ? 2 * q->cap : 256;
            struct pjob *nv = realloc(q->v, nc * sizeof *nv);
            if (!nv) return -1;
            q->v = nv;
            q->cap = nc;
        }
    }
    q->v[q->head + q->n++] = j;
    return 0;
}

static struct pjob q_pop(struct jobq *q)
{
    struct pjob j = q->v[q->head++];
    if (--q->n == 0) q->head = 0;
    return j;
}

/* Move every queued prefetch chunk of expert idx to the demand queue. */
static void promote(struct moe_pager *p, int idx)
{
    size_t w = p->pq.head;
    for (size_t i = p->pq.head; i < p->pq.head + p->pq.n; i++) {
        struct pjob j = p->pq.v[i];
        if (j.idx == idx && q_push(&p->dq, j) == 0) continue;
        p->pq.v[w++] = j;
    }
    p->pq.n = w - p->pq.head;
    if (!p->pq.n) p->pq.head = 0;
}

/* ---- I/O */

static bool is_file_mode(const struct moe_pager *p) { return p->mode == MOE_PAGER_PREAD || p->mode == MOE_PAGER_DIRECT; }

static int populate(const uint8_t *addr, size_t n)
{
    const uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(PAGER_ALIGN - 1);
    const size_t len = (size_t)((uintptr_t)addr + n - a);
    (void)madvise((void *)a, len, MADV_WILLNEED);
#ifdef MADV_POPULATE_READ
    if (madvise((void *)a, len, MADV_POPULATE_READ) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
#endif
    /* kernels before 5.14: touch every page */
    volatile unsigned char sink = 0;
    for (size_t o = 0; o < len; o += PAGER_ALIGN) sink ^= *(const volatile unsigned char *)(a + o);
    (void)sink;
    return 0;
}

/* Drop the page cache of file bytes [off, off + n) and around it: the
 * kernel drops only folios (up to 2 MiB) that lie wholly inside the range
 * and that no one maps, so the range is widened to 2 MiB boundaries.  What
 * it also catches is unmapped cache (evicted or never-used experts'
 * leftovers); mapped pages (non-expert weights, resident experts in MMAP
 * mode) stay. */
#define FOLIO_MAX ((uint64_t)2 << 20)
static void drop_cache(const struct pfile *f, uint64_t off, size_t n)
{
    const uint64_t a = off & ~(FOLIO_MAX - 1), b = (off + n + FOLIO_MAX - 1) & ~(FOLIO_MAX - 1);
    (void)posix_fadvise(f->fd, (off_t)a, (off_t)(b - a), POSIX_FADV_DONTNEED);
}

/* Evict an expert range in MMAP mode: unmap its pages from this process,
 * then drop them.  The unmapped window is widened to 64 KiB boundaries:
 * a page fault maps the cached pages around it (fault-around, 64 KiB by
 * default), so loading a neighbour can map this expert's edge pages, which
 * could then never be dropped.  A neighbour that loses an edge page this
 * way faults it back in when computing. */
#define FAULT_AROUND ((uint64_t)64 << 10)
static void drop_pages(const struct pfile *f, const uint8_t *addr, uint64_t off, size_t n)
{
    uint64_t a = off & ~(FAULT_AROUND - 1), b = (off + n + FAULT_AROUND - 1) & ~(FAULT_AROUND - 1);
    if (b > f->size) b = (f->size + PAGER_ALIGN - 1) & ~(PAGER_ALIGN - 1);
    if (b > a) (void)madvise((void *)(addr - (off - a)), (size_t)(b - a), MADV_DONTNEED);
    drop_cache(f, off, n);
}

static int read_full(int fd, unsigned char *dst, size_t n, uint64_t off, size_t need)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, dst + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) break;     /* end of file: fine once `need` bytes are in */
        got += (size_t)r;
    }
    return got >= need ? 0 : -EIO;
}

static bool do_io(struct moe_pager *p, const struct pjob *j, unsigned char *slot)
{
    const struct pexp *x = &p->ex[j->idx];
    const struct prange *r = &x->r[j->range];
    const struct pfile *f = &p->files[r->file];
    if (!is_file_mode(p)) return populate(r->map + (j->fo - r->off), j->n) == 0;
    unsigned char *dst = slot + r->slot_off + (j->fo - r->aoff);
    const uint64_t end = r->off + r->len;
    const size_t need = j->fo + j->n <= end ? j->n : (size_t)(end - j->fo);
    if (p->mode == MOE_PAGER_DIRECT && f->dfd >= 0) {
        int rc = read_full(f->dfd, dst, j->n, j->fo, need);
        if (rc == 0) return true;
        if (rc != -EINVAL) return false;
    }
    if (read_full(f->fd, dst, j->n, j->fo, need)) return false;
    drop_cache(f, j->fo, j->n);
    return true;
}

static void finish(struct moe_pager *p, struct pexp *x)
{
    if (x->io_err) memcpy(x->mats, x->map_mats, sizeof x->mats); /* compute on the mapping instead */
    x->state = ST_READY;
    pthread_cond_broadcast(&p->done);
}

static void *io_main(void *arg)
{
    struct moe_pager *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && !p->dq.n && !(p->pq.n && p->la_busy < p->la_cap)) pthread_cond_wait(&p->work, &p->mu);
        if (p->stop) break;
        const bool la = !p->dq.n;
        struct pjob j = la ? q_pop(&p->pq) : q_pop(&p->dq);
        p->la_busy += la;
        struct pexp *x = &p->ex[j.idx];
        unsigned char *slot = x->slot >= 0 ? p->slots[x->slot] : NULL;
        pthread_mutex_unlock(&p->mu);
        const bool ok = do_io(p, &j, slot);
        pthread_mutex_lock(&p->mu);
        if (!ok) x->io_err = 1;
        if (--x->chunks_left == 0) finish(p, x);
        if (la) {
            p->la_busy--;                           /* room for another look-ahead piece */
            if (p->pq.n) pthread_cond_signal(&p->work);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- residency (all under the lock) */

static void evict(struct moe_pager *p, int idx)
{
    struct pexp *x = &p->ex[idx];
    if (is_file_mode(p)) {
        if (x->slot < 0) {     /* the mapping fallback of admit: nothing held */
            x->state = ST_ABSENT;
            return;
        }
        p->free_slots[p->n_free++] = x->slot;
    } else {
        for (int i = 0; i < x->nr; i++) drop_pages(&p->files[x->r[i].file], x->r[i].map, x->r[i].off, x->r[i].len);
    }
    x->slot = -1;
    x->state = ST_ABSENT;
    x->prefetched = 0;
    p->resident -= x->bytes;
    p->st.evictions++;
}

static bool room(const struct moe_pager *p, const struct pexp *x)
{
    if (is_file_mode(p)) return p->n_free > 0 || p->n_alloc < p->n_slots;
    return p->resident == 0 || (p->resident <= p->budget && p->budget - p->resident >= x->bytes);
}

/* The unpinned READY expert to evict, -1 if none.  Look-ahead spares the
 * experts used by the current and the previous token. */
static int victim(const struct moe_pager *p, bool for_prefetch)
{
    int best = -1;
    for (int i = 0; i < p->n_layers * p->E; i++) {
        const struct pexp *x = &p->ex[i];
        if (x->state != ST_READY || x->pins) continue;
        if (for_prefetch && x->last_tok >= p->tok - 1) continue;
        if (best < 0 || worse(p->policy, x->key, x->last_seq, p->ex[best].key, p->ex[best].last_seq)) best = i;
    }
    return best;
}

static void queue_chunks(struct moe_pager *p, int idx, bool demand)
{
    struct pexp *x = &p->ex[idx];
    struct jobq *q = demand ? &p->dq : &p->pq;
    x->chunks_left = 1;        /* held while queueing */
    for (int i = 0; i < x->nr; i++) {
        const struct prange *r = &x->r[i];
        const bool direct = p->mode == MOE_PAGER_DIRECT && p->files[r->file].dfd >= 0;
        const uint64_t s = direct ? r->aoff : r->off, n = direct ? r->alen : r->len;
        for (uint64_t o = 0; o < n; o += PAGER_CHUNK) {
            struct pjob j = {idx, i, s + o, (size_t)(n - o < PAGER_CHUNK ? n - o : PAGER_CHUNK)};
            if (q_push(q, j)) {
                x->io_err = 1; /* out of memory queueing: compute on the mapping */
                continue;
            }
            x->chunks_left++;
        }
    }
    if (--x->chunks_left == 0) finish(p, x);
    pthread_cond_broadcast(&p->work);
}

/* A slot: 2 MiB aligned and backed by transparent huge pages where the
 * kernel has them.  A slot's first use faults its memory in, and the
 * kernel zeroes every page first: with 4 KiB pages this zeroing ran at
 * 0.8-2 GB/s on our 2-core VM, slower than the disk, and took most of the
 * CPU while the pager filled its budget; 2 MiB pages fault 512x less. */
static void *slot_alloc(size_t bytes)
{
    void *mem = NULL;
    const size_t huge = (size_t)2 << 20;
    if (posix_memalign(&mem, bytes >= huge ? huge : (size_t)PAGER_ALIGN, bytes)) return NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= huge) (void)madvise(mem, bytes / huge * huge, MADV_HUGEPAGE);
#endif
    return mem;
}

/* Fault a slot's memory in (the kernel zeroes it) before any read needs it. */
static void slot_fault_in(unsigned char *mem, size_t bytes)
{
#ifdef MADV_POPULATE_WRITE
    if (madvise(mem, bytes, MADV_POPULATE_WRITE) == 0) return;
#endif
    for (size_t o = 0; o < bytes; o += PAGER_ALIGN) ((volatile unsigned char *)mem)[o] = 0;
}

/* The prefault thread: allocates and faults in slots[n_made ..) in order,
 * ahead of admit, at idle priority (SCHED_IDLE, else nice 19), so the
 * kernel's zeroing of new memory runs while the cores would otherwise wait
 * for the disk instead of on the I/O path: with 4 KiB or 2 MiB pages alike
 * the zeroing ran at 0.75-3.3 GB/s on our VM, as slow as the disk, and
 * took 59-64% of all CPU samples while the pager filled its budget.  It
 * stays at most z_ahead slots ahead of use: with a budget, all of the
 * budget's slots that fit in the memory free when the pager starts (the
 * earlier the zeroing, the more of it falls into the first tokens' long
 * waits for the disk: on the 36 GB benchmark model, 400 tokens decoded at
 * a median 11.6 tok/s against 10.5 with one token's experts ahead, README);
 * without one, one token's routed experts (all layers), so an unbounded
 * budget is not faulted in whole. */
static void *prefault_main(void *arg)
{
    struct moe_pager *p = arg;
#ifdef SCHED_IDLE
    const struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0)
#endif
        (void)setpriority(PRIO_PROCESS, 0, 19);   /* Linux: this thread only */
    pthread_mutex_lock(&p->mu);
    while (!p->stop && p->n_made < p->n_slots) {
        if (p->n_made >= p->n_alloc + p->z_ahead) {
            pthread_cond_wait(&p->zcv, &p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        unsigned char *mem = slot_alloc(p->slot_bytes);
        if (mem) slot_fault_in(mem, p->slot_bytes);
        pthread_mutex_lock(&p->mu);
        if (!mem) break;       /* admit allocates (or falls back) itself */
        if (p->n_made < p->n_slots) p->slots[p->n_made++] = mem;
        else free(mem);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Make room for expert idx and start reading it.  false: no room. */
static bool admit(struct moe_pager *p, int idx, bool demand)
{
    struct pexp *x = &p->ex[idx];
    while (!room(p, x)) {
        int v = victim(p, !demand);
        if (v < 0) return false;
        evict(p, v);
    }
    x->io_err = 0;
    if (is_file_mode(p)) {
        int s;
        if (p->n_free > 0) {
            s = p->free_slots[--p->n_free];
        } else if (p->n_alloc < p->n_made) {   /* faulted in by the prefault thread */
            s = p->n_alloc++;
            pthread_cond_signal(&p->zcv);
        } else {
            void *mem = slot_alloc(p->slot_bytes);
            if (!mem) {
                /* no memory for a slot: compute on the mapping (not counted as held) */
                p->n_slots = p->n_made = p->n_alloc;
                memcpy(x->mats, x->map_mats, sizeof x->mats);
                x->state = ST_READY;
                x->slot = -1;
                return true;
            }
            s = p->n_alloc++;
            p->slots[s] = mem;
            p->n_made = p->n_alloc;
        }
        x->slot = s;
        for (int j = 0; j < 3; j++) {
            x->mats[j] = x->map_mats[j];
            const struct prange *r = &x->r[x->data_r[j]];
            x->mats[j].data = p->slots[s] + r->slot_off + (r->off - r->aoff);
            if (x->scale_r[j] >= 0) {
                r = &x->r[x->scale_r[j]];
                x->mats[j].scale = (const float *)(const void *)(p->slots[s] + r->slot_off + (r->off - r->aoff));
            }
        }
    } else {
        memcpy(x->mats, x->map_mats, sizeof x->mats);
    }
    p->resident += x->bytes;
    x->state = ST_LOADING;
    x->prefetched = !demand;
    p->st.bytes_read += x->bytes;
    if (demand) p->st.misses++;
    else p->st.prefetches++;
    queue_chunks(p, idx, demand);
    return true;
}

static void admit_waiting(struct moe_pager *p)
{
    int w = 0;
    for (int i = 0; i < p->n_wait; i++) {
        const int idx = p->waitlist[i];
        if (p->ex[idx].state == ST_WAITING && !admit(p, idx, true)) p->waitlist[w++] = idx;
    }
    p->n_wait = w;
}

static void touch(struct moe_pager *p, struct pexp *x)
{
    x->key = freq_touch(x->key, (double)p->tok);
    x->last_tok = p->tok;
    x->last_seq = ++p->seq;
}

/* ---- the forward pass's calls */

int moe_pager_lookahead(const struct moe_pager *p) { return p->mode == MOE_PAGER_OFF ? 0 : p->lookahead; }

void moe_pager_trace(struct moe_pager *p, int layer, const int *sel, int T, int K)
{
    if (!p->trace) return;
    for (int t = 0; t < T; t++) {
        fprintf(p->trace, "%lld %d", (long long)(p->tok + t), layer);
        for (int k = 0; k < K; k++) fprintf(p->trace, " %d", sel[t * K + k]);
        fputc('\n', p->trace);
    }
}

void moe_pager_request(struct moe_pager *p, int layer, const int *experts, int n)
{
    if (p->mode == MOE_PAGER_OFF) {
        p->st.hits += (uint64_t)n;
        return;
    }
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < n; i++) {
        const int idx = layer * p->E + experts[i];
        struct pexp *x = &p->ex[idx];
        x->pins++;
        touch(p, x);
        if (x->state == ST_READY || x->state == ST_LOADING) {
            p->st.hits++;
            if (x->prefetched) {
                p->st.prefetch_hits++;
                x->prefetched = 0;
                if (x->state == ST_LOADING) promote(p, idx);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        const int idx = layer * p->E + experts[i];
        struct pexp *x = &p->ex[idx];
        if (x->state != ST_ABSENT) continue;
        if (!admit(p, idx, true)) {
            x->state = ST_WAITING;
            p->waitlist[p->n_wait++] = idx;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

void moe_pager_prefetch(struct moe_pager *p, int layer, const int *experts, int n)
{
    if (p->mode == MOE_PAGER_OFF || p->lookahead <= 0) return;
    pthread_mutex_lock(&p->mu);
    for (int i = 0, done = 0; i < n && done < p->lookahead; i++) {
        const int idx = layer * p->E + experts[i];
        if (p->ex[idx].state != ST_ABSENT) continue;
        if (!admit(p, idx, false)) break;
        done++;
    }
    pthread_mutex_unlock(&p->mu);
}

int moe_pager_collect(struct moe_pager *p, int layer, const int *experts, int n, unsigned char *taken, int *out)
{
    int cnt = 0, left = 0;
    for (int i = 0; i < n; i++) left += !taken[i];
    if (!left) return 0;
    if (p->mode == MOE_PAGER_OFF) {
        for (int i = 0; i < n; i++)
            if (!taken[i]) {
                taken[i] = 1;
                out[cnt++] = experts[i];
            }
        return cnt;
    }
    pthread_mutex_lock(&p->mu);
    double t0 = 0;
    for (;;) {
        for (int i = 0; i < n; i++)
            if (!taken[i] && p->ex[layer * p->E + experts[i]].state == ST_READY) {
                taken[i] = 1;
                out[cnt++] = experts[i];
            }
        if (cnt) break;
        if (t0 == 0) t0 = now_sec();
        admit_waiting(p);
        pthread_cond_wait(&p->done, &p->mu);
    }
    if (t0 != 0) p->st.stall_sec += now_sec() - t0;
    pthread_mutex_unlock(&p->mu);
    return cnt;
}

const struct moe_mat *moe_pager_mats(struct moe_pager *p, int layer, int e)
{
    struct pexp *x = &p->ex[layer * p->E + e];
    return p->mode == MOE_PAGER_OFF ? x->map_mats : x->mats;
}

void moe_pager_release(struct moe_pager *p, int layer, int e)
{
    if (p->mode == MOE_PAGER_OFF) return;
    pthread_mutex_lock(&p->mu);
    struct pexp *x = &p->ex[layer * p->E + e];
    if (x->pins > 0) x->pins--;
    if (p->n_wait) admit_waiting(p);
    pthread_mutex_unlock(&p->mu);
}

void moe_pager_end_batch(struct moe_pager *p, int T)
{
    pthread_mutex_lock(&p->mu);
    p->tok += T;
    p->st.tokens += T;
    p->st.resident_bytes = p->resident;
    if (p->n_hist < HISTORY_MAX) {
        if (p->n_hist == p->cap_hist) {
            int64_t nc = p->cap_hist ? 2 * p->cap_hist : 1024;
            struct moe_pager_stats *nh = realloc(p->hist, (size_t)nc * sizeof *nh);
            if (nh) {
                p->hist = nh;
                p->cap_hist = nc;
            }
        }
        if (p->n_hist < p->cap_hist) {
            struct moe_pager_stats d = p->st, *l = &p->last;
            d.tokens -= l->tokens;
            d.hits -= l->hits;
            d.misses -= l->misses;
            d.prefetches -= l->prefetches;
            d.prefetch_hits -= l->prefetch_hits;
            d.evictions -= l->evictions;
            d.bytes_read -= l->bytes_read;
            d.stall_sec -= l->stall_sec;
            p->hist[p->n_hist++] = d;
        }
    }
    p->last = p->st;
    pthread_mutex_unlock(&p->mu);
    if (p->trace) fflush(p->trace);
}

void moe_pager_get_stats(const struct moe_pager *p, struct moe_pager_stats *s)
{
    pthread_mutex_lock((pthread_mutex_t *)&p->mu);
    *s = p->st;
    s->resident_bytes = p->resident;
    pthread_mutex_unlock((pthread_mutex_t *)&p->mu);
}

int64_t moe_pager_get_history(const struct moe_pager *p, struct moe_pager_stats *out, int64_t max)
{
    if (out)
        for (int64_t i = 0; i < max && i < p->n_hist; i++) out[i] = p->hist[i];
    return p->n_hist;
}

/* ---- creation */

static int add_file(struct moe_pager *p, const char *path, const uint8_t *map, size_t size)
{
    struct pfile *f = &p->files[p->n_files++];
    *f = (struct pfile){.path = path, .fd = -1, .dfd = -1, .map = map, .size = size};
    return 0;
}

/* The file holding [ptr, ptr + n). */
static int locate(const struct moe_pager *p, const void *ptr, size_t n, uint64_t *off)
{
    const uint8_t *q = ptr;
    for (int i = 0; i < p->n_files; i++) {
        const struct pfile *f = &p->files[i];
        if (f->map && q >= f->map && (size_t)(q - f->map) <= f->size && n <= f->size - (size_t)(q - f->map)) {
            *off = (uint64_t)(q - f->map);
            return i;
        }
    }
    return -1;
}

static int add_range(struct moe_pager *p, struct pexp *x, const void *ptr, size_t n, char *err, size_t errlen,
                     int layer, int e)
{
    uint64_t off;
    const int fi = locate(p, ptr, n, &off);
    if (fi < 0)
        return moe_errorf(err, errlen, MOE_ERR_INVALID, "pager: layer %d expert %d: weights outside the mapped files",
                          layer, e);
    struct prange *r = &x->r[x->nr];
    r->file = fi;
    r->off = off;
    r->len = n;
    r->map = ptr;
    r->aoff = off & ~(PAGER_ALIGN - 1);
    r->alen = (size_t)(((off + n + PAGER_ALIGN - 1) & ~(PAGER_ALIGN - 1)) - r->aoff);
    r->slot_off = x->nr ? x->r[x->nr - 1].slot_off + x->r[x->nr - 1].alen : 0;
    x->bytes += n;
    return x->nr++;
}

static bool is_expert_tensor(const char *name)
{
    return strstr(name, "_exps.") != NULL || strstr(name, ".mlp.experts.") != NULL;
}

int moe_pager_create(struct moe_pager **out, struct moe_model *m, int mode, size_t budget, int policy,
                     int lookahead, int io_threads, int prefault, const char *trace_path, char *err, size_t errlen)
{
    *out = NULL;
    if (mode != MOE_PAGER_OFF && mode != MOE_PAGER_MMAP && mode != MOE_PAGER_PREAD && mode != MOE_PAGER_DIRECT)
        return moe_errorf(err, errlen, MOE_ERR_INVALID, "pager: unknown mode %d", mode);
    if (policy != MOE_POLICY_FREQ && policy != MOE_POLICY_LRU)
        return moe_errorf(err, errlen, MOE_ERR_INVALID, "pager: unknown policy %d", policy);
    struct moe_pager *p = calloc(1, sizeof *p);
    if (!p) return moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
    p->m = m;
    p->mode = mode;
    p->policy = policy;
    p->lookahead = lookahead > 0 ? lookahead : 0;
    p->budget = budget;
    p->n_layers = m->cfg.n_layers;
    p->E = m->cfg.n_routed_experts > 0 ? m->cfg.n_routed_experts : 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    pthread_cond_init(&p->zcv, NULL);
    int rc = MOE_OK;
    const size_t total = (size_t)p->n_layers * (size_t)p->E;
    const struct moe_model_files *mf = m->files;
    const int nf = mf->kind == MOE_FILES_GGUF ? 1 : (int)mf->st->n_shards;
    p->ex = calloc(total, sizeof *p->ex);
    p->files = calloc((size_t)nf, sizeof *p->files);
    p->waitlist = calloc(total, sizeof *p->waitlist);
    if (!p->ex || !p->files || !p->waitlist) {
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (mf->kind == MOE_FILES_GGUF) add_file(p, mf->gguf->path, mf->gguf->map, mf->gguf->size);
    else
        for (int i = 0; i < nf; i++) add_file(p, mf->st->shards[i].path, mf->st->shards[i].map, mf->st->shards[i].size);

    /* every routed expert's byte ranges */
    size_t total_bytes = 0;
    for (int l = 0; l < p->n_layers; l++) {
        const struct moe_layer *L = &m->layers[l];
        if (!L->is_moe) continue;
        for (int e = 0; e < p->E; e++) {
            struct pexp *x = &p->ex[l * p->E + e];
            const struct moe_mat *w[3] = {&L->exp_gate[e], &L->exp_up[e], &L->exp_down[e]};
            x->slot = -1;
            x->key = -INFINITY;
            x->last_tok = -2;
            for (int j = 0; j < 3; j++) {
                x->map_mats[j] = *w[j];
                const size_t n = moe_wtype_row_bytes(w[j]->type, w[j]->cols) * (size_t)w[j]->rows;
                if ((rc = x->data_r[j] = add_range(p, x, w[j]->data, n, err, errlen, l, e)) < 0) goto fail;
                x->scale_r[j] = -1;
                if (w[j]->scale) {
                    const size_t ns = sizeof(float) * (size_t)(moe_fp8_scale_rows(w[j]->rows) *
                                                               moe_fp8_scale_cols(w[j]->cols));
                    if ((rc = x->scale_r[j] = add_range(p, x, w[j]->scale, ns, err, errlen, l, e)) < 0) goto fail;
                }
            }
            memcpy(x->mats, x->map_mats, sizeof x->mats);
            const size_t sb = x->r[x->nr - 1].slot_off + x->r[x->nr - 1].alen;
            if (sb > p->slot_bytes) p->slot_bytes = sb;
            total_bytes += x->bytes;
        }
    }
    rc = MOE_OK;
    if (trace_path) {
        p->trace = fopen(trace_path, "w");
        if (!p->trace) {
            rc = moe_errorf(err, errlen, MOE_ERR_IO, "cannot write the routing trace '%s': %s", trace_path,
                            strerror(errno));
            goto fail;
        }
    }
    p->st.mode = mode;
    p->st.budget_bytes = mode == MOE_PAGER_OFF ? SIZE_MAX : budget;
    if (mode == MOE_PAGER_OFF) {
        *out = p;
        return MOE_OK;
    }

    for (int i = 0; i < p->n_files; i++) {
        struct pfile *f = &p->files[i];
        f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
        if (f->fd < 0) {
            rc = moe_errorf(err, errlen, MOE_ERR_IO, "pager: cannot open '%s': %s", f->path, strerror(errno));
            goto fail;
        }
#ifdef O_DIRECT
        if (mode == MOE_PAGER_DIRECT) f->dfd = open(f->path, O_RDONLY | O_CLOEXEC | O_DIRECT); /* -1: plain pread */
#endif
    }
    if (is_file_mode(p)) {
        size_t n = p->slot_bytes ? budget / p->slot_bytes : 0;
        const size_t all = total_bytes ? total : 1;
        if (n > all) n = all;
        if (n < 1) n = 1;
        p->n_slots = (int)n;
        p->slots = calloc(n, sizeof *p->slots);
        p->free_slots = calloc(n, sizeof *p->free_slots);
        if (!p->slots || !p->free_slots) {
            rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    /* Residency starts from nothing (then it is what the pager holds): the
     * files leave the page cache (dirty pages cannot: sync first); faults
     * and reads read no more than asked (MADV_RANDOM on the whole mapping,
     * POSIX_FADV_RANDOM: no read-ahead into neighbouring experts; our own
     * reads say exactly what they want); then every other tensor is read
     * and mapped. */
    for (int i = 0; i < p->n_files; i++) {
        (void)fdatasync(p->files[i].fd);
        (void)posix_fadvise(p->files[i].fd, 0, 0, POSIX_FADV_DONTNEED);
        (void)posix_fadvise(p->files[i].fd, 0, 0, POSIX_FADV_RANDOM);
    }
    for (int i = 0; i < p->n_files; i++)
        if (p->files[i].map) {
            (void)madvise((void *)p->files[i].map, p->files[i].size, MADV_RANDOM);
#ifdef MADV_NOHUGEPAGE
            /* the mapping asked for 2 MiB folios (moe_map_file): a fault
             * would then read the 2 MiB around it, experts' bytes included */
            (void)madvise((void *)p->files[i].map, p->files[i].size, MADV_NOHUGEPAGE);
#endif
        }
    for (size_t i = 0; i < mf->n_tensors; i++) {
        const struct moe_tensor *t = &mf->tensors[i];
        if (!t->nbytes || !t->data || is_expert_tensor(t->name)) continue;
#ifdef MADV_HUGEPAGE
        /* 2 MiB folios inside the tensor only (the GEMVs stream these) */
        const uintptr_t a = ((uintptr_t)t->data + FOLIO_MAX - 1) & ~(uintptr_t)(FOLIO_MAX - 1);
        const uintptr_t b = ((uintptr_t)t->data + t->nbytes) & ~(uintptr_t)(FOLIO_MAX - 1);
        if (b > a) (void)madvise((void *)a, b - a, MADV_HUGEPAGE);
#endif
        populate(t->data, t->nbytes);
    }

    p->n_io = io_threads > 0 ? io_threads : 16;   /* 16 streams read the disk here ~35% faster than 8 (fio) */
    if (p->n_io > 64) p->n_io = 64;
    /* Look-ahead pieces run on at most a quarter of the threads: a demand
     * read never waits for a free thread, and shares the disk with at most
     * la_cap look-ahead pieces already started (16 MiB with the defaults).
     * Measured (36 GB model, 16 GiB, 1024 tokens, 3 alternating pairs):
     * 15.41 vs 15.28 tok/s median, stall 16.2-19.2 vs 16.3-18.8 ms/token
     * without the cap: the look-ahead loses nothing by it. */
    p->la_cap = p->n_io / 4 > 0 ? p->n_io / 4 : 1;
    p->io = calloc((size_t)p->n_io, sizeof *p->io);
    if (!p->io) {
        rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < p->n_io; i++)
        if (pthread_create(&p->io[i], NULL, io_main, p) != 0) {
            p->n_io = i;
            rc = moe_errorf(err, errlen, MOE_ERR_NOMEM, "pager: cannot start I/O thread %d", i);
            goto fail;
        }
    int n_moe = 0;
    for (int l = 0; l < p->n_layers; l++) n_moe += m->layers[l].is_moe;
    p->z_ahead = n_moe * (m->cfg.n_experts_per_tok > 0 ? m->cfg.n_experts_per_tok : 1);
#ifdef _SC_AVPHYS_PAGES
    if (is_file_mode(p) && budget != SIZE_MAX && p->slot_bytes) {
        const double fit = 0.8 * (double)moe_mem_bytes(_SC_AVPHYS_PAGES) / (double)p->slot_bytes;
        const int n = fit < (double)p->n_slots ? (int)fit : p->n_slots;
        if (n > p->z_ahead) p->z_ahead = n;
    }
#endif
    if (is_file_mode(p) && prefault) p->zt_on = pthread_create(&p->zt, NULL, prefault_main, p) == 0;
    *out = p;
    return MOE_OK;
fail:
    moe_pager_free(p);
    return rc;
}

void moe_pager_free(struct moe_pager *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_cond_broadcast(&p->zcv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_io; i++) pthread_join(p->io[i], NULL);
    if (p->zt_on) pthread_join(p->zt, NULL);
    free(p->io);
    if (p->files)
        for (int i = 0; i < p->n_files; i++) {
            if (p->files[i].fd >= 0) close(p->files[i].fd);
            if (p->files[i].dfd >= 0) close(p->files[i].dfd);
        }
    for (int i = 0; i < p->n_made; i++) free(p->slots[i]);
    free(p->slots);
    free(p->free_slots);
    free(p->files);
    free(p->ex);
    free(p->waitlist);
    free(p->dq.v);
    free(p->pq.v);
    free(p->hist);
    if (p->trace) fclose(p->trace);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->zcv);
    free(p);
}

/* ---- offline replay */

int64_t moe_pager_replay(const struct moe_trace_use *uses, int64_t n, int n_layers, int n_experts, int64_t capacity,
                         int policy, int64_t *misses)
{
    const size_t total = (size_t)n_layers * (size_t)n_experts;
    const bool opt = policy == MOE_REPLAY_OPT;
    double *key = malloc(total * sizeof *key);
    uint64_t *seq = calloc(total, sizeof *seq);
    unsigned char *res = calloc(total, 1), *pin = calloc(total, 1);
    /* OPT: next[u] = index of the next use of u's expert in a later request
     * (n: none); the key is minus it, so the smallest key (the victim) is
     * the one used farthest ahead. */
    int64_t *next = opt ? malloc((size_t)(n > 0 ? n : 1) * sizeof *next) : NULL;
    if (!key || !seq || !res || !pin || (opt && !next)) {
        free(key), free(seq), free(res), free(pin), free(next);
        return -1;
    }
    if (opt) {
        for (size_t i = 0; i < total; i++) seq[i] = (uint64_t)n;   /* scratch: its first use after u, or n */
        for (int64_t u = n - 1; u >= 0; u--) {
            const size_t x = (size_t)uses[u].layer * (size_t)n_experts + (size_t)uses[u].expert;
            int64_t v = (int64_t)seq[x];
            if (v < n && uses[v].token == uses[u].token && uses[v].layer == uses[u].layer)
                v = next[v];   /* the same expert again in this request: its next use is after it */
            next[u] = v;
            seq[x] = (uint64_t)u;
        }
        memset(seq, 0, total * sizeof *seq);
        policy = MOE_POLICY_FREQ;   /* smallest key first */
    }
    for (size_t i = 0; i < total; i++) key[i] = -INFINITY;
    int64_t hits = 0, miss = 0, count = 0;
    uint64_t clock = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;         /* one request: the uses of one (token, layer) */
        while (j < n && uses[j].token == uses[i].token && uses[j].layer == uses[i].layer) j++;
        for (int64_t u = i; u < j; u++) {
            const size_t x = (size_t)uses[u].layer * (size_t)n_experts + (size_t)uses[u].expert;
            if (pin[x]) continue;   /* the same expert twice in a request */
            pin[x] = 1;
            key[x] = opt ? -(double)next[u] : freq_touch(key[x], (double)uses[u].token);
            seq[x] = ++clock;
            hits += res[x];
        }
        for (int64_t u = i; u < j; u++) {
            const size_t x = (size_t)uses[u].layer * (size_t)n_experts + (size_t)uses[u].expert;
            if (res[x]) continue;
            while (count >= capacity) {
                int64_t best = -1;
                for (size_t v = 0; v < total; v++)
                    if (res[v] && !pin[v] && (best < 0 || worse(policy, key[v], seq[v], key[best], seq[best])))
                        best = (int64_t)v;
                if (best < 0) break;    /* all pinned: go over, like the pager's one layer */
                res[best] = 0;
                count--;
            }
            res[x] = 1;
            count++;
            miss++;
        }
        for (int64_t u = i; u < j; u++) pin[(size_t)uses[u].layer * (size_t)n_experts + (size_t)uses[u].expert] = 0;
        i = j;
    }
    free(key), free(seq), free(res), free(pin), free(next);
    if (misses) *misses = miss;
    return hits;
}
