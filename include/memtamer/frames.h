/* frames: the bytes under a compressed proxy, and how they are made.
 *
 * A source (an array's data, a pickle stream, one of its buffers) becomes a
 * frame of chunks compressed by c-blosc; blosc takes at most 2 GiB a call,
 * and chunk boundaries are where progress is reported and Ctrl-C is
 * honoured.  Frames of 8-byte numbers may first be narrowed losslessly
 * (transform.h: decimals in disguise, integers by frame of reference), in
 * blocks that blosc then compresses.  The codec is the user's, or with
 * 'auto' the one that makes a sample of the data smallest, blosc's or the
 * rANS of byte planes (entropy.h); either way a sample decides whether
 * narrowing pays.  Round trips are bit-exact.
 *
 * Every function here needs the GIL; the blosc calls and the transform run
 * with it released (unless the caller asks to keep it), on memory no Python
 * object can free meanwhile. */
#ifndef MEMTAMER_FRAMES_H
#define MEMTAMER_FRAMES_H

#include <Python.h>

#include "memtamer/transform.h"

typedef struct {
    char *data;    /* PyMem_RawMalloc'd compressed bytes */
    size_t csize;  /* their length */
    size_t nbytes; /* the bytes of the source this chunk gives back */
    size_t tbytes; /* narrowed frames: the bytes blosc gives back (the encoded blocks) */
} mt_chunk;

typedef struct {
    size_t nbytes;
    int typesize;
    int narrowed; /* chunks hold transform blocks, planned by plan */
    mt_transform_plan plan;
    Py_ssize_t nchunks;
    mt_chunk *chunks; /* PyMem_RawCalloc'd */
} mt_frame;

/* What to compress: one contiguous run of bytes per frame. */
typedef struct {
    const char *ptr;
    size_t nbytes;
    int typesize;
    int values; /* an mt_values_type when the bytes are native 8-byte numbers, else -1 */
} mt_source;

typedef struct {
    char codec[16]; /* blosc's name for it; after 'auto', the one chosen, which may be "rans":
                       entropy.h's byte planes instead of blosc */
    int level;
    int unshuffled; /* blosc takes the bytes as they are, not shuffled ('auto' only) */
    int automatic;  /* the user asked for 'auto' */
    int narrow;     /* 8-byte numbers may be narrowed first */
    int nthreads;
} mt_settings;

/* Progress is reported between chunks; a narrowed chunk needs a second
 * buffer of its size, so chunks stay small.  Also the bytes per frame an
 * estimate compresses. */
#define MT_FRAMES_CHUNK_BYTES ((size_t)16 << 20)

/* Reads codec ('auto' or one of blosc's; None: the default), level (0-9;
 * None: the default), threads (1 to the cores there are; None: the cores
 * other work leaves idle, mt_worker_idle_cores) and narrow (None: yes) into
 * *how.  -1 with ValueError on bad input. */
int mt_frames_parse_settings(PyObject *codec, PyObject *level, PyObject *threads, PyObject *narrow,
                             mt_settings *how);

/* Compresses the first `limit` bytes of each of the n sources (all of them
 * when limit is 0) into *out, n frames; with 'auto', how->codec and level
 * become the ones chosen.  On failure nothing is left allocated.  -1/0.
 * Other threads run during the work and progress is reported, unless
 * keep_gil: then the GIL is held from start to end and no Python code runs
 * (no progress, no signal handlers), so no Python thread can write into
 * the sources meanwhile. */
int mt_frames_compress(const mt_source *src, Py_ssize_t n, mt_settings *how, size_t limit,
                       PyObject *progress, int keep_gil, mt_frame **out);

/* Whether f gives back exactly the f->nbytes bytes at src: 1 yes, 0 no (or
 * f is corrupt), -1 with MemoryError.  Holds the GIL throughout and runs no
 * Python code, so a caller that goes on holding it knows what a Python
 * thread sees. */
int mt_frames_match(const mt_frame *f, const char *src, const mt_settings *how);

/* Decompresses f into dest (f->nbytes bytes), adding to *done and reporting
 * progress against total.  -1/0. */
int mt_frames_decompress(const mt_frame *f, char *dest, const mt_settings *how, PyObject *progress,
                         size_t *done, size_t total);

void mt_frames_free(mt_frame *frames, Py_ssize_t n);
/* The element size blosc's shuffle uses for items of itemsize bytes. */
int mt_frames_typesize(Py_ssize_t itemsize);
size_t mt_frames_csize(const mt_frame *f);

/* "zstd level 1", "rANS by byte plane": the codec of how, into out. */
void mt_frames_coder(const mt_settings *how, char *out, size_t size);

/* "zstd level 1", "lz4 level 5 on decimal digits (10^-2)": what made f. */
PyObject *mt_frames_describe(const mt_frame *f, const mt_settings *how);

/* codecs() -> {codecs: "auto,blosclz,lz4,...", blosc: version, default: "auto",
 * chunk: MT_FRAMES_CHUNK_BYTES, block: values per narrowing block, level: the default level,
 * levels: (lowest, highest)} */
PyObject *mt_frames_codecs(PyObject *module, PyObject *unused);

/* The _core methods frames.c defines. */
extern PyMethodDef mt_frames_methods[];

#endif
