#!/usr/bin/env python3
"""Independent GGUF summary (pure Python, no gguf package) used to obtain the
expected values written into tests/test_gguf.c.

usage: gguf_summary.py FILE.gguf...
Prints version, counts, tokenizer.ggml.model/pre, the token count, the
lengths/types of a few arrays, and where the metadata ends."""
import struct
import sys

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f",
          7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def summarize(path):
    data = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take("<Q")
        s = data[pos:pos + n]
        pos += n
        return s.decode("utf-8", "replace")

    def value(t):
        if t in SCALAR:
            return take(SCALAR[t])
        if t == 8:
            return string()
        if t == 9:
            et = take("<I")
            n = take("<Q")
            return ("array", et, [value(et) for _ in range(n)])
        raise ValueError("type %d" % t)

    assert data[:4] == b"GGUF"
    pos = 4
    version = take("<I")
    n_tensors = take("<Q")
    n_kv = take("<Q")
    kvs = {}
    for _ in range(n_kv):
        k = string()
        t = take("<I")
        kvs[k] = (t, value(t))
    print(path)
    print("  version %d tensors %d kvs %d size %d metadata_end %d" %
          (version, n_tensors, n_kv, len(data), pos))
    for k, (t, v) in kvs.items():
        if isinstance(v, tuple):
            _, et, items = v
            first = items[0] if items else None
            last = items[-1] if items else None
            print("  %s: array of type %d, %d elements, first %r last %r" %
                  (k, et, len(items), first, last))
        else:
            print("  %s: type %d = %r" % (k, t, v))


for p in sys.argv[1:]:
    summarize(p)
