/* writeback: a thread that asks the kernel to start writing spill files to
 * the disk as soon as they are written to the page cache, so that the disk
 * writes while the spill compares and checksums its file (and after it
 * returns); an fsync later waits only for what is left.  Asking
 * (sync_file_range with SYNC_FILE_RANGE_WRITE) does not wait for the disk,
 * but it does wait while the disk's queue is full: on the writing thread it
 * would slow the write to the disk's speed.  Only a hint: a range it never
 * gets to is written by the kernel's own flusher, as any file's is.
 *
 * No Python API: the thread never touches Python objects.  Its owner
 * (module.c) registers its pause and resume around os.fork(). */
#ifndef MEMTAMER_WRITEBACK_H
#define MEMTAMER_WRITEBACK_H

#include <sys/types.h>

#include "memtamer/worker.h"

typedef struct mt_writeback mt_writeback;

/* A new writeback owner, no thread yet, its fork hooks added to hooks;
 * NULL when out of memory. */
mt_writeback *mt_writeback_new(mt_worker_fork_hooks *hooks);
/* Stops its thread and forgets what it had not started (NULL: a no-op). */
void mt_writeback_free(mt_writeback *wb);
/* Asks for len bytes of the file open as fd, from offset, to be written to
 * the disk, on the thread (started when none runs: it ends once it has
 * asked for every range).  fd stays the caller's: the thread keeps a
 * duplicate until it is done with it. */
void mt_writeback_start(mt_writeback *wb, int fd, off_t offset, off_t len);

#endif
