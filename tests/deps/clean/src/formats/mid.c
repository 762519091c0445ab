#include "llmq/mid.h"
#include "helper.h"
int mid(int x) { return low(helper(x)); }
