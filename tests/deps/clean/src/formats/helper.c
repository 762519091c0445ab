#include "helper.h"
#include "llmq/low.h"
int helper(int x) { return low(x) * 2; }
