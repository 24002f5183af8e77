#!/usr/bin/env python3
"""Lists functions longer than a limit in the production folders.

House rule (docs/style.md): functions stay under ~60 lines and none goes
over 80, so that each reads on one screen. This finds function bodies by
brace matching on the source with comments, strings and character literals
blanked out: a body is a brace block opened at namespace or class level
whose header has a parameter list (lambdas and blocks inside a function
count toward it). It exits 1 when a function is over the limit.

usage: function_length.py [--limit N] [--top K] [ROOT]
"""
import argparse
import os
import re
import sys

FOLDERS = ["net", "config", "gpu", "actors", "runtime"]
SUFFIXES = (".cpp", ".hpp", ".cu")


def blank(src):
    """Replaces comments and literals with spaces, keeping newlines."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == 'R' and src.startswith('R"', i) and (i == 0 or not (src[i-1].isalnum() or src[i-1] == '_')):
            m = re.match(r'R"([^(\s]*)\(', src[i:])
            if not m:
                out.append(c)
                i += 1
                continue
            end = ")" + m.group(1) + '"'
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c in "\"'":
            if c == "'" and i > 0 and src[i-1].isalnum() and src[i+1:i+2].isalnum():
                out.append(" ")  # digit separator 1'000
                i += 1
                continue
            j = i + 1
            while j < n and src[j] != c and src[j] != "\n":
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(path):
    """Yields (name, first_line, lines) of each function body in `path`."""
    text = blank(open(path, encoding="utf-8", errors="replace").read())
    # Preprocessor lines never open or close a body.
    text = re.sub(r"(?m)^\s*#.*$", lambda m: " " * len(m.group(0)), text)
    stack = []  # (kind, start offset)
    last_stmt_end = 0
    for i, ch in enumerate(text):
        if ch in ";}":
            if ch == "}" and stack:
                kind, start, name = stack.pop()
                if kind == "fn":
                    first = text.count("\n", 0, start) + 1
                    last = text.count("\n", 0, i) + 1
                    yield name, first, last - first + 1
            last_stmt_end = i + 1
        elif ch == "{":
            header = text[last_stmt_end:i]
            in_fn = any(k == "fn" for k, _, _ in stack)
            kind = "block"
            name = ""
            if not in_fn:
                h = " ".join(header.split())
                if re.search(r"\b(namespace|extern)\b", h) and "(" not in h:
                    kind = "ns"
                elif re.search(r"\b(class|struct|union|enum)\b", h) and "(" not in h:
                    kind = "class"
                elif "(" in h and not h.endswith("=") and not re.search(r"=\s*$", h):
                    kind = "fn"
                    m = re.search(r"([~\w:<>]+)\s*\(", h)
                    name = m.group(1) if m else h[:40]
            stack.append((kind, i, name))
            last_stmt_end = i + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=80)
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("root", nargs="?", default=os.environ.get("SOURCE_ROOT", "."))
    args = ap.parse_args()
    found = []
    for folder in FOLDERS:
        for dirpath, _, files in os.walk(os.path.join(args.root, folder)):
            for f in files:
                if f.endswith(SUFFIXES):
                    p = os.path.join(dirpath, f)
                    for name, line, count in functions(p):
                        found.append((count, os.path.relpath(p, args.root), line, name))
    found.sort(reverse=True)
    for count, path, line, name in found[: args.top]:
        print(f"{count:5d}  {path}:{line}  {name}")
    over = [f for f in found if f[0] > args.limit]
    for count, path, line, name in over:
        print(f"{path}:{line}: {name} is {count} lines (limit {args.limit})")
    print(f"function length: {len(found)} functions, {len(over)} over {args.limit} lines")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
