/* frames: compressed frames over c-blosc, narrowed first where it pays
 * (frames.h). */
#include "memtamer/memtamer.h"

#include <blosc.h>
#include <pthread.h>
#include <string.h>

#include "memtamer/entropy.h"
#include "memtamer/frames.h"
#include "memtamer/options.h"
#include "memtamer/worker.h"

#define CHUNK_BYTES MT_FRAMES_CHUNK_BYTES
/* Values per transform block: each block has its own frame of reference. */
#define BLOCK_VALUES ((size_t)1 << 14)
#define MAX_THREADS 8
/* 'auto' tries lz4 at the user's level, zstd at blosc's level 1 (zstd's
 * own fastest) and at blosc's level 3 (zstd's 5): the deeper level costs two
 * to four times the time, and pays on real tables (a fifth to a half
 * smaller on public datasets, bench/floatcodecs.py), not on smooth series. */
#define AUTO_ZSTD_LEVEL 1
#define AUTO_ZSTD_DEEP_LEVEL 3
/* The deeper zstd is also tried on values left whole, unshuffled: values
 * that repeat (a table's few distinct values, scaled or not) repeat as
 * whole 8-byte strings, which byte shuffling cuts apart. */
#define AUTO_UNSHUFFLED 3
/* And the byte planes coded by rANS (entropy.h), which no blosc codec
 * does: it is taken whenever it is smallest. */
#define ENTROPY_CODEC "rans"
#define AUTO_CANDIDATES 5
/* The sample that decides: pieces spread over the largest source. */
#define SAMPLE_PIECES 8
#define SAMPLE_PIECE ((size_t)512 << 10)
/* Narrowing is tried when the plan expects at most about half the bytes:
 * float32 values take half, and a few exceptions among them must not
 * keep the sample from deciding. */
#define NARROW_AT_MOST 4.5
/* 'auto' takes a slower candidate over a faster one only when its result is
 * at least this much smaller: a few percent are not worth its time. */
#define ZSTD_MUST_SAVE 0.10

/* The one translator of blosc's return codes into Python exceptions. */
static void
blosc_error(int rc, const char *doing)
{
    if (rc == 0 && strcmp(doing, "decompressing") == 0) {
        PyErr_SetString(PyExc_ValueError, "memtamer: compressed data is corrupt or truncated");
    }
    else {
        PyErr_Format(PyExc_RuntimeError, "memtamer: blosc failed while %s (code %d)", doing, rc);
    }
}

int
mt_frames_parse_settings(PyObject *codec, PyObject *level, PyObject *threads, PyObject *narrow,
                         mt_settings *how)
{
    char problem[MT_OPTIONS_PROBLEM_MAX];
    const char *name = codec && codec != Py_None ? PyUnicode_AsUTF8(codec) : MT_DEFAULT_CODEC;
    if (name == NULL) {
        return -1;
    }
    memset(how, 0, sizeof *how);
    how->automatic = strcmp(name, "auto") == 0;
    if (!mt_options_codec_ok(name) || strlen(name) >= sizeof how->codec) {
        mt_options_codec_problem(name, problem, sizeof problem);
        PyErr_Format(PyExc_ValueError, "--codec: %s", problem);
        return -1;
    }
    strcpy(how->codec, how->automatic ? "lz4" : name);
    how->level = MT_DEFAULT_LEVEL;
    if (level && level != Py_None) {
        long l = PyLong_AsLong(level);
        if (l == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!mt_options_level_ok(l)) {
            char text[32];
            snprintf(text, sizeof text, "%ld", l);
            mt_options_level_problem(text, problem, sizeof problem);
            PyErr_Format(PyExc_ValueError, "--level: %s", problem);
            return -1;
        }
        how->level = (int)l;
    }
    /* By default, the cores others leave idle. */
    how->nthreads = mt_worker_idle_cores(MAX_THREADS);
    if (threads && threads != Py_None) {
        int cores = mt_worker_cores(MAX_THREADS);
        long n = PyLong_AsLong(threads);
        if (n == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (n < 1 || n > cores) {
            PyErr_Format(PyExc_ValueError, "threads must be 1 to %d (the cores there are), not %ld",
                         cores, n);
            return -1;
        }
        how->nthreads = (int)n;
    }
    how->narrow = narrow == NULL || narrow == Py_None ? 1 : PyObject_IsTrue(narrow);
    return how->narrow < 0 ? -1 : 0;
}

void
mt_frames_free(mt_frame *frames, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; frames && i < n; i++) {
        for (Py_ssize_t j = 0; j < frames[i].nchunks; j++) {
            PyMem_RawFree(frames[i].chunks[j].data);
        }
        PyMem_RawFree(frames[i].chunks);
    }
    PyMem_RawFree(frames);
}

int
mt_frames_typesize(Py_ssize_t itemsize)
{
    return itemsize >= 1 && itemsize <= BLOSC_MAX_TYPESIZE ? (int)itemsize : 1;
}

size_t
mt_frames_csize(const mt_frame *f)
{
    size_t csize = 0;
    for (Py_ssize_t j = 0; j < f->nchunks; j++) {
        csize += f->chunks[j].csize;
    }
    return csize;
}

/* Calls progress(done, total) when given, and lets Ctrl-C abort.  -1/0. */
static int
report_progress(PyObject *progress, size_t done, size_t total)
{
    if (PyErr_CheckSignals() < 0) {
        return -1;
    }
    if (progress == NULL || progress == Py_None) {
        return 0;
    }
    PyObject *r = PyObject_CallFunction(progress, "nn", (Py_ssize_t)done, (Py_ssize_t)total);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Lets other threads run during work on memory no Python object can free,
 * unless keep_gil: then no Python thread runs until the caller is done
 * (see mt_frames_compress). */
static PyThreadState *
release_gil(int keep_gil)
{
    return keep_gil ? NULL : PyEval_SaveThread();
}

static void
take_gil(PyThreadState *released)
{
    if (released != NULL) {
        PyEval_RestoreThread(released);
    }
}

/* ---- narrowing, in blocks, on every core (no GIL needed) ---- */

static size_t
block_count(size_t values)
{
    return (values + BLOCK_VALUES - 1) / BLOCK_VALUES;
}

/* Room for the encoded blocks of len bytes of 8-byte values. */
static size_t
narrowed_bound(size_t len)
{
    return block_count(len / 8) * mt_transform_bound(0) + len;
}

/* A thread costs its start and its join: it is worth it from this many
 * blocks on. */
#define BLOCKS_PER_THREAD 4
/* Blocks per chunk at most. */
#define CHUNK_BLOCKS (CHUNK_BYTES / 8 / BLOCK_VALUES)

/* What the threads working on one chunk share.  Each thread takes the next
 * block not yet taken (next), so a thread the machine does not run for a
 * while leaves its blocks to the others instead of holding them all up. */
typedef struct {
    const mt_transform_plan *plan;
    const char *values; /* narrow: the chunk's */
    size_t count;       /* the chunk's values */
    size_t blocks;
    size_t next;           /* the next block to take; atomic */
    char *encoded;         /* narrow: block b goes at narrowed_bound(b's first byte); widen: the
                              chunk's blocks */
    const size_t *offsets; /* widen: each block's offset in encoded */
    size_t *written;       /* narrow: each block's bytes */
    char *out;             /* widen: the chunk's values */
    int failed;            /* widen: a block did not decode; atomic */
} chunk_work;

/* One thread's part: its scratch for the transform. */
typedef struct {
    chunk_work *work;
    void *digits;
} share;

static size_t
block_length(const chunk_work *w, size_t b)
{
    size_t first = b * BLOCK_VALUES;
    return w->count - first < BLOCK_VALUES ? w->count - first : BLOCK_VALUES;
}

static size_t
take_block(chunk_work *w)
{
    return __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED);
}

static void *
narrow_share(void *arg)
{
    share *s = arg;
    chunk_work *w = s->work;
    for (size_t b = take_block(w); b < w->blocks; b = take_block(w)) {
        size_t first = b * BLOCK_VALUES * 8;
        w->written[b] =
            mt_transform_encode(w->plan, w->values + first, block_length(w, b), b * BLOCK_VALUES,
                                s->digits, w->encoded + narrowed_bound(first));
    }
    return NULL;
}

static void *
widen_share(void *arg)
{
    share *s = arg;
    chunk_work *w = s->work;
    for (size_t b = take_block(w); b < w->blocks; b = take_block(w)) {
        if (mt_transform_decode(w->plan, w->encoded + w->offsets[b],
                                w->offsets[b + 1] - w->offsets[b], block_length(w, b),
                                b * BLOCK_VALUES, w->out + b * BLOCK_VALUES * 8) == 0) {
            __atomic_store_n(&w->failed, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

/* Runs work over w's blocks on at most nthreads threads (one for every
 * BLOCKS_PER_THREAD blocks), each with its own scratch from digits (or
 * none). */
static void
run_blocks(void *(*work)(void *), chunk_work *w, int nthreads, char *digits)
{
    share shares[MAX_THREADS];
    size_t enough = (w->blocks + BLOCKS_PER_THREAD - 1) / BLOCKS_PER_THREAD;
    int n = enough < (size_t)nthreads ? (int)enough : nthreads;
    n = n < 1 ? 1 : n;
    for (int k = 0; k < n; k++) {
        shares[k].work = w;
        shares[k].digits =
            digits ? digits + (size_t)k * mt_transform_scratch_size(BLOCK_VALUES) : NULL;
    }
    mt_worker_run_shares(work, (char *)shares, sizeof shares[0], n);
}

/* Encodes len bytes of values into out; returns the bytes.  Each block is
 * written where it could at most begin, then moved up behind the one
 * before.  digits: nthreads scratch areas. */
static size_t
narrow_blocks(const mt_transform_plan *plan, const char *values, size_t len, char *digits,
              int nthreads, char *out)
{
    size_t written[CHUNK_BLOCKS], at = 0;
    chunk_work w = {.plan = plan,
                    .values = values,
                    .count = len / 8,
                    .blocks = block_count(len / 8),
                    .encoded = out,
                    .written = written};
    run_blocks(narrow_share, &w, nthreads, digits);
    for (size_t b = 0; b < w.blocks; b++) {
        memmove(out + at, out + narrowed_bound(b * BLOCK_VALUES * 8), written[b]);
        at += written[b];
    }
    return at;
}

/* Decodes tbytes of blocks into len bytes of values; 0 when they are corrupt. */
static int
widen_blocks(const mt_transform_plan *plan, const char *in, size_t tbytes, char *values, size_t len,
             int nthreads)
{
    size_t count = len / 8, blocks = block_count(count);
    size_t offsets[CHUNK_BLOCKS + 1];
    offsets[0] = 0;
    for (size_t b = 0; b < blocks; b++) {
        size_t n =
            count - b * BLOCK_VALUES < BLOCK_VALUES ? count - b * BLOCK_VALUES : BLOCK_VALUES;
        size_t size = mt_transform_block_size(in + offsets[b], tbytes - offsets[b], n);
        if (size == 0) {
            return 0;
        }
        offsets[b + 1] = offsets[b] + size;
    }
    if (offsets[blocks] != tbytes) {
        return 0;
    }
    chunk_work w = {.plan = plan,
                    .count = count,
                    .blocks = blocks,
                    .encoded = (char *)in,
                    .offsets = offsets,
                    .out = values};
    /* With a lag, each block is measured from the ones before it: in order. */
    run_blocks(widen_share, &w, plan->lag ? 1 : nthreads, NULL);
    return !w.failed;
}

static int
entropy_stage(const char *codec)
{
    return strcmp(codec, ENTROPY_CODEC) == 0;
}

/* The entropy stage codes a chunk in segments of this many bytes (whole
 * items), each with its own tables, so that threads share the work; the
 * same segments whatever the threads.  The chunk's bytes: the number of
 * segments (uint32), each one's coded length (uint32), then the codes. */
#define SEGMENT_BYTES ((size_t)1 << 20)
/* A chunk's segments at most: a narrowed chunk is a little longer than
 * CHUNK_BYTES (its blocks' headers), segments of 3-byte items a little
 * shorter than SEGMENT_BYTES. */
#define MAX_SEGMENTS (CHUNK_BYTES / SEGMENT_BYTES + 2)

static size_t
segment_bytes(int width)
{
    return SEGMENT_BYTES - SEGMENT_BYTES % (size_t)width;
}

static size_t
segment_count(size_t len, int width)
{
    return (len + segment_bytes(width) - 1) / segment_bytes(width);
}

/* Room for the entropy stage's code of len bytes. */
static size_t
segments_bound(size_t len)
{
    size_t n = segment_count(len, 1);
    return sizeof(uint32_t) * (1 + n) + n * mt_entropy_bound(SEGMENT_BYTES);
}

/* What the threads coding one chunk's segments share; each takes the next
 * segment not yet taken. */
typedef struct {
    const char *plain; /* the chunk's bytes */
    size_t len;
    int width;
    size_t segments;
    size_t next;         /* atomic */
    char *coded;         /* encode: segment k goes at segments_bound(k * segment)'s offset;
                            decode: the codes, one after the other */
    uint32_t *lengths;   /* each segment's coded bytes */
    const size_t *start; /* decode: each code's offset in coded */
    char *out;           /* decode: the chunk's bytes */
    int failed;          /* atomic */
} segment_work;

static size_t
segment_length(const segment_work *w, size_t k)
{
    size_t first = k * segment_bytes(w->width);
    return w->len - first < segment_bytes(w->width) ? w->len - first : segment_bytes(w->width);
}

static void *
encode_segments(void *arg)
{
    segment_work *w = arg;
    for (size_t k = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED); k < w->segments;
         k = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED)) {
        size_t size =
            mt_entropy_encode(w->plain + k * segment_bytes(w->width), segment_length(w, k),
                              w->width, w->coded + k * mt_entropy_bound(SEGMENT_BYTES));
        w->lengths[k] = (uint32_t)size;
        if (size == 0) {
            __atomic_store_n(&w->failed, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

static void *
decode_segments(void *arg)
{
    segment_work *w = arg;
    for (size_t k = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED); k < w->segments;
         k = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED)) {
        if (!mt_entropy_decode(w->coded + w->start[k], w->lengths[k],
                               w->out + k * segment_bytes(w->width), segment_length(w, k))) {
            __atomic_store_n(&w->failed, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

static int
segment_threads(size_t segments, int nthreads)
{
    return segments < (size_t)nthreads ? (int)(segments ? segments : 1) : nthreads;
}

/* Codes len bytes of items width bytes wide into out (room:
 * segments_bound(len)); returns the bytes, 0 when out of memory. */
static size_t
entropy_pack(const char *plain, size_t len, int width, int nthreads, char *out)
{
    size_t segments = segment_count(len, width);
    uint32_t lengths[MAX_SEGMENTS];
    /* Coded where each segment could at most begin, behind the header,
     * then moved up behind the one before. */
    size_t header = sizeof(uint32_t) * (1 + segments), at = header;
    segment_work w = {.plain = plain,
                      .len = len,
                      .width = width,
                      .segments = segments,
                      .coded = out + header,
                      .lengths = lengths};
    mt_worker_run_shares(encode_segments, (char *)&w, 0, segment_threads(segments, nthreads));
    uint32_t count = (uint32_t)segments;
    memcpy(out, &count, sizeof count);
    for (size_t k = 0; !w.failed && k < segments; k++) {
        memcpy(out + sizeof count * (1 + k), &lengths[k], sizeof lengths[k]);
        memmove(out + at, w.coded + k * mt_entropy_bound(SEGMENT_BYTES), lengths[k]);
        at += lengths[k];
    }
    return w.failed ? 0 : at;
}

/* Decodes size coded bytes into len bytes at out; 1, or 0 when they are
 * corrupt. */
static int
entropy_unpack(const char *coded, size_t size, char *out, size_t len, int nthreads)
{
    uint32_t count;
    if (size < sizeof count) {
        return 0;
    }
    memcpy(&count, coded, sizeof count);
    size_t header = sizeof count * (1 + (size_t)count);
    if (count > MAX_SEGMENTS || size < header) {
        return 0;
    }
    /* The items' width sets the segments' length: the first one's code
     * says it (none: no segments). */
    int width = count ? mt_entropy_width(coded + header, size - header) : 1;
    if (width == 0 || count != segment_count(len, width)) {
        return 0;
    }
    uint32_t lengths[MAX_SEGMENTS];
    size_t start[MAX_SEGMENTS];
    int intact = 1;
    size_t at = header;
    for (uint32_t k = 0; intact && k < count; k++) {
        memcpy(&lengths[k], coded + sizeof count * (1 + k), sizeof lengths[k]);
        start[k] = at;
        intact = lengths[k] <= size - at;
        at += intact ? lengths[k] : 0;
    }
    if (intact && at == size) {
        segment_work w = {.len = len,
                          .width = width,
                          .segments = count,
                          .coded = (char *)coded,
                          .lengths = lengths,
                          .start = start,
                          .out = out};
        mt_worker_run_shares(decode_segments, (char *)&w, 0, segment_threads(count, nthreads));
        intact = !w.failed;
    }
    return intact && at == size;
}

/* Buffers for compressing one chunk (or sample piece) of up to `largest`
 * bytes.  PyMem_RawMalloc'd: used without the GIL. */
typedef struct {
    char *narrowed; /* encoded blocks */
    char *packed;   /* blosc's output */
    char *digits;   /* the transform's scratch, one per thread */
} buffers;

static void
buffers_free(buffers *b)
{
    PyMem_RawFree(b->narrowed);
    PyMem_RawFree(b->packed);
    PyMem_RawFree(b->digits);
    memset(b, 0, sizeof *b);
}

static int
buffers_make(buffers *b, size_t largest, int narrowing, int nthreads)
{
    memset(b, 0, sizeof *b);
    size_t packed =
        segments_bound(narrowing ? narrowed_bound(largest) : largest) + BLOSC_MAX_OVERHEAD;
    b->packed = PyMem_RawMalloc(packed);
    if (narrowing) {
        b->narrowed = PyMem_RawMalloc(narrowed_bound(largest) + 1);
        b->digits = PyMem_RawMalloc((size_t)nthreads * mt_transform_scratch_size(BLOCK_VALUES));
    }
    if (b->packed == NULL || (narrowing && (b->narrowed == NULL || b->digits == NULL))) {
        buffers_free(b);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

typedef struct {
    const char *codec;
    int level;
    int unshuffled; /* blosc takes the bytes as they are */
} candidate;

/* blosc starts its threads afresh on every call: a thread is worth its
 * start and join from this many bytes on. */
#define BLOSC_BYTES_PER_THREAD ((size_t)256 << 10)

static int
blosc_threads(size_t len, int nthreads)
{
    size_t enough = len / BLOSC_BYTES_PER_THREAD;
    return enough < 1 ? 1 : enough < (size_t)nthreads ? (int)enough : nthreads;
}

/* Compresses len bytes at ptr (narrowed first when plan is given) into
 * b->packed, by blosc or the entropy stage; returns the compressed length
 * (<= 0 on failure: blosc's code, or -1 out of memory) and the narrowed
 * length in *tbytes.  No GIL needed. */
static int
pack(const char *ptr, size_t len, int typesize, const mt_transform_plan *plan, const candidate *c,
     int nthreads, buffers *b, size_t *tbytes)
{
    const char *from = ptr;
    *tbytes = len;
    if (plan != NULL) {
        *tbytes = narrow_blocks(plan, ptr, len, b->digits, nthreads, b->narrowed);
        from = b->narrowed;
        typesize = *tbytes ? mt_transform_block_width(b->narrowed) : 1;
    }
    if (entropy_stage(c->codec)) {
        size_t packed =
            entropy_pack(from, *tbytes, typesize <= 8 ? typesize : 1, nthreads, b->packed);
        return packed ? (int)packed : -1;
    }
    return blosc_compress_ctx(
        c->level, c->unshuffled ? BLOSC_NOSHUFFLE : BLOSC_SHUFFLE, (size_t)typesize, *tbytes, from,
        b->packed, *tbytes + BLOSC_MAX_OVERHEAD, c->codec, 0, blosc_threads(*tbytes, nthreads));
}

/* Decompresses a chunk's data into want bytes at out; 1, or 0 when they are
 * corrupt or not want bytes.  No GIL needed. */
static int
unpack(const mt_chunk *c, const mt_settings *how, char *out, size_t want)
{
    if (entropy_stage(how->codec)) {
        return entropy_unpack(c->data, c->csize, out, want, how->nthreads);
    }
    int rc = blosc_decompress_ctx(c->data, out, want, blosc_threads(want, how->nthreads));
    return rc > 0 && (size_t)rc == want;
}

/* ---- choosing the codec and whether to narrow ---- */

/* Compressed bytes of a sample of s: pieces spread over it. */
static long long
sample_size(const mt_source *s, const mt_transform_plan *plan, const candidate *c, int nthreads,
            buffers *b)
{
    size_t pieces =
        s->nbytes / SAMPLE_PIECE < SAMPLE_PIECES ? s->nbytes / SAMPLE_PIECE : SAMPLE_PIECES;
    size_t piece = pieces ? SAMPLE_PIECE : s->nbytes;
    pieces = pieces ? pieces : 1;
    long long total = 0;
    for (size_t k = 0; k < pieces; k++) {
        size_t first = pieces == 1 ? 0 : k * ((s->nbytes - piece) / (pieces - 1));
        first -= first % 8; /* whole values, whatever the type */
        size_t tbytes;
        int rc = pack(s->ptr + first, piece, s->typesize, plan, c, nthreads, b, &tbytes);
        if (rc <= 0) {
            return -1;
        }
        total += rc;
    }
    return total;
}

/* Decides, from samples, how->codec (with 'auto') and which frames are
 * narrowed: those whose plan pays, and for the largest source, which
 * decides the codec for all, only when its sample says so.  -1 with an
 * exception on failure. */
static int
choose(const mt_source *src, Py_ssize_t n, mt_settings *how, int keep_gil, mt_frame *frames)
{
    Py_ssize_t largest = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        mt_frame *f = &frames[i];
        if (how->narrow && src[i].values >= 0 && src[i].nbytes >= 8) {
            mt_transform_plan_for(src[i].ptr, src[i].nbytes / 8, (mt_values_type)src[i].values,
                                  &f->plan);
            /* A single block has no other to agree with. */
            f->plan.aligned = src[i].nbytes / 8 > BLOCK_VALUES;
            f->narrowed = f->plan.narrowed_size <= NARROW_AT_MOST;
        }
        if (largest < 0 || src[i].nbytes > src[largest].nbytes) {
            largest = i;
        }
    }
    if (largest < 0 || (!how->automatic && !frames[largest].narrowed)) {
        return 0; /* nothing to choose */
    }
    /* Fastest first: each slower one must earn its time (ZSTD_MUST_SAVE). */
    candidate candidates[AUTO_CANDIDATES] = {{how->codec, how->level, how->unshuffled},
                                             {"zstd", AUTO_ZSTD_LEVEL, 0},
                                             {"zstd", AUTO_ZSTD_DEEP_LEVEL, 0},
                                             {"zstd", AUTO_ZSTD_DEEP_LEVEL, 1},
                                             {ENTROPY_CODEC, how->level, 0}};
    long long best[AUTO_CANDIDATES] = {-1, -1, -1, -1, -1};
    int narrow[AUTO_CANDIDATES] = {0}, ncandidates = how->automatic ? AUTO_CANDIDATES : 1;
    int failed = 0;
    const mt_source *s = &src[largest];
    mt_frame *f = &frames[largest];
    buffers b;
    if (buffers_make(&b, s->nbytes < SAMPLE_PIECE ? s->nbytes : SAMPLE_PIECE, f->narrowed,
                     how->nthreads) < 0) {
        return -1;
    }
    PyThreadState *released = release_gil(keep_gil);
    for (int c = 0; c < ncandidates && !failed; c++) {
        for (int narrowed = 0; narrowed <= f->narrowed && !failed; narrowed++) {
            if (c == AUTO_UNSHUFFLED && (narrowed || s->typesize == 1)) {
                continue; /* narrowed digits, single bytes: shuffled or not, the same */
            }
            long long size =
                sample_size(s, narrowed ? &f->plan : NULL, &candidates[c], how->nthreads, &b);
            failed = size < 0;
            if (!failed && (best[c] < 0 || size < best[c])) {
                best[c] = size;
                narrow[c] = narrowed;
            }
        }
    }
    take_gil(released);
    buffers_free(&b);
    if (failed) {
        blosc_error(-1, "trying codecs on a sample");
        return -1;
    }
    int c = 0;
    for (int slower = 1; slower < ncandidates - 1; slower++) {
        int saves = (double)best[slower] <= (1 - ZSTD_MUST_SAVE) * (double)best[c];
        c = best[slower] >= 0 && saves ? slower : c;
    }
    if (ncandidates == AUTO_CANDIDATES && best[AUTO_CANDIDATES - 1] < best[c]) {
        c = AUTO_CANDIDATES - 1;
    }
    strcpy(how->codec, candidates[c].codec);
    how->level = candidates[c].level;
    how->unshuffled = candidates[c].unshuffled;
    f->narrowed = narrow[c];
    return 0;
}

/* ---- compress, decompress ---- */

int
mt_frames_compress(const mt_source *src, Py_ssize_t n, mt_settings *how, size_t limit,
                   PyObject *progress, int keep_gil, mt_frame **out)
{
    size_t total = 0, done = 0, largest = 0;
    int narrowing = 0;
    buffers b = {0};
    mt_frame *frames = PyMem_RawCalloc((size_t)(n ? n : 1), sizeof *frames);
    if (frames == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (choose(src, n, how, keep_gil, frames) < 0) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t len = limit && src[i].nbytes > limit ? limit - limit % 8 : src[i].nbytes;
        frames[i].nbytes = len;
        frames[i].typesize = src[i].typesize;
        total += len;
        largest = len > largest ? len : largest;
        narrowing |= frames[i].narrowed;
    }
    if (buffers_make(&b, largest < CHUNK_BYTES ? largest : CHUNK_BYTES, narrowing, how->nthreads) <
        0) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        mt_frame *f = &frames[i];
        f->nchunks = (Py_ssize_t)((f->nbytes + CHUNK_BYTES - 1) / CHUNK_BYTES);
        if (f->nchunks && !(f->chunks = PyMem_RawCalloc((size_t)f->nchunks, sizeof(mt_chunk)))) {
            f->nchunks = 0;
            PyErr_NoMemory();
            goto error;
        }
        for (Py_ssize_t j = 0; j < f->nchunks; j++) {
            size_t offset = (size_t)j * CHUNK_BYTES;
            size_t len = f->nbytes - offset < CHUNK_BYTES ? f->nbytes - offset : CHUNK_BYTES;
            mt_chunk *c = &f->chunks[j];
            PyThreadState *released = release_gil(keep_gil);
            candidate chosen = {how->codec, how->level, how->unshuffled};
            int rc = pack(src[i].ptr + offset, len, f->typesize, f->narrowed ? &f->plan : NULL,
                          &chosen, how->nthreads, &b, &c->tbytes);
            if (rc > 0 && (c->data = PyMem_RawMalloc((size_t)rc)) != NULL) {
                memcpy(c->data, b.packed, (size_t)rc);
            }
            take_gil(released);
            if (rc <= 0) {
                blosc_error(rc, "compressing");
                goto error;
            }
            if (c->data == NULL) {
                PyErr_NoMemory();
                goto error;
            }
            c->csize = (size_t)rc;
            c->nbytes = len;
            done += len;
            /* Progress and signal handlers may run Python code. */
            if (!keep_gil && report_progress(progress, done, total) < 0) {
                goto error;
            }
        }
    }
    buffers_free(&b);
    *out = frames;
    return 0;
error:
    buffers_free(&b);
    mt_frames_free(frames, n);
    return -1;
}

int
mt_frames_decompress(const mt_frame *f, char *dest, const mt_settings *how, PyObject *progress,
                     size_t *done, size_t total)
{
    size_t offset = 0, largest = 0;
    char *narrowed = NULL;
    for (Py_ssize_t j = 0; f->narrowed && j < f->nchunks; j++) {
        largest = f->chunks[j].tbytes > largest ? f->chunks[j].tbytes : largest;
    }
    if (f->narrowed && (narrowed = PyMem_RawMalloc(largest + 1)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t j = 0; j < f->nchunks; j++) {
        const mt_chunk *c = &f->chunks[j];
        int intact;
        size_t want = f->narrowed ? c->tbytes : c->nbytes;
        Py_BEGIN_ALLOW_THREADS intact =
            unpack(c, how, f->narrowed ? narrowed : dest + offset, want);
        if (f->narrowed && intact) {
            intact =
                widen_blocks(&f->plan, narrowed, want, dest + offset, c->nbytes, how->nthreads);
        }
        Py_END_ALLOW_THREADS if (!intact)
        {
            PyMem_RawFree(narrowed);
            blosc_error(0, "decompressing");
            return -1;
        }
        offset += c->nbytes;
        *done += c->nbytes;
        if (report_progress(progress, *done, total) < 0) {
            PyMem_RawFree(narrowed);
            return -1;
        }
    }
    PyMem_RawFree(narrowed);
    return 0;
}

int
mt_frames_match(const mt_frame *f, const char *src, const mt_settings *how)
{
    size_t offset = 0, largest = 0;
    char *values = NULL, *narrowed = NULL;
    int same = 1;
    MT_ASSERT_GIL();
    for (Py_ssize_t j = 0; j < f->nchunks; j++) {
        const mt_chunk *c = &f->chunks[j];
        largest = c->nbytes > largest ? c->nbytes : largest;
        largest = f->narrowed && c->tbytes > largest ? c->tbytes : largest;
    }
    values = PyMem_RawMalloc(largest + 1);
    narrowed = f->narrowed ? PyMem_RawMalloc(largest + 1) : NULL;
    if (values == NULL || (f->narrowed && narrowed == NULL)) {
        PyMem_RawFree(values);
        PyMem_RawFree(narrowed);
        PyErr_NoMemory();
        return -1;
    }
    /* Chunk by chunk into scratch memory, the GIL held throughout. */
    for (Py_ssize_t j = 0; j < f->nchunks && same; j++) {
        const mt_chunk *c = &f->chunks[j];
        size_t want = f->narrowed ? c->tbytes : c->nbytes;
        int intact = unpack(c, how, f->narrowed ? narrowed : values, want);
        if (intact && f->narrowed) {
            intact = widen_blocks(&f->plan, narrowed, want, values, c->nbytes, how->nthreads);
        }
        same = intact && memcmp(values, src + offset, c->nbytes) == 0;
        offset += c->nbytes;
    }
    PyMem_RawFree(values);
    PyMem_RawFree(narrowed);
    return same;
}

void
mt_frames_coder(const mt_settings *how, char *out, size_t size)
{
    if (entropy_stage(how->codec)) {
        snprintf(out, size, "rANS by byte plane");
    }
    else {
        snprintf(out, size, "%s level %d%s", how->codec, how->level,
                 how->unshuffled ? ", bytes unshuffled" : "");
    }
}

PyObject *
mt_frames_describe(const mt_frame *f, const mt_settings *how)
{
    char coder[48];
    mt_frames_coder(how, coder, sizeof coder);
    if (!f->narrowed) {
        return PyUnicode_FromString(coder);
    }
    if (f->plan.lag) {
        return PyUnicode_FromFormat("%s on differences over a period of %zu values "
                                    "(decimal digits, float32 or bits, each block its own)",
                                    coder, f->plan.lag);
    }
    if (f->plan.type == MT_VALUES_FLOAT64 && f->plan.form == MT_FORM_FLOAT32) {
        return PyUnicode_FromFormat("%s on float32 values held as float64, each "
                                    "block its own form",
                                    coder);
    }
    if (f->plan.type == MT_VALUES_FLOAT64) {
        return PyUnicode_FromFormat("%s on decimal digits (10^-%d), each block its "
                                    "own exponent or float32",
                                    coder, f->plan.exponent);
    }
    return PyUnicode_FromFormat("%s on narrowed integers", coder);
}

PyDoc_STRVAR(
    mt_frames_codecs__doc__,
    "codecs() -> {codecs, blosc, default, chunk, block, level, levels}: 'auto' and what blosc "
    "offers, the default codec, the bytes per chunk and the values per narrowing block.");
PyObject *
mt_frames_codecs(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    return Py_BuildValue("{sNsssssnsnsis(ii)}", "codecs",
                         PyUnicode_FromFormat("auto,%s", blosc_list_compressors()), "blosc",
                         blosc_get_version_string(), "default", MT_DEFAULT_CODEC, "chunk",
                         (Py_ssize_t)CHUNK_BYTES, "block", (Py_ssize_t)BLOCK_VALUES, "level",
                         MT_DEFAULT_LEVEL, "levels", MT_LEVEL_MIN, MT_LEVEL_MAX);
}

/* The _core methods of this file; module.c adds them at init. */
PyMethodDef mt_frames_methods[] = {
    {"codecs", mt_frames_codecs, METH_NOARGS, mt_frames_codecs__doc__},
    {NULL, NULL, 0, NULL},
};
