/* narrow: float64 -> float32 at memory speed (narrow.h).
 *
 * The scan needs, per value, the relative error |f32(v) - v| / |v|: a
 * division the vector units do slowly.  So values are first tested, 64 at a
 * time, without dividing, whether any could raise the largest error (or
 * overflow); only such chunks, rare once the maximum has settled, are
 * measured exactly, by the very loop the strided scans use. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memtamer/config.h"
#include "memtamer/narrow.h"
#include "memtamer/worker.h"

#if MT_HAS_SSE2
#include <immintrin.h>
#endif

#if MT_HAS_TARGET_CLONES
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* Threads take 256 KiB of doubles at a time; the scan measures exactly
 * 64 values (512 bytes) at a time.  Below 8 MiB per thread a thread costs
 * more than it saves. */
#define BLOCK_VALUES ((size_t)32768)
#define CHUNK_VALUES ((size_t)64)
#define VALUES_PER_THREAD ((size_t)1 << 20)
#define MAX_THREADS 4

/* ------------------------------------------------------------------ */
/* The exact measure                                                   */
/* ------------------------------------------------------------------ */

/* Branch-free and without calls (no fmax): NaN and infinities have error
 * NaN (inf - inf), zeros 0/0, and comparisons skip NaN. */
#define ROUNDING_LOOP(name, from_t, to_t)                                                          \
    void name(const char *p, ptrdiff_t stride, ptrdiff_t n, mt_narrow_rounding *r)                 \
    {                                                                                              \
        double max_err = r->max_err;                                                               \
        long long overflow = r->overflow;                                                          \
        for (ptrdiff_t i = 0; i < n; i++, p += stride) {                                           \
            from_t v;                                                                              \
            memcpy(&v, p, sizeof v);                                                               \
            double x = (double)v, y = (double)(to_t)v;                                             \
            int overflows = isinf(y) && isfinite(x);                                               \
            double err = overflows ? 0.0 : fabs(y - x) / fabs(x);                                  \
            overflow += overflows;                                                                 \
            max_err = err > max_err ? err : max_err;                                               \
        }                                                                                          \
        r->max_err = max_err;                                                                      \
        r->overflow = overflow;                                                                    \
    }

ROUNDING_LOOP(mt_narrow_rounding_f64_f32, double, float)
ROUNDING_LOOP(mt_narrow_rounding_f64_f16, double, _Float16)
ROUNDING_LOOP(mt_narrow_rounding_f32_f16, float, _Float16)

/* ------------------------------------------------------------------ */
/* Threads                                                             */
/* ------------------------------------------------------------------ */

/* How many threads n values deserve. */
static int
threads_for(size_t n)
{
    size_t wanted = n / VALUES_PER_THREAD;
    if (wanted < 2) {
        /* Not worth asking how many cores there are: a scan of the short
         * runs between an Arrow column's nulls comes here once a run. */
        return 1;
    }
    int most = mt_worker_cores(MAX_THREADS);
    return wanted > (size_t)most ? most : (int)wanted;
}

/* ------------------------------------------------------------------ */
/* The scan                                                            */
/* ------------------------------------------------------------------ */

/* A c with d * c >= |v| for every value whose error d / |v| exceeds
 * max_err: 1 / max_err raised by a margin that outweighs the rounding of
 * 1 / max_err, of d * c and of d / |v|; >= rather than >, because where d
 * and |v| are subnormal, d * c may round down to |v| itself (rounding is
 * monotone, so never below).  inf while max_err is 0. */
static double
raise_threshold(double max_err)
{
    return max_err > 0 ? (1.0 / max_err) * (1.0 + 0x1p-40) : INFINITY;
}

/* Where the first chunk of CHUNK_VALUES values (or the shorter tail) in
 * which some value may raise the largest error or overflow (d = inf)
 * begins; n if none.  Values that round exactly (d = 0) or to themselves
 * (NaN, inf: d is NaN) never qualify.  Branch-free within a chunk, so it
 * vectorises; the exact measure then takes one chunk, not a whole block,
 * so data whose largest error creeps up costs a few divisions a block. */
VECTOR_CLONES static size_t
first_raising_chunk(const double *restrict values, size_t n, double threshold)
{
    for (size_t start = 0; start < n; start += CHUNK_VALUES) {
        size_t end = n - start < CHUNK_VALUES ? n : start + CHUNK_VALUES;
        int64_t hit = 0;
        for (size_t i = start; i < end; i++) {
            double v = values[i], d = fabs((double)(float)v - v);
            hit |= (d * threshold >= fabs(v)) & (d != 0);
        }
        if (hit) {
            return start;
        }
    }
    return n;
}

/* Adds n values to r: fast where no value can change it, exact elsewhere. */
static void
scan_values(const double *values, size_t n, mt_narrow_rounding *r)
{
    double threshold = raise_threshold(r->max_err);
    size_t at = 0;
    while ((at += first_raising_chunk(values + at, n - at, threshold)) < n) {
        size_t chunk = n - at < CHUNK_VALUES ? n - at : CHUNK_VALUES;
        mt_narrow_rounding_f64_f32((const char *)(values + at), sizeof(double), (ptrdiff_t)chunk,
                                   r);
        threshold = raise_threshold(r->max_err);
        at += chunk;
    }
}

/* Threads take blocks as they go, so one that the machine delays holds up
 * no other; back to front, so that the conversion, which starts at the
 * front, finds the last blocks scanned still in the caches. */
typedef struct {
    const double *values;
    size_t n, blocks;
    atomic_size_t taken; /* blocks taken so far */
} scan_job;

typedef struct {
    scan_job *job;
    mt_narrow_rounding r; /* over the blocks this thread took */
} scan_share;

static void *
scan_work(void *arg)
{
    scan_share *s = arg;
    scan_job *job = s->job;
    size_t k;
    while ((k = atomic_fetch_add(&job->taken, 1)) < job->blocks) {
        size_t first = (job->blocks - 1 - k) * BLOCK_VALUES;
        size_t n = job->n - first < BLOCK_VALUES ? job->n - first : BLOCK_VALUES;
        scan_values(job->values + first, n, &s->r);
    }
    return NULL;
}

void
mt_narrow_scan_f64_f32(const double *values, size_t n, mt_narrow_rounding *r)
{
    scan_job job = {values, n, (n + BLOCK_VALUES - 1) / BLOCK_VALUES, 0};
    scan_share shares[MAX_THREADS];
    int nthreads = threads_for(n);
    for (int k = 0; k < nthreads; k++) {
        shares[k] = (scan_share){&job, {r->max_err, 0}};
    }
    mt_worker_run_shares(scan_work, (char *)shares, sizeof shares[0], nthreads);
    for (int k = 0; k < nthreads; k++) {
        r->max_err = shares[k].r.max_err > r->max_err ? shares[k].r.max_err : r->max_err;
        r->overflow += shares[k].r.overflow;
    }
}

/* ------------------------------------------------------------------ */
/* The conversion                                                      */
/* ------------------------------------------------------------------ */

/* Block k's floats land on the doubles of block k / 2 (the first block's
 * on its own, front to back).  So threads take blocks in order as they go,
 * and a block is written only once block k / 2 has been read; each block's
 * floats are stored past the caches (nothing reads them soon, and a cached
 * store would first read the old line from memory). */
typedef struct {
    char *data;
    size_t n, blocks;
    atomic_size_t next; /* the next block nobody has taken */
    atomic_uchar *read; /* read[k]: block k's doubles are all read; NULL: one thread */
    int avx512;         /* the CPU has AVX-512F */
} conversion;

/* Front to back within one buffer: each float lands on doubles already read. */
static void
convert_overlapping(const char *src, char *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double v;
        memcpy(&v, src + i * sizeof v, sizeof v);
        float f = (float)v;
        memcpy(dst + i * sizeof f, &f, sizeof f);
    }
}

VECTOR_CLONES static void
convert_apart(const double *restrict src, float *restrict dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = (float)src[i];
    }
}

#if MT_HAS_SSE2
/* Streaming stores: n values from dst, 32-byte aligned, in whole vectors;
 * returns how many were converted. */
__attribute__((target("avx512f"))) static size_t
stream_avx512(const double *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_stream_ps(dst + i, _mm512_cvtpd_ps(_mm512_loadu_pd(src + i)));
    }
    return i;
}

static size_t
stream_sse2(const double *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128 lo = _mm_cvtpd_ps(_mm_loadu_pd(src + i));
        __m128 hi = _mm_cvtpd_ps(_mm_loadu_pd(src + i + 2));
        _mm_stream_ps(dst + i, _mm_movelh_ps(lo, hi));
    }
    return i;
}
#endif

/* n values from src to dst, which do not overlap.  Where the CPU has them,
 * streaming stores, from the first 32-byte boundary of dst on. */
static void
convert_block(const conversion *c, const double *src, float *dst, size_t n)
{
#if MT_HAS_SSE2
    size_t head = (((uintptr_t)0 - (uintptr_t)dst) & 31) / sizeof *dst;
    head = head < n ? head : n;
    convert_apart(src, dst, head);
    size_t done =
        head + (c->avx512 ? stream_avx512 : stream_sse2)(src + head, dst + head, n - head);
    convert_apart(src + done, dst + done, n - done);
    /* Streaming stores are weakly ordered: done before we say so. */
    _mm_sfence();
#else
    convert_apart(src, dst, n);
#endif
}

static void *
conversion_work(void *arg)
{
    conversion *c = arg;
    size_t k;
    while ((k = atomic_fetch_add(&c->next, 1)) < c->blocks) {
        size_t first = k * BLOCK_VALUES;
        size_t n = c->n - first < BLOCK_VALUES ? c->n - first : BLOCK_VALUES;
        if (k == 0) {
            convert_overlapping(c->data, c->data, n);
        }
        else {
            while (c->read && !atomic_load_explicit(&c->read[k / 2], memory_order_acquire)) {
                sched_yield();
            }
            convert_block(c, (const double *)c->data + first, (float *)c->data + first, n);
        }
        if (c->read) {
            atomic_store_explicit(&c->read[k], 1, memory_order_release);
        }
    }
    return NULL;
}

void
mt_narrow_f64_to_f32_in_place(char *data, size_t n)
{
    conversion c = {data, n, (n + BLOCK_VALUES - 1) / BLOCK_VALUES, 0, NULL, 0};
#if MT_HAS_SSE2
    c.avx512 = __builtin_cpu_supports("avx512f");
#endif
    int nthreads = threads_for(n);
    if (nthreads > 1) {
        c.read = calloc(c.blocks, sizeof c.read[0]);
    }
    if (c.read == NULL) {
        /* One thread takes the blocks in order: nothing to wait for. */
        conversion_work(&c);
        return;
    }
    mt_worker_run_shares(conversion_work, (char *)&c, 0, nthreads);
    free(c.read);
}
