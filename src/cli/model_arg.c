#include "model_arg.h"
#include "cli.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf_model.h"

#include <stdlib.h>
#include <string.h>

#include "llmq/hub.h"
#include "llmq/tokenizer.h"

#include <stdio.h>

/* One line per finished file while a hub model is fetched on the way. */
static void on_hub_progress(const llmq_hub_progress *p, void *user)
{
    const char *cmd = user;
    if (p->event == LLMQ_HUB_FILE_DONE)
        fprintf(stderr, "llmq %s: downloaded %s (%llu bytes) [%d/%d]\n", cmd, p->path, (unsigned long long)p->file_size, p->files_done, p->files_total);
    else if (p->event == LLMQ_HUB_FILE_RETRY)
        fprintf(stderr, "llmq %s: %s: retrying (attempt %d): %s\n", cmd, p->path, p->attempt, p->reason ? p->reason : "");
}

cli_model *cli_model_open(const char *cmd, const char *arg)
{
    cli_model *cm = calloc(1, sizeof *cm);
    if (!cm) {
        cli_fail(cmd, "out of memory");
        return NULL;
    }
    /* A hub id (ORG/NAME[@REV]) that is not a local path resolves through the cache. */
    if (llmq_hub_is_repo_id(arg)) {
        llmq_hub_options ho;
        llmq_hub_options_init(&ho);
        ho.progress = on_hub_progress;
        ho.progress_user = (void *)cmd;
        if (llmq_hub_resolve(arg, &cm->path, &ho) != LLMQ_OK) {
            cli_fail_last(cmd);
            cli_model_close(cm);
            return NULL;
        }
    } else {
        cm->path = strdup(arg);
    }
    cm->model = llmq_model_load(cm->path);
    if (!cm->model) {
        cli_fail_last(cmd);
        cli_model_close(cm);
        return NULL;
    }
    if (llmq_is_gguf_file(cm->path)) { /* the vocabulary is inside the file */
        cm->tokenizer = llmq_tokenizer_load_gguf(cm->path);
        if (!cm->tokenizer) {
            cli_fail_last(cmd);
            cli_model_close(cm);
            return NULL;
        }
        return cm;
    }
    char *dir = llmq_is_dir(cm->path) ? strdup(cm->path) : NULL;
    if (!dir) {
        dir = strdup(cm->path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0'; else strcpy(dir, ".");
    }
    char *tj = llmq_path_join(dir, "tokenizer.json");
    if (llmq_file_exists(tj)) {
        cm->tokenizer = llmq_tokenizer_load(dir);
        if (!cm->tokenizer) {
            cli_fail_last(cmd);
            free(tj);
            free(dir);
            cli_model_close(cm);
            return NULL;
        }
    }
    free(tj);
    free(dir);
    return cm;
}

void cli_model_close(cli_model *cm)
{
    if (!cm) return;
    llmq_tokenizer_free(cm->tokenizer);
    llmq_model_free(cm->model);
    free(cm->path);
    free(cm);
}

int32_t *cli_model_tokenize_file(cli_model *cm, const char *path, size_t *n)
{
    if (!cm->tokenizer) {
        llmq_error("%s: no tokenizer.json beside the model; use --tokens FILE", cm->path);
        return NULL;
    }
    size_t len;
    char *text = llmq_read_file(path, 1u << 30, &len);
    if (!text) return NULL;
    int32_t *ids = NULL;
    int rc = llmq_tokenizer_encode(cm->tokenizer, text, len, 1, &ids, n);
    free(text);
    return rc == LLMQ_OK ? ids : NULL;

}

int cli_model_bos(const cli_model *cm)
{
    if (cm->tokenizer) return llmq_tokenizer_adds_bos(cm->tokenizer) ? llmq_tokenizer_bos_id(cm->tokenizer) : -1;
    return cm->model->cfg.bos_token_id;
}
