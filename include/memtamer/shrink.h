/* shrink: in-place downcast, pack, spill, and the measured window around
 * every %shrink action.  All functions need the GIL. */
#ifndef MEMTAMER_SHRINK_H
#define MEMTAMER_SHRINK_H

#include <Python.h>

/* The window one %shrink action is measured in (module state). */
typedef struct {
    int open;
    int inside_cell; /* a cell's window was open and is resumed at the end */
    long long rss_before;
    double started;
} mt_shrink_window;

/* The _core methods shrink.c defines. */
extern PyMethodDef mt_shrink_methods[];

#endif
