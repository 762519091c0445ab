#!/usr/bin/env python3
"""KL divergence against bits per weight, as an SVG, from the markdown table
scripts/bench-mixes.sh prints (no plotting library: the SVG is written by hand).

usage: python3 scripts/plot-kl-bpw.py TABLE.md OUT.svg
"""
import math
import sys


def rows(path):
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or cells[0] in ("mix", "") or cells[0].startswith("---"):
            continue
        try:
            yield cells[0], cells[1], float(cells[2]), float(cells[4])
        except ValueError:
            continue


def series_of(label):
    if label.startswith("llama.cpp"):
        return "llama.cpp, importance matrix"
    if "--target-bpw" in label:
        return "llmq gptq --target-bpw (types per tensor)"
    return "llmq " + label.split()[-1] + " (llama.cpp's mix)"


def main(src, dst):
    series = {}
    for mix, label, bpw, kl in rows(src):
        if kl > 0:
            series.setdefault(series_of(label), []).append((bpw, kl, mix))
    if not series:
        sys.exit("plot-kl-bpw: no rows in " + src)
    colours = ["#d62728", "#7f7f7f", "#1f77b4", "#2ca02c", "#9467bd"]
    pts = [p for s in series.values() for p in s]
    x0, x1 = math.floor(min(p[0] for p in pts) * 2) / 2, math.ceil(max(p[0] for p in pts) * 2) / 2
    y0, y1 = math.floor(math.log10(min(p[1] for p in pts))), math.ceil(math.log10(max(p[1] for p in pts)))
    W, H, L, R, T, B = 760, 480, 70, 20, 30, 60
    sx = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)
    sy = lambda y: T + (y1 - math.log10(y)) / (y1 - y0) * (H - T - B)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">stories-llama-7m: KL divergence from the original against bits per weight</text>']
    for e in range(y0, y1 + 1):
        y = sy(10 ** e)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
    x = x0
    while x <= x1 + 1e-9:
        out.append(f'<line x1="{sx(x):.1f}" y1="{T}" x2="{sx(x):.1f}" y2="{H - B}" stroke="#eee"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x:g}</text>')
        x += 0.5
    out.append(f'<text x="{W / 2}" y="{H - 20}" text-anchor="middle">bits per weight (tensor bytes × 8 / parameters)</text>')
    out.append(f'<text x="16" y="{H / 2}" text-anchor="middle" transform="rotate(-90 16 {H / 2})">KL (log scale)</text>')
    for i, (name, p) in enumerate(sorted(series.items())):
        p.sort()
        c = colours[i % len(colours)]
        path = " ".join(f"{'M' if k == 0 else 'L'}{sx(a):.1f},{sy(b):.1f}" for k, (a, b, _) in enumerate(p))
        out.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        for a, b, mix in p:
            out.append(f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="3.5" fill="{c}"><title>{name}: {mix}, {a} bpw, KL {b}</title></circle>')
        ly = T + 16 + 18 * i
        out.append(f'<line x1="{W - R - 300}" y1="{ly - 4}" x2="{W - R - 280}" y2="{ly - 4}" stroke="{c}" stroke-width="2"/>')
        out.append(f'<text x="{W - R - 274}" y="{ly}">{name}</text>')
    out.append("</svg>")
    open(dst, "w", encoding="utf-8").write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
