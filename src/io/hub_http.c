/* HTTP side of the hub client (libcurl + OpenSSL EVP): environment, bounded GETs
 * with retries, and resumable verified file downloads.
 * Protocol: huggingface_hub file_download.py (http_get: Range resume, restart on
 * a 200 answer) and utils/_http.py (http_backoff: retry 408/429/5xx and timeouts). */
#include "hub_internal.h"

#include "llmq/digest.h"
#include "llmq/error.h"
#include "llmq/version.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define USER_AGENT "llmq/" LLMQ_VERSION

/* ---- environment ------------------------------------------------------- */

static char *trimmed_dup(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    char *out = malloc(n + 1);
    if (!out) return NULL;
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Token lookup order of huggingface_hub utils/_auth.py: HF_TOKEN,
 * HUGGING_FACE_HUB_TOKEN, then the token file. *token is NULL when none. */
static int read_token(char **token)
{
    *token = NULL;
    const char *v = env_nonempty("HF_TOKEN");
    if (!v) v = env_nonempty("HUGGING_FACE_HUB_TOKEN");
    char *path = NULL;
    if (!v) {
        const char *tp = env_nonempty("HF_TOKEN_PATH");
        if (tp) {
            path = strdup(tp);
        } else {
            const char *home = env_nonempty("HF_HOME");
            const char *xdg = env_nonempty("XDG_CACHE_HOME");
            const char *h = env_nonempty("HOME");
            size_t n = 64 + (home ? strlen(home) : 0) + (xdg ? strlen(xdg) : 0) + (h ? strlen(h) : 0);
            path = malloc(n);
            if (!path) return llmq_error("hub: out of memory");
            if (home) snprintf(path, n, "%s/token", home);
            else if (xdg) snprintf(path, n, "%s/huggingface/token", xdg);
            else if (h) snprintf(path, n, "%s/.cache/huggingface/token", h);
            else path[0] = '\0';
        }
        if (!path) return llmq_error("hub: out of memory");
        FILE *fp = path[0] ? fopen(path, "r") : NULL;
        if (fp) {
            char buf[1024];
            size_t got = fread(buf, 1, sizeof buf - 1, fp);
            fclose(fp);
            buf[got] = '\0';
            *token = trimmed_dup(buf);
            if (!*token) {
                free(path);
                return llmq_error("hub: out of memory");
            }
        }
    } else {
        *token = trimmed_dup(v);
        if (!*token) return llmq_error("hub: out of memory");
    }
    if (*token && !**token) {
        free(*token);
        *token = NULL;
    }
    if (*token) {
        /* A token goes into a header line: anything but printable ASCII could
         * inject headers. The message names the source, never the value. */
        for (const char *p = *token; *p; p++) {
            if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
                free(*token);
                *token = NULL;
                int rc = llmq_error("hub: the token in %s has characters that cannot go in an HTTP header",
                                    path ? path : "HF_TOKEN");
                free(path);
                return rc;
            }
        }
    }
    free(path);
    return LLMQ_OK;
}

static long env_long(const char *name, long def, long lo, long hi)
{
    const char *v = env_nonempty(name);
    if (!v) return def;
    char *end;
    double d = strtod(v, &end);
    if (end == v || d < (double)lo || d > (double)hi) return def;
    return (long)d;
}

int hub_net_init(hub_net *net)
{
    memset(net, 0, sizeof *net);
    const char *ep = env_nonempty("HF_ENDPOINT");
    net->endpoint = strdup(ep ? ep : "https://huggingface.co");
    if (!net->endpoint) return llmq_error("hub: out of memory");
    size_t n = strlen(net->endpoint);
    while (n && net->endpoint[n - 1] == '/') net->endpoint[--n] = '\0';
    if (strncasecmp(net->endpoint, "https://", 8) != 0 && strncasecmp(net->endpoint, "http://", 7) != 0) {
        int rc = llmq_error("hub: HF_ENDPOINT '%s' is not an http(s) URL", net->endpoint);
        hub_net_free(net);
        return rc;
    }
    char *token = NULL;
    if (read_token(&token) != LLMQ_OK) {
        hub_net_free(net);
        return LLMQ_ERR;
    }
    if (token) {
        size_t len = strlen(token) + 32;
        net->auth_header = malloc(len);
        if (net->auth_header) snprintf(net->auth_header, len, "Authorization: Bearer %s", token);
        memset(token, 0, strlen(token));
        free(token);
        if (!net->auth_header) {
            hub_net_free(net);
            return llmq_error("hub: out of memory");
        }
    }
    net->timeout_s = env_long("HF_HUB_DOWNLOAD_TIMEOUT", 10, 1, 3600);
    net->retry_base_ms = env_long("LLMQ_HUB_RETRY_BASE_MS", 1000, 0, 60000);
    net->retries = (int)env_long("LLMQ_HUB_RETRIES", 5, 0, 20);
    return LLMQ_OK;
}

void hub_net_free(hub_net *net)
{
    free(net->endpoint);
    if (net->auth_header) {
        memset(net->auth_header, 0, strlen(net->auth_header));
        free(net->auth_header);
    }
    memset(net, 0, sizeof *net);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void curl_init_once(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int hub_curl_init(void)
{
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) return llmq_error("hub: libcurl initialisation failed: %s", curl_easy_strerror(curl_init_rc));
    return LLMQ_OK;
}

long hub_backoff_ms(const hub_net *net, int attempt)
{
    long ms = net->retry_base_ms;
    for (int i = 1; i < attempt && ms < net->retry_base_ms * 8; i++) ms *= 2;
    return ms > net->retry_base_ms * 8 ? net->retry_base_ms * 8 : ms;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

char *hub_url_quote(const char *s, const char *safe)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int keep = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                   *p == '-' || *p == '_' || *p == '.' || *p == '~' || (*p && strchr(safe, *p));
        if (keep) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* ---- one configured curl handle ----------------------------------------- */

static CURL *new_handle(const hub_net *net, struct curl_slist **headers, char *errbuf)
{
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    *headers = curl_slist_append(NULL, "Accept-Encoding: identity");
    if (net->auth_header) *headers = curl_slist_append(*headers, net->auth_header);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    /* Redirects: relative ones (renamed repos) and to the CDN. libcurl drops
     * our Authorization header when a redirect changes host, so the token
     * never reaches the CDN (CURLOPT_UNRESTRICTED_AUTH stays off). */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, net->timeout_s);
    /* A transfer slower than 1 byte/s for timeout_s seconds counts as a timeout. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, net->timeout_s);
    return c;
}

static int retriable_status(long code) { return code == 408 || code == 429 || (code >= 500 && code <= 599); }

static int retriable_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    default:
        return 0;
    }
}

/* ---- bounded GET into memory -------------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap, max;
    int too_big;
} membuf;

static size_t membuf_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    membuf *m = user;
    size_t n = size * nmemb;
    if (m->len + n > m->max) {
        m->too_big = 1;
        return 0;
    }
    if (m->len + n + 1 > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->len + n + 1) cap *= 2;
        char *d = realloc(m->data, cap);
        if (!d) return 0;
        m->data = d;
        m->cap = cap;
    }
    memcpy(m->data + m->len, ptr, n);
    m->len += n;
    m->data[m->len] = '\0';
    return n;
}

int hub_http_get(const hub_net *net, const char *url, size_t max, char **body, size_t *len, long *status)
{
    *body = NULL;
    *len = 0;
    *status = 0;
    if (hub_curl_init() != LLMQ_OK) return LLMQ_ERR;
    char reason[CURL_ERROR_SIZE + 64] = "";
    for (int attempt = 1;; attempt++) {
        char errbuf[CURL_ERROR_SIZE] = "";
        struct curl_slist *headers = NULL;
        CURL *c = new_handle(net, &headers, errbuf);
        if (!c) {
            curl_slist_free_all(headers);
            return llmq_error("hub: cannot create a curl handle");
        }
        membuf m = {.max = max};
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, membuf_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &m);
        CURLcode rc = curl_easy_perform(c);
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(c);
        curl_slist_free_all(headers);
        int retry = 0;
        if (m.too_big) {
            free(m.data);
            return llmq_error("%s: answer larger than %zu bytes", url, max);
        }
        if (rc != CURLE_OK) {
            snprintf(reason, sizeof reason, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
            if (!retriable_curl(rc)) {
                free(m.data);
                return llmq_error("%s: %s", url, reason);
            }
            retry = 1;
        } else if (retriable_status(code)) {
            snprintf(reason, sizeof reason, "HTTP %ld", code);
            retry = 1;
        }
        if (!retry) {
            *status = code;
            if (code >= 200 && code < 300) {
                if (!m.data) m.data = calloc(1, 1);
                *body = m.data;
                *len = m.len;
            } else {
                free(m.data);
            }
            return LLMQ_OK;
        }
        free(m.data);
        if (attempt > net->retries)
            return llmq_error("%s: giving up after %d attempts: %s", url, attempt, reason);
        sleep_ms(hub_backoff_ms(net, attempt));
    }
}

/* ---- resumable, verified file download ---------------------------------- */

typedef struct {
    const hub_fetch *f;
    CURL *curl;
    FILE *fp;
    EVP_MD_CTX *md;
    uint64_t on_disk;   /* bytes in the .incomplete file (and hashed) */
    uint64_t fetched;   /* bytes received this call, over all attempts */
    int body_started;
    long code;
    int too_big, bad_range, write_failed;
    char content_range[128];
    char linked_etag[160];
} xfer;

static int md_start(xfer *x)
{
    if (EVP_DigestInit_ex(x->md, x->f->is_lfs ? EVP_sha256() : EVP_sha1(), NULL) != 1) return LLMQ_ERR;
    if (!x->f->is_lfs) {
        /* A git blob id is sha1("blob <size>\0" + content). */
        char prefix[48];
        int n = snprintf(prefix, sizeof prefix, "blob %" PRIu64, x->f->size);
        if (EVP_DigestUpdate(x->md, prefix, (size_t)n + 1) != 1) return LLMQ_ERR;
    }
    return LLMQ_OK;
}

static void emit(const xfer *x, llmq_hub_event ev, int attempt, const char *reason)
{
    if (x->f->on_event) x->f->on_event(x->f->ctx, ev, x->on_disk, attempt, reason);
}

/* Drops what is on disk and starts the hash over. */
static int restart_file(xfer *x)
{
    if (fflush(x->fp) != 0 || ftruncate(fileno(x->fp), 0) != 0) return LLMQ_ERR;
    x->on_disk = 0;
    return md_start(x);
}

static void copy_header_value(char *dst, size_t cap, const char *line, size_t n, size_t name_len)
{
    const char *v = line + name_len;
    const char *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t k = (size_t)(end - v);
    if (k >= cap) k = cap - 1;
    memcpy(dst, v, k);
    dst[k] = '\0';
}

static size_t fetch_header(char *line, size_t size, size_t nmemb, void *user)
{
    xfer *x = user;
    size_t n = size * nmemb;
    if (n >= 5 && !strncmp(line, "HTTP/", 5)) {
        x->content_range[0] = '\0'; /* a new response (redirect hop) */
    } else if (n > 14 && !strncasecmp(line, "Content-Range:", 14)) {
        copy_header_value(x->content_range, sizeof x->content_range, line, n, 14);
    } else if (n > 14 && !strncasecmp(line, "X-Linked-Etag:", 14) && !x->linked_etag[0]) {
        copy_header_value(x->linked_etag, sizeof x->linked_etag, line, n, 14);
    }
    return n;
}

static size_t fetch_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    xfer *x = user;
    size_t n = size * nmemb;
    if (!x->body_started) {
        x->body_started = 1;
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &x->code);
        if (x->code == 206) {
            /* The range must start where our file ends. */
            unsigned long long start = 0;
            if (sscanf(x->content_range, "bytes %llu-", &start) != 1 || start != x->on_disk) {
                x->bad_range = 1;
                return 0;
            }
        } else if (x->code == 200 && x->on_disk > 0) {
            /* The server ignored our Range: start over from byte 0. */
            if (restart_file(x) != LLMQ_OK) {
                x->write_failed = 1;
                return 0;
            }
            emit(x, LLMQ_HUB_FILE_DATA, 0, NULL);
        }
    }
    if (x->code != 200 && x->code != 206) return n; /* an error page: not ours to keep */
    if (x->on_disk + n > x->f->size) {
        x->too_big = 1;
        return 0;
    }
    if (fwrite(ptr, 1, n, x->fp) != n || EVP_DigestUpdate(x->md, ptr, n) != 1) {
        x->write_failed = 1;
        return 0;
    }
    x->on_disk += n;
    x->fetched += n;
    emit(x, LLMQ_HUB_FILE_DATA, 0, NULL);
    return n;
}

/* Hashes the first x->on_disk bytes already in the file. */
static int hash_existing(xfer *x)
{
    FILE *in = fopen(x->f->incomplete_path, "rb");
    if (!in) return LLMQ_ERR;
    unsigned char *buf = malloc(1 << 20);
    uint64_t left = x->on_disk;
    int rc = buf ? LLMQ_OK : LLMQ_ERR;
    while (rc == LLMQ_OK && left > 0) {
        size_t want = left < (1u << 20) ? (size_t)left : (1u << 20);
        if (fread(buf, 1, want, in) != want || EVP_DigestUpdate(x->md, buf, want) != 1) rc = LLMQ_ERR;
        left -= want;
    }
    free(buf);
    fclose(in);
    return rc;
}

static void strip_etag(char *s)
{
    char *p = s;
    if (!strncmp(p, "W/", 2)) p += 2;
    size_t n = strlen(p);
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
        p++;
        n -= 2;
    }
    memmove(s, p, n);
    s[n] = '\0';
}

typedef enum { ATTEMPT_OK, ATTEMPT_RETRY, ATTEMPT_FATAL } attempt_result;

/* One request; on RETRY/FATAL, reason says why. */
static attempt_result fetch_attempt(xfer *x, char *reason, size_t reason_cap)
{
    const hub_fetch *f = x->f;
    struct stat st;
    x->on_disk = 0;
    if (stat(f->incomplete_path, &st) == 0 && S_ISREG(st.st_mode)) x->on_disk = (uint64_t)st.st_size;
    x->fp = fopen(f->incomplete_path, "ab");
    if (!x->fp) {
        snprintf(reason, reason_cap, "%s: cannot open: %s", f->incomplete_path, strerror(errno));
        return ATTEMPT_FATAL;
    }
    attempt_result res = ATTEMPT_RETRY;
    if (md_start(x) != LLMQ_OK) {
        snprintf(reason, reason_cap, "OpenSSL digest initialisation failed");
        res = ATTEMPT_FATAL;
        goto done;
    }
    if (x->on_disk > f->size || (x->on_disk > 0 && hash_existing(x) != LLMQ_OK)) {
        if (restart_file(x) != LLMQ_OK) {
            snprintf(reason, reason_cap, "%s: cannot truncate: %s", f->incomplete_path, strerror(errno));
            res = ATTEMPT_FATAL;
            goto done;
        }
    }
    emit(x, LLMQ_HUB_FILE_START, 0, NULL);

    if (x->on_disk < f->size) {
        char errbuf[CURL_ERROR_SIZE] = "";
        struct curl_slist *headers = NULL;
        x->curl = new_handle(f->net, &headers, errbuf);
        if (!x->curl) {
            curl_slist_free_all(headers);
            snprintf(reason, reason_cap, "cannot create a curl handle");
            res = ATTEMPT_FATAL;
            goto done;
        }
        char range[48];
        if (x->on_disk > 0) {
            snprintf(range, sizeof range, "%" PRIu64 "-", x->on_disk);
            curl_easy_setopt(x->curl, CURLOPT_RANGE, range);
        }
        x->body_started = 0;
        x->code = 0;
        x->too_big = x->bad_range = x->write_failed = 0;
        x->content_range[0] = x->linked_etag[0] = '\0';
        curl_easy_setopt(x->curl, CURLOPT_URL, f->url);
        curl_easy_setopt(x->curl, CURLOPT_HEADERFUNCTION, fetch_header);
        curl_easy_setopt(x->curl, CURLOPT_HEADERDATA, x);
        curl_easy_setopt(x->curl, CURLOPT_WRITEFUNCTION, fetch_write);
        curl_easy_setopt(x->curl, CURLOPT_WRITEDATA, x);
        CURLcode rc = curl_easy_perform(x->curl);
        long code = 0;
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(x->curl);
        x->curl = NULL;
        curl_slist_free_all(headers);
        if (fflush(x->fp) != 0) x->write_failed = 1;

        if (x->write_failed) {
            snprintf(reason, reason_cap, "%s: write failed: %s", f->incomplete_path, strerror(errno));
            res = ATTEMPT_FATAL;
            goto done;
        }
        if (x->too_big) {
            snprintf(reason, reason_cap, "server sent more than the %" PRIu64 " bytes listed", f->size);
            unlink(f->incomplete_path);
            goto done;
        }
        if (x->bad_range) {
            snprintf(reason, reason_cap, "server answered a Range request with Content-Range '%s'", x->content_range);
            unlink(f->incomplete_path);
            goto done;
        }
        if (x->linked_etag[0]) {
            strip_etag(x->linked_etag);
            if (strcmp(x->linked_etag, f->etag) != 0) {
                snprintf(reason, reason_cap, "server's X-Linked-Etag %.80s differs from the file list's %s",
                         x->linked_etag, f->etag);
                res = ATTEMPT_FATAL;
                goto done;
            }
        }
        if (rc != CURLE_OK) {
            snprintf(reason, reason_cap, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
            if (!retriable_curl(rc)) res = ATTEMPT_FATAL;
            goto done;
        }
        if (code == 401 || code == 403) {
            snprintf(reason, reason_cap, "gated or private repo: set HF_TOKEN (HTTP %ld)", code);
            res = ATTEMPT_FATAL;
            goto done;
        }
        if (code == 404) {
            snprintf(reason, reason_cap, "not on the hub: no such repo or revision (HTTP 404)");
            res = ATTEMPT_FATAL;
            goto done;
        }
        if (code == 416) {
            snprintf(reason, reason_cap, "HTTP 416 for a resumed download");
            unlink(f->incomplete_path);
            goto done;
        }
        if (retriable_status(code)) {
            snprintf(reason, reason_cap, "HTTP %ld", code);
            goto done;
        }
        if (code != 200 && code != 206) {
            snprintf(reason, reason_cap, "unexpected HTTP %ld", code);
            res = ATTEMPT_FATAL;
            goto done;
        }
        if (x->on_disk < f->size) {
            snprintf(reason, reason_cap, "connection ended after %" PRIu64 " of %" PRIu64 " bytes", x->on_disk, f->size);
            goto done;
        }
    }

    /* Complete: the digest decides. */
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (EVP_DigestFinal_ex(x->md, digest, &dlen) != 1) {
        snprintf(reason, reason_cap, "OpenSSL digest failed");
        res = ATTEMPT_FATAL;
        goto done;
    }
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    llmq_hex(digest, dlen, hex);
    if (strcmp(hex, f->etag) != 0) {
        snprintf(reason, reason_cap, "%s mismatch: expected %s, got %s", f->is_lfs ? "sha256" : "git blob sha1",
                 f->etag, hex);
        unlink(f->incomplete_path); /* never promoted, never resumed */
        goto done;
    }
    res = ATTEMPT_OK;
done:
    if (x->fp) {
        if (fclose(x->fp) != 0 && res == ATTEMPT_OK) {
            snprintf(reason, reason_cap, "%s: write failed: %s", f->incomplete_path, strerror(errno));
            res = ATTEMPT_FATAL;
        }
        x->fp = NULL;
    }
    return res;
}

int hub_fetch_file(const hub_fetch *f, uint64_t *fetched)
{
    *fetched = 0;
    if (hub_curl_init() != LLMQ_OK) return LLMQ_ERR;
    xfer x = {.f = f};
    x.md = EVP_MD_CTX_new();
    if (!x.md) return llmq_error("%s: OpenSSL out of memory", f->name);
    char reason[CURL_ERROR_SIZE + 512] = "";
    int rc = LLMQ_ERR;
    for (int attempt = 1;; attempt++) {
        attempt_result r = fetch_attempt(&x, reason, sizeof reason);
        if (r == ATTEMPT_OK) {
            rc = LLMQ_OK;
            break;
        }
        if (r == ATTEMPT_FATAL) {
            rc = llmq_error("%s: %s", f->name, reason);
            break;
        }
        if (attempt > f->net->retries) {
            rc = llmq_error("%s: giving up after %d attempts: %s", f->name, attempt, reason);
            break;
        }
        emit(&x, LLMQ_HUB_FILE_RETRY, attempt + 1, reason);
        sleep_ms(hub_backoff_ms(f->net, attempt));
    }
    EVP_MD_CTX_free(x.md);
    *fetched = x.fetched;
    return rc;
}

/* ---- HEAD metadata ------------------------------------------------------- */

typedef struct {
    char etag[160], linked_etag[160], linked_size[32], content_length[32], location[2048], commit[64];
} head_info;

static size_t head_header(char *line, size_t size, size_t nmemb, void *user)
{
    head_info *h = user;
    size_t n = size * nmemb;
    struct {
        const char *name;
        char *dst;
        size_t cap;
    } fields[] = {
        {"ETag:", h->etag, sizeof h->etag},
        {"X-Linked-Etag:", h->linked_etag, sizeof h->linked_etag},
        {"X-Linked-Size:", h->linked_size, sizeof h->linked_size},
        {"Content-Length:", h->content_length, sizeof h->content_length},
        {"Location:", h->location, sizeof h->location},
        {"X-Repo-Commit:", h->commit, sizeof h->commit},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        size_t k = strlen(fields[i].name);
        if (n > k && !strncasecmp(line, fields[i].name, k)) copy_header_value(fields[i].dst, fields[i].cap, line, n, k);
    }
    return n;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s) return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || s[0] == '-') return 0;
    *out = v;
    return 1;
}

int hub_head_metadata(const hub_net *net, const char *url, const char *name, char **etag, uint64_t *size,
                      char **commit)
{
    *etag = NULL;
    if (commit) *commit = NULL;
    if (hub_curl_init() != LLMQ_OK) return LLMQ_ERR;
    char *current = strdup(url);
    if (!current) return llmq_error("hub: out of memory");
    char reason[CURL_ERROR_SIZE + 64] = "";
    int attempt = 1, hops = 0, rc = LLMQ_ERR;
    for (;;) {
        char errbuf[CURL_ERROR_SIZE] = "";
        struct curl_slist *headers = NULL;
        CURL *c = new_handle(net, &headers, errbuf);
        if (!c) {
            curl_slist_free_all(headers);
            rc = llmq_error("hub: cannot create a curl handle");
            break;
        }
        head_info h;
        memset(&h, 0, sizeof h);
        curl_easy_setopt(c, CURLOPT_URL, current);
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, head_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
        CURLcode cc = curl_easy_perform(c);
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(c);
        curl_slist_free_all(headers);
        if (cc != CURLE_OK || retriable_status(code)) {
            if (cc != CURLE_OK) snprintf(reason, sizeof reason, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
            else snprintf(reason, sizeof reason, "HTTP %ld", code);
            if ((cc != CURLE_OK && !retriable_curl(cc)) || attempt > net->retries) {
                rc = llmq_error("%s: metadata: %s%s", name, attempt > 1 ? "giving up: " : "", reason);
                break;
            }
            sleep_ms(hub_backoff_ms(net, attempt++));
            continue;
        }
        if (code >= 300 && code < 400 && h.location[0] == '/' && h.location[1] != '/' && hops < 10) {
            /* Relative: same origin, new path (a renamed repo). */
            const char *scheme_end = strstr(current, "://");
            const char *path = scheme_end ? strchr(scheme_end + 3, '/') : NULL;
            size_t origin = path ? (size_t)(path - current) : strlen(current);
            char *next = malloc(origin + strlen(h.location) + 1);
            if (!next) {
                rc = llmq_error("hub: out of memory");
                break;
            }
            memcpy(next, current, origin);
            strcpy(next + origin, h.location);
            free(current);
            current = next;
            hops++;
            continue;
        }
        if (code == 401 || code == 403) {
            rc = llmq_error("%s: gated or private repo: set HF_TOKEN (HTTP %ld)", name, code);
            break;
        }
        if (code == 404) {
            rc = llmq_error("%s: not on the hub: no such repo or revision (HTTP 404)", name);
            break;
        }
        if (!(code >= 200 && code < 400)) {
            rc = llmq_error("%s: metadata: unexpected HTTP %ld", name, code);
            break;
        }
        int redirected = code >= 300;
        char *e = h.linked_etag[0] ? h.linked_etag : h.etag;
        strip_etag(e);
        const char *sz = h.linked_size[0] ? h.linked_size : (redirected ? "" : h.content_length);
        if (!e[0] || !parse_u64(sz, size)) {
            rc = llmq_error("%s: metadata: the hub sent no %s", name, e[0] ? "size" : "ETag");
            break;
        }
        *etag = strdup(e);
        if (commit && h.commit[0]) *commit = strdup(h.commit);
        rc = *etag ? LLMQ_OK : llmq_error("hub: out of memory");
        break;
    }
    free(current);
    return rc;
}
