int low(int x);
