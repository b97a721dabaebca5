/* Feature macros, decided here and nowhere else. */
#ifndef MEMTAMER_CONFIG_H
#define MEMTAMER_CONFIG_H

#if defined(__linux__)
#define MT_HAS_PROC 1        /* /proc/self/{status,statm,clear_refs}, cgroups */
#define MT_HAS_STATFS_TYPE 1 /* statfs's f_type names tmpfs and ramfs */
#else
#define MT_HAS_PROC 0
#define MT_HAS_STATFS_TYPE 0
#endif

#if defined(__GLIBC__)
#define MT_HAS_MALLOC_USABLE_SIZE 1 /* sizes of blocks we did not allocate */
#define MT_HAS_MALLOC_TRIM 1        /* give freed heap back to the OS */
#else
#define MT_HAS_MALLOC_USABLE_SIZE 0
#define MT_HAS_MALLOC_TRIM 0
#endif

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#define MT_HAS_MALLINFO2 1 /* the heap's free bytes (what a trim could give back) */
#else
#define MT_HAS_MALLINFO2 0
#endif

/* Vector loops built for several x86-64 levels, the widest the CPU runs
 * chosen at load time (GCC's target_clones, through glibc's ifunc). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define MT_HAS_TARGET_CLONES 1
#else
#define MT_HAS_TARGET_CLONES 0
#endif

/* SSE2 (streaming stores): part of every x86-64 CPU. */
#if defined(__x86_64__)
#define MT_HAS_SSE2 1
#else
#define MT_HAS_SSE2 0
#endif

/* SSE4.2's crc32 instruction (CRC-32C), used when the CPU has it;
 * MT_WITHOUT_CRC32C_INSN builds the table other CPUs use (the tests do). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(MT_WITHOUT_CRC32C_INSN)
#define MT_HAS_CRC32C_INSN 1
#else
#define MT_HAS_CRC32C_INSN 0
#endif

#endif
