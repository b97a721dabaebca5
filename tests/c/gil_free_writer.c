/* A thread that writes into memory without the GIL, as a C extension's
 * thread may: from start_writing until stop_writing it adds 1 to one double
 * at a time; stop_writing returns how many writes it made.  Built by the
 * tests into a shared library loaded with ctypes. */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

static double *values;
static size_t count;
static atomic_int running;
static long long writes;
static pthread_t thread;

static void *
write_loop(void *unused)
{
    (void)unused;
    size_t i = 0;
    while (atomic_load_explicit(&running, memory_order_relaxed)) {
        ((volatile double *)values)[i] += 1;
        writes++;
        i = (i + 7919) % count;
    }
    return NULL;
}

int
start_writing(double *p, size_t n)
{
    values = p;
    count = n;
    writes = 0;
    atomic_store(&running, 1);
    return pthread_create(&thread, NULL, write_loop, NULL);
}

long long
stop_writing(void)
{
    atomic_store(&running, 0);
    pthread_join(thread, NULL);
    return writes;
}
