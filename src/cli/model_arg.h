/* Resolving a MODEL argument (checkpoint directory, .gguf file, or hub id)
 * into a loaded model and, where one exists, its tokenizer. */
#ifndef LLMQ_CLI_MODEL_ARG_H
#define LLMQ_CLI_MODEL_ARG_H

#include "llmq/model.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    llmq_model *model;
    void *tokenizer; /* llmq_tokenizer *, NULL when the model has none */
    char *path;      /* the local path the argument resolved to */
} cli_model;

/* Prints the failure itself ("llmq CMD: ...") and returns NULL on error. */
cli_model *cli_model_open(const char *cmd, const char *arg);
void cli_model_close(cli_model *cm);
/* Tokenizes a whole text file (BOS as the tokenizer adds it). NULL + message on error. */
int32_t *cli_model_tokenize_file(cli_model *cm, const char *path, size_t *n);
/* The BOS id the tokenizer adds (or config's when there is no tokenizer); -1 when none. */
int cli_model_bos(const cli_model *cm);

#endif
