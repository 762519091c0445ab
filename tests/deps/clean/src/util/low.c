#include "llmq/low.h"
int low(int x) { return x + 1; }
