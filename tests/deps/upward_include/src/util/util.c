#include "llmq/model.h"
int util(int x);
int util(int x) { return x * 2; }
