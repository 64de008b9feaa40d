#!/usr/bin/env python3
"""The code-shape rules of the house (STYLE.md, COMMON.md): no file under
src/ over 600 lines, no function over 80 lines outside tests, and no import
cycle between the modules of src/. Prints every breach; exits 1 if any.

Function bodies are found by brace matching on the text with strings, chars
and comments blanked out: good enough for rustfmt-formatted code, which is
what the tree holds (`cargo fmt` runs before every landing)."""
import os
import re
import sys

MAX_FILE = 600
MAX_FN = 80
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
src = os.path.join(root, "src")


def blank(text):
    """Strings, chars and comments replaced by spaces (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"\w", text[i - 1] if i else " "):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1])); i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\x..'|'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'])'|'\\x..'|'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12])
            out.append(" " * len(m.group(0))); i += len(m.group(0))
        else:
            out.append(c); i += 1
    return "".join(out)


def match_brace(code, open_at):
    depth = 0
    for k in range(open_at, len(code)):
        if code[k] == "{":
            depth += 1
        elif code[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(code) - 1


def test_ranges(code):
    """Character ranges of `#[cfg(test)]` items (test modules and helpers)."""
    ranges = []
    for m in re.finditer(r"#\[cfg\((test|any\(test[^\]]*)\)\]", code):
        if m.group(1).startswith("any"):
            continue  # compiled for fuzzing too: not test-only
        k = code.find("{", m.end())
        semi = code.find(";", m.end())
        if k < 0 or (0 <= semi < k):
            continue
        ranges.append((m.start(), match_brace(code, k)))
    return ranges


FN = re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)", re.M)
USE = re.compile(r"\b(?:crate|super)::(\w+)")


def module_of(path):
    rel = os.path.relpath(path, src)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def main():
    breaches, fns, files = [], [], []
    edges = {}
    for dirpath, _, names in os.walk(src):
        for name in sorted(names):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            text = open(path, encoding="utf-8").read()
            lines = text.count("\n")
            files.append((lines, rel))
            if lines > MAX_FILE:
                breaches.append(f"{rel}: {lines} lines (max {MAX_FILE})")
            code = blank(text)
            # `tests.rs` and `*_tests.rs` are test modules (`#[cfg(test)] mod
            # tests;`), and the fuzz harness is compiled only for tests and
            # cargo-fuzz: their functions may be long tables, and their
            # imports are not the program's structure.
            if name.endswith("tests.rs"):
                continue
            tests = test_ranges(code)
            for m in FN.finditer(code):
                if any(a <= m.start() <= b for a, b in tests):
                    continue
                k = code.find("{", m.end())
                semi = code.find(";", m.end())
                if k < 0 or (0 <= semi < k):
                    continue  # a trait method without a body
                end = match_brace(code, k)
                start_line = code.count("\n", 0, m.start()) + 1
                length = code.count("\n", m.start(), end) + 1
                fns.append((length, f"{rel}:{start_line} {m.group(1)}"))
                if length > MAX_FN:
                    breaches.append(f"{rel}:{start_line}: fn {m.group(1)} is {length} lines (max {MAX_FN})")
            # Module dependencies between top-level modules and, inside one
            # top-level module, between its children.
            mod = module_of(path)
            if mod == ["lib"] or mod == ["main"] or mod[0] == "fuzzing":
                continue
            prod = "".join(code[i] if not any(a <= i <= b for a, b in tests) else " " for i in range(len(code))) if tests else code
            for top, child in paths(prod, "crate"):
                if top != mod[0]:
                    edges.setdefault(mod[0], set()).add(top)
                elif len(mod) > 1 and child and child != mod[1]:
                    edges.setdefault("/".join(mod[:2]), set()).add(f"{top}/{child}")
            if len(mod) > 1:
                for sib, _ in paths(prod, "super"):
                    if len(mod) == 2 and sib != mod[1]:
                        edges.setdefault("/".join(mod[:2]), set()).add(f"{mod[0]}/{sib}")
    # Only edges between existing modules.
    known = set(edges) | {m for s in edges.values() for m in s}
    cycles = find_cycles({a: {b for b in bs if b in known and b != a} for a, bs in edges.items()})
    for c in cycles:
        breaches.append("import cycle among: " + ", ".join(c))
    if "--edges" in sys.argv:
        for a in sorted(edges):
            print(a, "->", ", ".join(sorted(edges[a])))
    if "-v" in sys.argv:
        print("largest files:")
        for n, f in sorted(files, reverse=True)[:8]:
            print(f"  {n:5} {f}")
        print("longest functions:")
        for n, f in sorted(fns, reverse=True)[:8]:
            print(f"  {n:5} {f}")
    for b in breaches:
        print(b)
    print(f"shape: {len(files)} files, {len(fns)} functions outside tests, {len(cycles)} import cycles, {len(breaches)} breaches")
    return 1 if breaches else 0


def paths(code, head):
    """(first, second) path segments after `head::`, through `{a, b::c}` groups."""
    out = []
    for m in re.finditer(r"\b" + head + r"::", code):
        rest = code[m.end():]
        if rest.startswith("{"):
            body = rest[1:match_brace(rest, 0)]
            depth, item, items = 0, "", []
            for ch in body:
                depth += ch == "{"
                depth -= ch == "}"
                if ch == "," and depth == 0:
                    items.append(item); item = ""
                else:
                    item += ch
            items.append(item)
            for it in items:
                seg = [x for x in re.split(r"::", it.strip()) if x]
                if seg and re.match(r"\w+$", seg[0]):
                    sub = re.match(r"\w+", seg[1]) if len(seg) > 1 else None
                    out.append((seg[0], sub.group(0) if sub else None))
        else:
            w = re.match(r"(\w+)(?:::(\w+))?", rest)
            if w:
                out.append((w.group(1), w.group(2)))
    return out


def find_cycles(graph):
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


sys.exit(main())
