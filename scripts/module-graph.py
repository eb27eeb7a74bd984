#!/usr/bin/env python3
"""Prints the module graph of each library crate in the workspace, and fails
on an import cycle.

A module is a file (`src/cache/mod.rs` is `cache`, `src/cache/tags.rs` is
`cache::tags`). Module A depends on module B when A names an item of B by
path: `crate::b::...`, `super::...`, or a child module's name
(`tags::TagIndex` in `cache`). A child that uses its parent's items and a
parent that uses the child's are a cycle too: shared items belong in a
module both can use. Inline `#[cfg(test)] mod tests` blocks at the end of a
file are not counted; binaries (`main.rs`, `src/bin/`) reach their library by
its crate name and cannot be in its cycles.

    scripts/module-graph.py            # every crate: edges, then cycles
    scripts/module-graph.py edge-node  # one crate
    scripts/module-graph.py --quiet    # cycles only

Exit status 1 when any crate has a cycle.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["config", "platform", "edge-node", "control-plane", "edgectl", "sdk", "tests", "benches"]
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_files(src):
    """Module path (tuple) -> file, for a library crate rooted at src/lib.rs."""
    modules = {}
    for path in src.rglob("*.rs"):
        relative = path.relative_to(src)
        parts = list(relative.parts)
        if parts[0] == "bin" or parts == ["main.rs"]:
            continue
        if parts == ["lib.rs"]:
            modules[()] = path
            continue
        parts[-1] = parts[-1][:-3]
        if parts[-1] == "mod":
            parts.pop()
        modules[tuple(parts)] = path
    return modules


TOKENS = re.compile(
    r"//[^\n]*"                                   # line comment
    r"|/\*.*?\*/"                                 # block comment
    r'|(?<![A-Za-z0-9_])r(#*)"(?:.|\n)*?"\1'       # raw string
    r'|"(?:\\.|[^"\\])*"'                         # string
    r"|'(?:\\.|[^'\\])'",                         # char literal
    re.S,
)


def strip(text):
    """The code without comments, string or char literals, or a trailing
    test module."""
    text = TOKENS.sub(" ", text)
    tests = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{", text)
    if tests:
        text = text[: tests.start()]
    return text


def path_trees(text, start):
    """The paths (lists of segments) of a `use` tree or path at text[start:],
    following `{a::b, c}` groups."""
    paths = []

    def parse(i, prefix):
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            i += 1
            while True:
                i = parse(i, prefix)
                while i < len(text) and text[i].isspace():
                    i += 1
                if i < len(text) and text[i] == ",":
                    i += 1
                    continue
                if i < len(text) and text[i] == "}":
                    return i + 1
                return i
        match = re.compile(IDENT).match(text, i)
        if not match:
            paths.append(prefix)
            return i
        segment = match.group(0)
        i = match.end()
        if text.startswith("::", i):
            return parse(i + 2, prefix + [segment])
        paths.append(prefix + [segment])
        return i

    parse(start, [])
    return paths


def resolve(modules, base, segments):
    """The longest module prefix of base + segments, or None."""
    full = list(base) + segments
    for length in range(len(full), -1, -1):
        candidate = tuple(full[:length])
        if candidate in modules and length >= len(base):
            return candidate
    return None


def edges_of(modules, module, text):
    children = {m[-1] for m in modules if len(m) == len(module) + 1 and m[: len(module)] == module}
    found = set()
    for match in re.finditer(r"\b(crate|super|self)::", text):
        kind = match.group(1)
        if kind == "crate":
            base = ()
        elif kind == "self":
            base = module
        else:
            base = module[:-1]
        for segments in path_trees(text, match.end()):
            while segments and segments[0] == "super":
                base = base[:-1]
                segments = segments[1:]
            target = resolve(modules, base, segments)
            if target is not None and target != module:
                found.add(target)
    # A child module named by itself: `tags::TagIndex`, `use policy::X`.
    for match in re.finditer(r"(?<![:\w])(" + IDENT + r")::", text):
        name = match.group(1)
        if name in children:
            before = text[max(0, match.start() - 2) : match.start()]
            if before.endswith("::"):
                continue
            for segments in path_trees(text, match.start()):
                target = resolve(modules, module, segments)
                if target is not None and target != module:
                    found.add(target)
    return found


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def name(module):
    return "::".join(module) if module else "(crate root)"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    quiet = "--quiet" in sys.argv
    failed = False
    for crate in args or CRATES:
        src = ROOT / crate / "src"
        if not (src / "lib.rs").exists():
            continue
        modules = module_files(src)
        graph = {
            module: edges_of(modules, module, strip(path.read_text()))
            for module, path in modules.items()
        }
        if not quiet:
            print(f"# {crate}")
            for module in sorted(graph):
                targets = ", ".join(name(t) for t in sorted(graph[module])) or "-"
                print(f"  {name(module)} -> {targets}")
        found = cycles(graph)
        for component in found:
            failed = True
            print(f"{crate}: cycle of {len(component)} modules: " + ", ".join(name(m) for m in component))
        if not found and quiet:
            print(f"{crate}: no cycles ({len(modules)} modules)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
