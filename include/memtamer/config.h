/* Feature macros, decided here and nowhere else. */
#ifndef MEMTAMER_CONFIG_H
#define MEMTAMER_CONFIG_H

#if defined(__linux__)
#define MT_HAS_PROC 1 /* /proc/self/{status,statm,clear_refs}, cgroups */
#else
#define MT_HAS_PROC 0
#endif

#if defined(__GLIBC__)
#define MT_HAS_MALLOC_USABLE_SIZE 1 /* sizes of blocks we did not allocate */
#define MT_HAS_MALLOC_TRIM 1        /* give freed heap back to the OS */
#else
#define MT_HAS_MALLOC_USABLE_SIZE 0
#define MT_HAS_MALLOC_TRIM 0
#endif

#endif
