int read_tensor(int i);
int read_tensor(int i) { return i; }
