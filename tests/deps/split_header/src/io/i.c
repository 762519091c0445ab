#include "llmq/both.h"
int in_io(void) { return in_util() + 1; }
