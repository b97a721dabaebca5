/* children: the kernel's descendants as the children report shows them
 * (pid, parent, command, private and shared memory, listening ports, the
 * cell that started each).  Above cell.c: it reads the cell history. */
#ifndef MEMTAMER_CHILDREN_H
#define MEMTAMER_CHILDREN_H

#include <Python.h>

/* The _core methods children.c defines. */
extern PyMethodDef mt_children_methods[];

#endif
