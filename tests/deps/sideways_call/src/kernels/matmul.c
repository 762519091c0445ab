int read_tensor(int i);
int matmul(int i);
int matmul(int i) { return read_tensor(i) * 3; }
