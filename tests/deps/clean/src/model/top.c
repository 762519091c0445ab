#include "llmq/mid.h"
int top(int x);
int top(int x) { return mid(x); }
