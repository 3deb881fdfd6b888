#!/usr/bin/env python3
"""Checks the layout rules of CONVENTIONS.md on every crate of the workspace:

- no cycles between the top-level modules of a crate (a module depends on another when its
  code, in any file under it, names `crate::<other>`);
- no source file (under src/) over MAX_LINES lines of non-test code (the lines before its
  `#[cfg(test)]` module);
- every crate root (lib.rs, or main.rs of a binary-only crate) starts with a `//!` doc that has
  a `# Layout` section;
- the README's layout table names every crate directory under replica/ and operator/, and
  every path it names exists.

Exits non-zero and says what is wrong. Usage: .ci/layout.py [ROOT]
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
MAX_LINES = 600
REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def crate_roots():
    """(crate name, source root) pairs: each src/ and each src/bin/<name>/ directory."""
    for manifest in sorted(ROOT.glob("**/Cargo.toml")):
        if "target" in manifest.parts or manifest.parent == ROOT:
            continue
        src = manifest.parent / "src"
        if src.is_dir():
            yield manifest.parent.name, src
            for b in sorted((src / "bin").glob("*/")) if (src / "bin").is_dir() else []:
                yield f"{manifest.parent.name} (bin {b.name})", b


def top_module(src, path):
    rel = path.relative_to(src)
    if rel.parts[0] == "bin" and src.name != "bin":
        return None
    first = rel.parts[0]
    if first.endswith(".rs"):
        first = first[:-3]
    return None if first in ("lib", "main") else first


def references(text):
    """The top-level modules `text` names through `crate::`, grouped imports included."""
    found = set(REF.findall(text))
    for start in [m.end() for m in re.finditer(r"\bcrate::\{", text)]:
        depth, item, items = 1, "", []
        for ch in text[start:]:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            if depth == 1 and ch == ",":
                items.append(item)
                item = ""
            elif depth >= 1:
                item += ch
        items.append(item)
        for it in items:
            name = re.match(r"\s*([a-z_][a-z0-9_]*)", it)
            if name and name.group(1) != "self":
                found.add(name.group(1))
    return found


def graph(src):
    edges = {}
    for path in src.rglob("*.rs"):
        module = top_module(src, path)
        if module is None:
            continue
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("//")
        )
        for other in references(code):
            if other != module:
                edges.setdefault(module, set()).add(other)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def non_test_lines(path):
    n = 0
    for line in path.read_text().splitlines():
        if line.startswith("#[cfg(test)]"):
            break
        n += 1
    return n


failed = False
for name, src in crate_roots():
    if "(bin " not in name:
        root = src / "lib.rs" if (src / "lib.rs").exists() else src / "main.rs"
        text = root.read_text() if root.exists() else ""
        if not text.startswith("//!") or "# Layout" not in text:
            failed = True
            print(f"{name}: {root} does not start with a //! doc with a # Layout section")
    for path in sorted(src.rglob("*.rs")):
        if "(bin " not in name and "bin" in path.relative_to(src).parts:
            continue
        n = non_test_lines(path)
        if n > MAX_LINES:
            failed = True
            print(f"{name}: {path} has {n} lines of non-test code (at most {MAX_LINES})")
    edges = graph(src)
    for comp in cycles(edges):
        failed = True
        detail = "; ".join(
            f"{a} -> {', '.join(sorted(edges[a] & set(comp)))}" for a in comp
        )
        print(f"{name}: module cycle between {', '.join(comp)} ({detail})")
readme = (ROOT / "README.md").read_text()
table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0] if "## Layout" in readme else ""
named = set(re.findall(r"`([a-z0-9_./-]+)`", " ".join(
    line.split("|")[1] for line in table.splitlines() if line.startswith("| `")
)))
for top in ("replica", "operator"):
    for d in sorted((ROOT / top).iterdir()):
        if (d / "Cargo.toml").exists() and f"{top}/{d.name}" not in named:
            failed = True
            print(f"README.md: the layout table does not name {top}/{d.name}")
for path in sorted(named):
    if not (ROOT / path.rstrip("/")).exists():
        failed = True
        print(f"README.md: the layout table names {path}, which does not exist")

sys.exit(1 if failed else 0)
