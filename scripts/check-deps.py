#!/usr/bin/env python3
"""The house's one-way rule: folders of src/ depend on folders below them only,
and no files of src/ include or call each other in a circle.

    util -> formats -> kernels | io -> model -> quant | eval -> cli

Folders on one step (kernels and io, quant and eval) know nothing of each other.
A file of a folder may include the headers of its own folder and of the steps
below, and call the functions defined there; nothing else.

What it reads:
  - every `#include "..."` of src/*/*.[ch] and include/llmq/*.h (resolved
    beside the file first, then under include/);
  - the objects of the library (nm on <objects>/<folder>/<file>.o): a global
    symbol one object leaves undefined and another defines is a call edge.
A public header (include/llmq/X.h) belongs to the folder whose objects define
the functions and variables it declares; a header that declares none (types
and macros only) sits with the highest header it includes (util if none).
A private header (src/F/x.h) belongs to F and is for F's files only.

It fails, naming each offending pair, on: a file of an unknown folder, an
include or a call that goes up or sideways, another folder's private header,
a public header declaring symbols of two folders, an include circle (header
files including each other), and a call circle between files.

usage: check-deps.py [--root DIR] [--objects DIR]
  --root     the tree holding src/ and include/ (default: this script's repository)
  --objects  where the objects of src/ are (default: ROOT/build/src)
"""
import argparse
import os
import re
import subprocess
import sys

LAYERS = [["util"], ["formats"], ["kernels", "io"], ["model"], ["quant", "eval"], ["cli"]]
RANK = {folder: i for i, step in enumerate(LAYERS) for folder in step}
PICTURE = " -> ".join(" | ".join(step) for step in LAYERS)

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
COMMENT_RE = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
IDENT_RE = re.compile(r'\b[A-Za-z_]\w*\b')


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def project_files(root):
    files = []
    src = os.path.join(root, "src")
    for folder in sorted(os.listdir(src)):
        d = os.path.join(src, folder)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if name.endswith((".c", ".h")):
                files.append(f"src/{folder}/{name}")
    inc = os.path.join(root, "include", "llmq")
    if os.path.isdir(inc):
        files += [f"include/llmq/{n}" for n in sorted(os.listdir(inc)) if n.endswith(".h")]
    return files


def resolve(root, includer, name):
    for candidate in (os.path.join(os.path.dirname(includer), name), os.path.join("include", name)):
        candidate = os.path.normpath(candidate)
        if os.path.isfile(os.path.join(root, candidate)):
            return candidate
    return None


def symbols(obj):
    """(defined, undefined) global symbol names of one object file."""
    out = subprocess.run(["nm", "-P", obj], capture_output=True, text=True, check=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if name.startswith("."):  # .gomp_critical_user_* and the like: not a function or variable of ours
            continue
        if kind == "U":
            undefined.add(name)
        elif kind in "TDRBCVWGSi":
            defined.add(name)
    return defined, undefined


def cycles(nodes, edges):
    """Strongly connected components of more than one node (Tarjan): for each,
    its nodes and the shortest circle from its first node back to it."""
    index, low, stack, on_stack, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    circles = []
    for comp in comps:
        members = set(comp)
        # shortest way back to the first node: breadth-first within the component
        start, prev, queue = comp[0], {}, [comp[0]]
        found = None
        while queue and not found:
            v = queue.pop(0)
            for w in sorted(edges.get(v, ())):
                if w not in members:
                    continue
                if w == start:
                    found = v
                    break
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        path = [start]
        v = found
        while v != start:
            path.insert(1, v)
            v = prev[v]
        circles.append((comp, path + [start]))
    return circles


def also(members, circle):
    """The other files of a tangle than the ones its shortest circle passes."""
    rest = [m for m in members if m not in circle]
    return f" (tangled with {', '.join(rest)})" if rest else ""


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=here)
    ap.add_argument("--objects")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    objdir = os.path.abspath(args.objects or os.path.join(root, "build", "src"))

    errors = []
    files = project_files(root)
    folder_of = {}
    for f in files:
        if f.startswith("src/"):
            folder = f.split("/")[1]
            if folder not in RANK:
                errors.append(f"{f}: folder src/{folder} is not a step of {PICTURE}")
            folder_of[f] = folder

    # Includes.
    includes = {}
    for f in files:
        targets = []
        for name in INCLUDE_RE.findall(read(os.path.join(root, f))):
            target = resolve(root, f, name)
            if target is None:
                errors.append(f'{f}: #include "{name}" is not a file of the project')
            elif target in files:
                targets.append(target)
        includes[f] = targets

    # Symbols: who defines what, who calls what.
    defined_by, undefined = {}, {}
    for f in files:
        if not f.endswith(".c"):
            continue
        obj = os.path.join(objdir, f[len("src/"):-2] + ".o")
        if not os.path.isfile(obj):
            errors.append(f"{f}: no object {obj} (build the library first)")
            continue
        d, u = symbols(obj)
        undefined[f] = u
        for s in d:
            defined_by.setdefault(s, []).append(f)

    # Owners of the public headers: the folder whose objects define what a
    # header declares; one that declares nothing sits with the highest header
    # it includes (headers are visited so that what a header includes comes first).
    def declared(h):
        text = COMMENT_RE.sub(" ", read(os.path.join(root, h)))
        owners = {}
        for ident in sorted(set(IDENT_RE.findall(text))):
            for f in defined_by.get(ident, ()):
                owners.setdefault(folder_of[f], ident)
        return owners

    def highest(folders):
        return max(folders, key=lambda fo: (RANK.get(fo, 99), fo))

    public = [f for f in files if f.startswith("include/")]
    owners = {h: declared(h) for h in public}
    for h in public:
        if len(owners[h]) > 1:
            named = ", ".join(f"{folder} ({sym})" for folder, sym in sorted(owners[h].items()))
            errors.append(f"{h}: declares symbols of several folders: {named}; split it")
        if owners[h]:
            folder_of[h] = highest(owners[h])
    for _ in public:  # as many rounds as a chain of type-only headers can be long
        for h in public:
            if not owners[h]:
                below = [folder_of[t] for t in includes[h] if t in folder_of]
                folder_of[h] = highest(below) if below else LAYERS[0][0]

    def check_edge(a, b, how, detail=""):
        fa, fb = folder_of.get(a), folder_of.get(b)
        if fa is None or fb is None or fa == fb:
            return
        if b.startswith("src/"):
            if b.endswith(".h"):
                errors.append(f"{a} ({fa}) includes {b}, a private header of {fb}")
                return
        if RANK.get(fb, 99) >= RANK.get(fa, -1):
            way = "sideways" if RANK.get(fb) == RANK.get(fa) else "upward"
            errors.append(f"{way} {how}: {a} ({fa}) -> {b} ({fb}){detail}")

    for a, targets in includes.items():
        for b in targets:
            check_edge(a, b, "include")

    calls = {}
    for a, syms in undefined.items():
        for s in sorted(syms):
            for b in defined_by.get(s, ()):
                if b != a:
                    calls.setdefault(a, {}).setdefault(b, s)
    for a in sorted(calls):
        for b, s in sorted(calls[a].items()):
            check_edge(a, b, "call", f" ({s})")

    for members, circle in cycles(files, includes):
        errors.append("include circle: " + " -> ".join(circle) + also(members, circle))
    for members, circle in cycles([f for f in files if f.endswith(".c")], calls):
        steps = [f"{a} -> {b} ({calls[a][b]})" for a, b in zip(circle, circle[1:])]
        errors.append("call circle: " + "; ".join(steps) + also(members, circle))

    if errors:
        for e in errors:
            print(f"check-deps: {e}", file=sys.stderr)
        print(f"check-deps: {len(errors)} problem(s); the order is {PICTURE}", file=sys.stderr)
        return 1
    n_inc = sum(len(t) for t in includes.values())
    n_call = sum(len(t) for t in calls.values())
    print(f"check-deps: {len(files)} files, {n_inc} includes, {n_call} call edges, no circles; {PICTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
