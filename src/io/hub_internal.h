/* Private to src/io/hub*.c: the HTTP side of the hub client. */
#ifndef LLMQ_HUB_INTERNAL_H
#define LLMQ_HUB_INTERNAL_H

#include "llmq/hub.h"

#include <stddef.h>
#include <stdint.h>

/* Connection settings read once from the environment. */
typedef struct {
    char *endpoint;    /* without a trailing '/' */
    char *auth_header; /* "Authorization: Bearer <token>", or NULL; never printed */
    long timeout_s;    /* connect timeout, and the stall limit of a transfer */
    long retry_base_ms;
    int retries;       /* retries after the first attempt */
} hub_net;

int hub_net_init(hub_net *net);
void hub_net_free(hub_net *net);

/* Process-wide curl_global_init, once. */
int hub_curl_init(void);

/* GET url into a NUL-terminated malloc'd buffer of at most max bytes, retrying
 * transport errors, 408, 429 and 5xx. Any other answer is returned with its
 * status for the caller to explain (*body is NULL unless status is 2xx). */
int hub_http_get(const hub_net *net, const char *url, size_t max, char **body, size_t *len, long *status);

/* Per-file callbacks of hub_fetch_file. */
typedef void (*hub_fetch_event_fn)(void *ctx, llmq_hub_event ev, uint64_t file_done, int attempt,
                                   const char *reason);

typedef struct {
    const hub_net *net;
    const char *url;             /* {endpoint}/{repo}/resolve/{commit}/{path} */
    const char *name;            /* the file's repo path, for messages */
    const char *incomplete_path; /* blobs/<etag>.incomplete: resumed when present */
    const char *etag;            /* sha256 (LFS) or git blob sha1, lowercase hex */
    int is_lfs;
    uint64_t size;
    hub_fetch_event_fn on_event; /* may be NULL */
    void *ctx;
} hub_fetch;

/* Downloads into f->incomplete_path, resuming what is there, and verifies size and
 * checksum; on LLMQ_OK the file there is complete and correct (the caller renames
 * it into blobs/). A file that fails verification is deleted, never kept.
 * *fetched counts the bytes received over the network. */
int hub_fetch_file(const hub_fetch *f, uint64_t *fetched);

/* Metadata of one file from a HEAD on its resolve URL (huggingface_hub
 * get_hf_file_metadata): only relative redirects are followed (renamed repos),
 * not the one to the CDN. etag = X-Linked-Etag or ETag (W/ and quotes stripped),
 * size = X-Linked-Size or, when not redirected, Content-Length; *commit (may be
 * NULL) = X-Repo-Commit. 401/403/404 give the usual messages. */
int hub_head_metadata(const hub_net *net, const char *url, const char *name, char **etag, uint64_t *size,
                      char **commit);

/* Percent-encodes s; characters in `safe` (besides RFC 3986 unreserved) are kept. */
char *hub_url_quote(const char *s, const char *safe);

/* Milliseconds to wait before retry number `attempt` (1-based). */
long hub_backoff_ms(const hub_net *net, int attempt);

/* The parsers of the hub's JSON answers, for tests/fuzz/fuzz_hub.c: an
 * /api/models/{repo}/revision/{rev}?blobs=true answer (is_index = 0) or a
 * model.safetensors.index.json (is_index = 1), checked as llmq_hub_pull checks
 * them. Returns the number of files (shards) named, or LLMQ_ERR with a message
 * naming repo. */
long hub_parse_answer(const char *repo, const char *body, size_t len, int is_index);

#endif
