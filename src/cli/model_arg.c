#include "model_arg.h"
#include "cli.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/gguf_model.h"

#include <stdlib.h>
#include <string.h>

#include "llmq/tokenizer.h"

cli_model *cli_model_open(const char *cmd, const char *arg)
{
    cli_model *cm = calloc(1, sizeof *cm);
    if (!cm) {
        cli_fail(cmd, "out of memory");
        return NULL;
    }
    cm->path = strdup(arg);
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
