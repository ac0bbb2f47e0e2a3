#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The shape of the code (README, "Keep rooms small"): no source file of the module or the
core over MAX_LINES lines (tests aside), and no import circle between the files of the
protocol core (rust/proto/src): which file's `use` names an item of which other file (an
item a file re-exports from a child is the child's), leaving out a file and its own
ancestors or descendants (a child uses its parent's items). Prints what it finds and exits
1 if a file is too long or there is a circle. Approximate: it reads `use` lines only."""

import os
import re
import sys

MAX_LINES = 500
root = sys.argv[1] if len(sys.argv) > 1 else "rust/proto/src"
glue = sys.argv[2] if len(sys.argv) > 2 else "rust"
files = {}
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.relpath(os.path.join(d, n), root)
        if n.endswith(".rs") and "tests" not in p.split(os.sep)[:-1] and n != "tests.rs":
            with open(os.path.join(root, p)) as f:
                files[p] = f.read()


use = re.compile(r"^\s*(?:pub(?:\([a-z]+\))? )?use ((?:\w+)(?:::\w+)+)", re.M)


def modpath(p):
    parts = p[:-3].split(os.sep)
    return parts[:-1] if parts[-1] in ("lib", "mod") else parts


def resolve(cur, path):
    parts, m = path.split("::"), modpath(cur)
    if parts[0] == "crate":
        parts, m = parts[1:], []
    elif parts[0] == "super":
        while parts and parts[0] == "super":
            parts, m = parts[1:], m[:-1]
    else:  # a child module of this file
        pass
    m = m + parts
    for k in range(len(m), 0, -1):
        cand = os.sep.join(m[:k]) + ".rs"
        if cand in files:
            # An item a file re-exports from one of its children is that child's.
            name = m[k] if k < len(m) else None
            for r in use.findall(files[cand]) if name else ():
                if r.split("::")[-1] == name and not r.startswith(("super", "crate")):
                    child = resolve(cand, r)
                    if child and child != cand:
                        return child
            return cand
    return None


def related(a, b):
    ma, mb = modpath(a), modpath(b)
    return ma[: len(mb)] == mb or mb[: len(ma)] == ma


graph = {
    p: {d for u in use.findall(s) if (d := resolve(p, u)) and d != p and not related(p, d)}
    for p, s in files.items()
}

# Tarjan's strongly connected components.
index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = n[0]
    n[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(graph):
    if v not in index:
        visit(v)
for c in sccs:
    print("import circle: " + " <-> ".join(c))
long = []
for d, _, names in os.walk(glue):
    parts = d.split(os.sep)
    if "tests" in parts or "target" in parts:
        continue
    for name in names:
        if name.endswith(".rs") and name != "tests.rs":
            with open(os.path.join(d, name)) as f:
                k = sum(1 for _ in f)
            if k > MAX_LINES:
                long.append(f"{os.path.join(d, name)}: {k} lines")
for x in long:
    print(f"over {MAX_LINES} lines: {x}")
print(f"{len(files)} core files, {len(sccs)} import circles, {len(long)} files over {MAX_LINES} lines")
sys.exit(1 if sccs or long else 0)
