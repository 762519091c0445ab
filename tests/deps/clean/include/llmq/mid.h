#include "llmq/low.h"
int mid(int x);
