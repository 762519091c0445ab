#ifndef LLMQ_VERSION_H
#define LLMQ_VERSION_H
#define LLMQ_VERSION "0.1.0"
#endif
