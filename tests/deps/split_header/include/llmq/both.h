int in_util(void);
int in_io(void);
