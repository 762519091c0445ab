#include "a.h"
int a(void);
int a(void) { return 0; }
