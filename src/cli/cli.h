/* Shared helpers of the subcommands (the only code that prints or exits). */
#ifndef LLMQ_CLI_H
#define LLMQ_CLI_H

#include "llmq/version.h"

#endif
