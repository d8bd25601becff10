#!/usr/bin/env python3
"""Fails on an import cycle between the modules of a crate: the module graph must be a DAG.

At each level of a crate's module tree, the nodes are a module's children (a file, or a directory
with everything under it) and an edge A -> B means code in A names a path into B (`use crate::…`,
`super::…`, `self::…`, or such a path inline; test-only code is left out). Paths into the parent
itself are the parent's own business and not edges. A cycle among the children of any module is reported with the lines that
make it. Usage: scripts/module_cycles.py [CRATE_SRC_DIR ...] (default: every crate of the workspace), or
--self-test.
"""

import glob
import os
import re
import sys

def workspace_crates():
    """The `src/` folder of every package of the workspace (a Cargo.toml with a [package] one or two
    levels down, so `core/domain` as well as `daemon`), the fuzz targets left out."""
    found = []
    for pattern in ("*/Cargo.toml", "*/*/Cargo.toml"):
        for manifest in sorted(glob.glob(pattern)):
            folder = os.path.dirname(manifest)
            if folder.split(os.sep)[0] in ("fuzz", "target", ".tools"):
                continue
            with open(manifest, encoding="utf-8") as f:
                if "[package]" in f.read() and os.path.isdir(os.path.join(folder, "src")):
                    found.append(os.path.join(folder, "src"))
    return found

# A path starting at the crate root or relative to the current module, with its tail (which may
# open a brace group: `crate::{a::X, b}`).
PATH = re.compile(r"\b(crate|super|self)((?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))*)(::\{)?")
USE_GROUP = re.compile(r"\b(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.S)


def strip_comments_and_strings(text):
    """The code without comments and string or char literals (which may mention paths)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not text[i - 1].isalnum()):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            i += len(re.match(r"'(\\.[^']*|[^\\'])'", text[i:]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


TEST_ONLY = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?(mod\s+\w+\s*\{|use\s[^;]*;)")


def without_test_code(code):
    """The code without `#[cfg(test)]` modules and uses: tests may reach anywhere."""
    out, position = [], 0
    for match in TEST_ONLY.finditer(code):
        if match.start() < position:
            continue
        out.append(code[position:match.start()])
        end = match.end()
        if match.group(1).startswith("mod"):
            depth = 1
            while end < len(code) and depth:
                depth += {"{": 1, "}": -1}.get(code[end], 0)
                end += 1
        out.append("\n" * code.count("\n", match.start(), end))
        position = end
    out.append(code[position:])
    return "".join(out)


def module_files(src):
    """Module path (tuple) -> file, for every .rs file of the crate rooted at `src`."""
    modules = {}
    for directory, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if parts and parts[0] == "bin":
                continue  # each binary is a crate of its own
            modules[tuple(parts)] = path
    return modules


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e'] (aliases and globs dropped)."""
    tree = re.sub(r"\s+", "", tree)

    def split_top(text):
        parts, depth, start = [], 0, 0
        for k, ch in enumerate(text):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(text[start:k])
                start = k + 1
        parts.append(text[start:])
        return [p for p in parts if p]

    def walk(prefix, text):
        if "{" in text and text.endswith("}"):
            head, body = text.split("{", 1)
            head = head.rstrip(":")
            base = prefix + ([head] if head else [])
            result = []
            for part in split_top(body[:-1]):
                result.extend(walk(base, part))
            return result
        text = text.split("as", 1)[0] if re.search(r"[a-z0-9_]as[A-Z_a-z]", text) is None else text
        return ["::".join(prefix + [text])]

    return [p for p in walk([], tree)]


def paths_in(code):
    """Every path written in `code` that starts at crate, super or self."""
    found = []
    for match in USE_GROUP.finditer(code):
        for path in expand_use(match.group(1)):
            found.append((path, code.count("\n", 0, match.start()) + 1))
    uses = [(m.start(), m.end()) for m in USE_GROUP.finditer(code)]
    for match in PATH.finditer(code):
        if any(a <= match.start() < b for a, b in uses):
            continue
        found.append((match.group(1) + match.group(2), code.count("\n", 0, match.start()) + 1))
    return found


def resolve(source_module, path, modules):
    """The module path `path` (written in `source_module`) lands in: its longest module prefix."""
    segments = path.split("::")
    if not segments or segments[0] not in ("crate", "super", "self"):
        return None
    current = list(source_module)
    if segments[0] == "crate":
        current, segments = [], segments[1:]
    while segments and segments[0] in ("super", "self"):
        if segments[0] == "super":
            if not current:
                return None
            current = current[:-1]
        segments = segments[1:]
    absolute = current + [s for s in segments if s and s not in ("*",)]
    for length in range(len(absolute), -1, -1):
        if tuple(absolute[:length]) in modules or length == 0:
            return tuple(absolute[:length])
    return ()


def cycles(edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in list(edges):
        if node not in index:
            visit(node)
    return result


def check_crate(src):
    modules = module_files(src)
    # level (parent module) -> child -> set of children; with the lines that make each edge
    levels, evidence = {}, {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as handle:
            code = without_test_code(strip_comments_and_strings(handle.read()))
        for written, line in paths_in(code):
            target = resolve(module, written, modules)
            if target is None:
                continue
            common = 0
            while common < min(len(module), len(target)) and module[common] == target[common]:
                common += 1
            if common == len(module) or common == len(target):
                continue  # into an ancestor or a descendant: the parent's own business
            parent = module[:common]
            a, b = module[common], target[common]
            levels.setdefault(parent, {}).setdefault(a, set()).add(b)
            evidence.setdefault((parent, a, b), []).append(f"{path}:{line}: {written}")
    found = []
    for parent, edges in sorted(levels.items()):
        for component in cycles(edges):
            where = "::".join(parent) or "the crate root"
            lines = []
            for a in component:
                for b in component:
                    for proof in evidence.get((parent, a, b), [])[:2]:
                        lines.append(f"    {a} -> {b}  ({proof})")
            found.append(f"{src}: modules of {where} import each other in a circle: "
                         f"{', '.join(component)}\n" + "\n".join(lines))
    return found


def self_test():
    """The check itself finds a cycle (and only a cycle): a crate of three modules, a -> b -> a
    through a nested `use` group and an inline path, c a child's `super::` and a test module."""
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        def write(name, text):
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        write("lib.rs", "mod a;\nmod b;\nmod c;\n")
        write("a.rs", "use crate::{b::{Thing, other}};\n// crate::c::Nothing\n")
        write("b.rs", "pub fn f() { crate::a::g(); let _ = \"crate::c::x\"; }\n")
        write("c/mod.rs", "mod inner;\npub use inner::X;\n#[cfg(test)]\nmod tests { use crate::a::g; }\n")
        write("c/inner.rs", "use super::super::b::f;\nuse super::Y;\n")
        found = check_crate(root)
        assert len(found) == 1 and "a, b" in found[0], found
        write("b.rs", "pub fn f() {}\n")
        assert check_crate(root) == [], check_crate(root)
    print("module_cycles.py: the self-test found the planted cycle and nothing else")


def main(arguments):
    if arguments == ["--self-test"]:
        self_test()
        return 0
    crates = arguments or workspace_crates()
    problems = []
    for src in crates:
        problems.extend(check_crate(src))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} import cycle(s): the module graph must be a DAG")
        return 1
    print(f"no import cycle in {', '.join(crates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
