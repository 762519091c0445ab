int forward(int x);
