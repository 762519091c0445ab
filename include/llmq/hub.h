/* Hugging Face hub client: resolves `org/name[@rev]` to a local snapshot
 * directory in the cache shared with huggingface_hub / transformers, downloading
 * what is missing (resumable, sha256-verified, retried, parallel).
 *
 * Environment (same names and defaults as huggingface_hub's constants.py):
 *   HF_ENDPOINT (https://huggingface.co), HF_HOME ($XDG_CACHE_HOME/huggingface or
 *   ~/.cache/huggingface), HF_HUB_CACHE ($HF_HOME/hub), HF_TOKEN,
 *   HUGGING_FACE_HUB_TOKEN, HF_TOKEN_PATH ($HF_HOME/token), HF_HUB_OFFLINE,
 *   HF_HUB_DOWNLOAD_TIMEOUT (seconds, default 10);
 *   and llmq's own LLMQ_HUB_RETRY_BASE_MS (first retry delay, default 1000; each
 *   retry doubles it, up to 8x) and LLMQ_HUB_RETRIES (default 5).
 * The token is sent as `Authorization: Bearer` to the endpoint only and never
 * appears in a message. */
#ifndef LLMQ_HUB_H
#define LLMQ_HUB_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    LLMQ_HUB_FILE_START,  /* a download begins (file_done = bytes already on disk) */
    LLMQ_HUB_FILE_DATA,   /* bytes arrived */
    LLMQ_HUB_FILE_RETRY,  /* an attempt failed and will be retried; reason says why */
    LLMQ_HUB_FILE_DONE,   /* downloaded and verified */
    LLMQ_HUB_FILE_CACHED, /* already in the cache, nothing fetched */
} llmq_hub_event;

typedef struct {
    llmq_hub_event event;
    const char *path;              /* file inside the repo */
    uint64_t file_done, file_size; /* bytes of this file */
    uint64_t total_done, total_size; /* bytes over all selected files */
    int files_done, files_total;
    int attempt;                   /* RETRY: the attempt about to start (2, 3, ...) */
    const char *reason;            /* RETRY: e.g. "HTTP 500", "sha256 mismatch" */
} llmq_hub_progress;

/* Called from download threads, one call at a time (the library serialises them). */
typedef void (*llmq_hub_progress_fn)(const llmq_hub_progress *p, void *user);

typedef struct {
    /* fnmatch patterns (`*` also matches `/`, as in huggingface_hub's
     * allow_patterns); none: config, tokenizer and *.safetensors files */
    const char *const *includes;
    size_t n_includes;
    int jobs;    /* files downloaded in parallel; <= 0: 4 */
    /* 1: ask the hub which commit the revision names now (`llmq pull`);
     * 0: a complete cached snapshot of the revision is used without any request */
    int refresh;
    llmq_hub_progress_fn progress; /* may be NULL */
    void *progress_user;
} llmq_hub_options;

typedef struct {
    char *repo, *revision, *commit;
    char *snapshot_dir;   /* <cache>/models--org--name/snapshots/<commit> */
    char **files;         /* the selected files, relative to snapshot_dir */
    size_t n_files;
    uint64_t bytes;       /* their total size */
    uint64_t bytes_downloaded;
    int from_cache;       /* 1: no request was made */
} llmq_hub_result;

void llmq_hub_options_init(llmq_hub_options *opts);

/* Is `arg` a hub id (org/name[@rev]) rather than a local path? A local path that
 * exists wins. */
int llmq_hub_is_repo_id(const char *arg);

/* Splits and validates org/name[@rev] (rev defaults to "main"). Both outputs are
 * malloc'd. Rejects "..", absolute paths, backslashes and control characters. */
int llmq_hub_parse_repo_id(const char *arg, char **repo, char **revision);

/* Resolves org/name[@rev] to a local snapshot directory, downloading what is
 * missing (or cache-only when HF_HUB_OFFLINE=1). *snapshot_dir is malloc'd.
 * opts may be NULL (defaults, refresh = 0). */
int llmq_hub_resolve(const char *repo_id, char **snapshot_dir, const llmq_hub_options *opts);

/* The same, with everything `llmq pull` reports. Free out with llmq_hub_result_free. */
int llmq_hub_pull(const char *repo_id, const llmq_hub_options *opts, llmq_hub_result *out);
void llmq_hub_result_free(llmq_hub_result *r);

/* The cache root from the environment (malloc'd), NULL with a message when
 * neither HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME nor HOME is set. */
char *llmq_hub_cache_dir(void);

#endif
