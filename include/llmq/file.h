/* Files: read-only memory maps, whole-file reads, and atomic writes
 * (temp file + rename, so an interrupted write never leaves a partial file). */
#ifndef LLMQ_FILE_H
#define LLMQ_FILE_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    const unsigned char *data; /* NULL for an empty file */
    size_t size;
    char *path;
} llmq_mapped_file;

/* Maps path read-only. Returns LLMQ_OK, or LLMQ_ERR with a message naming path. */
int llmq_map_file(const char *path, llmq_mapped_file *out);
void llmq_unmap_file(llmq_mapped_file *f);

/* Bytes [p, p+n) of a file mapped by llmq_map_file will not be read again
 * soon: their pages leave this process's resident set (MADV_DONTNEED on the
 * read-only map; the page cache keeps them, and a later read maps them again
 * without touching the disk while it does). Streaming a checkpoint layer by
 * layer then keeps RSS at one layer, not the whole file. Memory that is not
 * such a map (a malloc'd copy) is left alone. */
void llmq_release_pages(const void *p, size_t n);

/* Reads a whole file into a NUL-terminated malloc'd buffer (size excludes the NUL).
 * max_size guards against absurd inputs (0: no limit). NULL on error. */
char *llmq_read_file(const char *path, size_t max_size, size_t *size);

/* Atomic output: open writes <path>.tmp.<pid>; commit fsyncs, closes and
 * renames it over path; abort closes and removes it. */
typedef struct {
    FILE *fp;
    char *path;
    char *tmp_path;
} llmq_atomic_file;

int llmq_atomic_open(llmq_atomic_file *af, const char *path);
/* Same, with the temp file at tmp_path (on path's file system, so the rename
 * stays atomic); NULL = <path>.tmp.<pid>. */
int llmq_atomic_open_at(llmq_atomic_file *af, const char *path, const char *tmp_path);
int llmq_atomic_commit(llmq_atomic_file *af);
void llmq_atomic_abort(llmq_atomic_file *af);
/* Removes every temp file an atomic output has open: async-signal-safe, for
 * a handler of SIGTERM/SIGINT (mpirun ending a run, ^C), so that a killed
 * run leaves no partial output behind. */
void llmq_atomic_remove_temps(void);

/* Joins dir and name into a malloc'd path. */
char *llmq_path_join(const char *dir, const char *name);
int llmq_is_dir(const char *path);
int llmq_file_exists(const char *path);

#endif
