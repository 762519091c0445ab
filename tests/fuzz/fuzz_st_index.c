/* libFuzzer: a sharded checkpoint. The input is model.safetensors.index.json,
 * a NUL byte, then the bytes of one shard; the driver writes both into a
 * scratch directory (under /dev/shm when it exists) as the index and as the two
 * shard names the seeds use, and opens the directory with llmq_st_open. */
#include "fuzz_common.h"
#include "llmq/safetensors.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static const char *const files[] = {"model.safetensors.index.json", "model-00001-of-00002.safetensors",
                                    "model-00002-of-00002.safetensors"};

static void remove_dir(void)
{
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void write_file(const char *name, const uint8_t *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(p, 1, n, fp) != n) abort();
    fclose(fp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        struct stat st;
        snprintf(dir, sizeof dir, "%s/llmq-fuzz-st-index-%d", stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp",
                 (int)getpid());
        mkdir(dir, 0700);
        atexit(remove_dir);
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t index_len = nul ? (size_t)(nul - data) : size;
    const uint8_t *shard = nul ? nul + 1 : data + size;
    size_t shard_len = nul ? size - index_len - 1 : 0;
    write_file(files[0], data, index_len);
    write_file(files[1], shard, shard_len);
    /* The second shard: the first one's tensors under other offsets would need a
     * second input; a copy makes "a tensor in two shards" reachable. */
    write_file(files[2], shard, shard_len);
    llmq_safetensors *st = llmq_st_open(dir);
    if (!st) {
        fuzz_check_error(dir);
        return 0;
    }
    for (size_t i = 0; i < llmq_st_count(st); i++) {
        const llmq_st_tensor *t = llmq_st_at(st, i);
        fuzz_assert(llmq_st_find(st, t->name) == t, "names are unique across shards");
        fuzz_touch(t->data, t->n_bytes);
    }
    llmq_st_close(st);
    return 0;
}
