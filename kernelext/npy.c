/* npy: lazy import of numpy's C API (see npy.h). */
#define MT_NPY_DEFINE_API
#include "memtamer/npy.h"

/* Only touched with the GIL held; numpy's API table, once imported, stays
 * valid for the life of the process (numpy is never unloaded). */
static int api_imported = 0;

int
mt_npy_ready(void)
{
    if (api_imported) {
        return 1;
    }
    PyObject *name = PyUnicode_FromString("numpy");
    if (name == NULL) {
        return -1;
    }
    PyObject *numpy = PyImport_GetModule(name);
    Py_DECREF(name);
    if (numpy == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    /* sys.modules["numpy"] = None is how one blocks an import. */
    int blocked = numpy == Py_None;
    Py_DECREF(numpy);
    if (blocked) {
        return 0;
    }
    if (_import_array() < 0) {
        return -1;
    }
    api_imported = 1;
    return 1;
}
