/* codec: the compressed proxy type (c-blosc).
 *
 * A Compressed object holds one or more frames of compressed bytes: a numpy
 * array's data (dtype, shape, strides and flags kept beside it), or a pickle
 * protocol 5 stream followed by its out-of-band buffers.  Frames are cut into
 * chunks because blosc takes at most 2 GiB per call, and the chunk boundaries
 * are where progress is reported.  Round trips are bit-exact.
 *
 * Any use of a proxy (attributes, operators, items, iteration, calls, the
 * buffer and array protocols, pickling) restores it, from whichever thread,
 * and rebinds its name in the module it was given; an interrupted or failed
 * restore leaves it compressed.  Only its type and __sizeof__ answer without
 * restoring, and its repr says how to restore. */
#ifndef MEMTAMER_CODEC_H
#define MEMTAMER_CODEC_H

#include <Python.h>

/* Creates the heap type (module exec); NULL with an exception. */
PyObject *mt_codec_make_type(PyObject *module);

/* Methods of _core (module.c lists them).  Need the GIL; the compression
 * itself runs with the GIL released. */
PyObject *mt_codec_compress(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_codec_estimate(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_codec_restore(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_codec_commit(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *mt_codec_info(PyObject *module, PyObject *proxy);
PyObject *mt_codec_set_pickler(PyObject *module, PyObject *choose);

/* The _core methods codec.c defines. */
extern PyMethodDef mt_codec_methods[];

#endif
