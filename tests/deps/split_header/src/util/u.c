#include "llmq/both.h"
int in_util(void) { return 1; }
