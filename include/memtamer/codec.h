/* codec: the compressed proxy type (c-blosc).
 *
 * A Compressed object holds one or more frames of compressed bytes: a numpy
 * array's data (dtype, shape, strides and flags kept beside it), or a pickle
 * protocol 5 stream followed by its out-of-band buffers.  Frames are cut into
 * chunks because blosc takes at most 2 GiB per call, and the chunk boundaries
 * are where progress is reported.  Round trips are bit-exact. */
#ifndef MEMTAMER_CODEC_H
#define MEMTAMER_CODEC_H

#include <Python.h>

/* Creates the heap type (module exec); NULL with an exception. */
PyObject *mt_codec_make_type(PyObject *module);

/* Methods of _core (module.c lists them).  Need the GIL; the compression
 * itself runs with the GIL released. */
PyObject *mt_codec_compress(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_codec_estimate(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_codec_codecs(PyObject *module, PyObject *unused);

#endif
