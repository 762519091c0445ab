#include "llmq/file.h"
#include "llmq/error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The read-only file maps llmq_map_file made, so that llmq_release_pages
 * touches nothing else (MADV_DONTNEED would zero anonymous memory). */
enum { MAX_MAPS = 256 };
typedef struct {
    uintptr_t start, end;
} file_map;
static file_map maps[MAX_MAPS];
static int n_maps;
static pthread_mutex_t maps_mu = PTHREAD_MUTEX_INITIALIZER;

static void register_map(const void *p, size_t n)
{
    pthread_mutex_lock(&maps_mu);
    if (n_maps < MAX_MAPS) maps[n_maps++] = (file_map){(uintptr_t)p, (uintptr_t)p + n};
    pthread_mutex_unlock(&maps_mu);
}

static void unregister_map(const void *p)
{
    pthread_mutex_lock(&maps_mu);
    for (int i = 0; i < n_maps; i++)
        if (maps[i].start == (uintptr_t)p) {
            maps[i] = maps[--n_maps];
            break;
        }
    pthread_mutex_unlock(&maps_mu);
}

int llmq_map_file(const char *path, llmq_mapped_file *out)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return llmq_error("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return llmq_error("%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return llmq_error("%s: not a regular file", path);
    }
    out->size = (size_t)st.st_size;
    if (out->size > 0) {
        void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return llmq_error("%s: cannot mmap: %s", path, strerror(e));
        }
        out->data = p;
        register_map(p, out->size);
    }
    close(fd);
    out->path = strdup(path);
    return LLMQ_OK;
}

void llmq_unmap_file(llmq_mapped_file *f)
{
    if (f->data) {
        unregister_map(f->data);
        munmap((void *)f->data, f->size);
    }
    free(f->path);
    memset(f, 0, sizeof *f);
}

char *llmq_read_file(const char *path, size_t max_size, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        llmq_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        llmq_error("%s: not a regular file", path);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    if (max_size && n > max_size) {
        fclose(fp);
        llmq_error("%s: file is %zu bytes, more than the %zu allowed", path, n, max_size);
        return NULL;
    }
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(fp);
        llmq_error("%s: out of memory reading %zu bytes", path, n);
        return NULL;
    }
    size_t got = fread(buf, 1, n, fp);
    fclose(fp);
    if (got != n) {
        free(buf);
        llmq_error("%s: short read (%zu of %zu bytes)", path, got, n);
        return NULL;
    }
    buf[n] = '\0';
    if (size) *size = n;
    return buf;
}

int llmq_atomic_open(llmq_atomic_file *af, const char *path) { return llmq_atomic_open_at(af, path, NULL); }

/* The temp paths of the open atomic outputs, for llmq_atomic_remove_temps. */
enum { MAX_TEMPS = 16 };
static char *volatile open_temps[MAX_TEMPS];
static pthread_mutex_t temps_lock = PTHREAD_MUTEX_INITIALIZER;

static void temps_set(char *old, char *new)
{
    pthread_mutex_lock(&temps_lock);
    for (int i = 0; i < MAX_TEMPS; i++)
        if (open_temps[i] == old) {
            open_temps[i] = new;
            break;
        }
    pthread_mutex_unlock(&temps_lock);
}

void llmq_atomic_remove_temps(void)
{
    for (int i = 0; i < MAX_TEMPS; i++) {
        const char *p = open_temps[i];
        if (p) unlink(p);
    }
}

int llmq_atomic_open_at(llmq_atomic_file *af, const char *path, const char *tmp_path)
{
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 32;
    af->path = strdup(path);
    af->tmp_path = tmp_path ? strdup(tmp_path) : malloc(n);
    if (!af->path || !af->tmp_path) {
        llmq_atomic_abort(af);
        return llmq_error("%s: out of memory", path);
    }
    if (!tmp_path) snprintf(af->tmp_path, n, "%s.tmp.%d", path, (int)getpid());
    af->fp = fopen(af->tmp_path, "wb");
    if (!af->fp) {
        int e = errno;
        free(af->path);
        free(af->tmp_path);
        memset(af, 0, sizeof *af);
        return llmq_error("%s: cannot create: %s", path, strerror(e));
    }
    temps_set(NULL, af->tmp_path);
    return LLMQ_OK;
}

int llmq_atomic_commit(llmq_atomic_file *af)
{
    int rc = LLMQ_OK;
    if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0)
        rc = llmq_error("%s: write failed: %s", af->path, strerror(errno));
    if (fclose(af->fp) != 0 && rc == LLMQ_OK)
        rc = llmq_error("%s: write failed: %s", af->path, strerror(errno));
    af->fp = NULL;
    if (rc == LLMQ_OK && rename(af->tmp_path, af->path) != 0)
        rc = llmq_error("%s: cannot rename temp file into place: %s", af->path, strerror(errno));
    if (rc != LLMQ_OK) unlink(af->tmp_path);
    temps_set(af->tmp_path, NULL);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
    return rc;
}

void llmq_atomic_abort(llmq_atomic_file *af)
{
    if (af->fp) fclose(af->fp);
    if (af->tmp_path) {
        unlink(af->tmp_path);
        temps_set(af->tmp_path, NULL);
    }
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

char *llmq_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int llmq_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int llmq_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

void llmq_release_pages(const void *p, size_t n)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = (uintptr_t)p, hi = lo + n;
    const uintptr_t a = (lo + page - 1) & ~(page - 1), b = hi & ~(page - 1); /* whole pages inside the range only */
    if (b <= a) return;
    bool mapped = false;
    pthread_mutex_lock(&maps_mu);
    for (int i = 0; i < n_maps && !mapped; i++) mapped = lo >= maps[i].start && hi <= maps[i].end;
    pthread_mutex_unlock(&maps_mu);
    /* A never-written page of a read-only private file map is the page cache's:
     * DONTNEED unmaps it (RSS drops) and a later read maps the cached page again,
     * with no disk read while the cache holds it. */
    if (mapped) (void)madvise((void *)a, b - a, MADV_DONTNEED);
}
