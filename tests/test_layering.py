"""The library's import structure (issue 14), read with `ast`: nothing is imported.

Layered by imports, a node of `jaxrank/` (a top-level module, or one of the
sub-packages, each counted whole) sits one level above the highest node it
imports, imports inside functions included; a node importing no other sits at
level 1. The layering must stay at most MAX_DEPTH levels deep and acyclic
(between nodes, and between single modules), so no import runs against it.
Imports inside functions are allowed only where they keep a heavy or optional
dependency off the import path of callers that do not need it (LAZY_IMPORTS).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "jaxrank"
PACKAGES = ("data", "features", "models", "text")  # one node each
MAX_DEPTH = 8

# (file, imported module or its prefix) -> why it is imported inside a function.
LAZY_IMPORTS = {
    ("data/cache.py", "pyarrow"): "optional (the Parquet notebook cache); ~0.5 s to import",
    ("decode.py", "scipy"): "scipy.optimize is slow to import; only the crowded decoder needs it",
    ("features/encoder.py", "jaxrank.text.bow"): "scikit-learn (~1 s) for the sim_lex feature only",
    ("hf.py", "torch"): "optional and heavy; only to read pytorch_model.bin pickles",
    ("hf.py", "transformers"): "~2-3 s to import; only when a tokenizer is staged or loaded",
    ("hf.py", "orbax"): "only when encoder params are written to or restored from the store",
    ("results.py", "pandas"): "the runs table and plots; recording a run needs none of it",
    ("results.py", "matplotlib"): "plots only (and its backend is chosen there)",
}


def _module_name(path: Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _node(module: str) -> str | None:
  """jaxrank.X[.Y...] -> X (a module or a package, counted whole); None outside jaxrank."""
  parts = module.split(".")
  return parts[1] if parts[0] == "jaxrank" and len(parts) > 1 else None


def _is_type_checking(stmt: ast.stmt) -> bool:
  return isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool,
              modules: set[str]) -> list[str]:
  """Dotted names an import statement loads (`from P import m` -> P.m when m is a module)."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  base = node.module or ""
  if node.level:  # relative: resolve against this module's package
    pkg = module.split(".") if is_pkg else module.split(".")[:-1]
    pkg = pkg[: len(pkg) - (node.level - 1)]
    base = ".".join(pkg + ([base] if base else []))
  out = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
  return out if len(out) == len(node.names) else out + [base]


@functools.cache
def scan():
  """(module -> imported jaxrank modules, node -> {imported node: first file}, lazy imports)."""
  files = sorted(ROOT.rglob("*.py"))
  modules = {_module_name(f) for f in files}
  mod_edges: dict[str, set[str]] = {}
  node_edges: dict[str, dict[str, str]] = {}
  lazy: list[tuple[str, int, str]] = []
  for f in files:
    module, rel = _module_name(f), f.relative_to(ROOT).as_posix()
    tree = ast.parse(f.read_text(), str(f))
    top = {id(s) for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))}
    top |= {id(s) for t in tree.body if _is_type_checking(t) for s in ast.walk(t)}
    src = _node(module)
    mod_edges[module] = set()
    if src is not None:
      node_edges.setdefault(src, {})
    for n in ast.walk(tree):
      if not isinstance(n, (ast.Import, ast.ImportFrom)):
        continue
      names = _imported(n, module, f.name == "__init__.py", modules)
      if id(n) not in top:
        lazy += [(rel, n.lineno, name) for name in names]
      for name in names:
        if name in modules and name != module:
          mod_edges[module].add(name)
        dst = _node(name)
        if src is not None and dst is not None and dst != src:
          node_edges[src].setdefault(dst, rel)
  return mod_edges, node_edges, lazy


def find_cycle(edges) -> list[str] | None:
  state: dict[str, int] = {}  # 1: on the stack, 2: done
  stack: list[str] = []

  def visit(n):
    state[n] = 1
    stack.append(n)
    for d in sorted(edges.get(n, ())):
      if state.get(d) == 1:
        return stack[stack.index(d):] + [d]
      if d not in state and (c := visit(d)):
        return c
    stack.pop()
    state[n] = 2
    return None

  for n in sorted(edges):
    if n not in state and (c := visit(n)):
      return c
  return None


def longest_chains(edges) -> dict[str, list[str]]:
  """node -> the longest import chain starting at it (itself first); the graph is acyclic."""
  memo: dict[str, list[str]] = {}

  def chain(n):
    if n not in memo:
      below = [chain(d) for d in sorted(edges.get(n, ()))]
      memo[n] = [n] + max(below, key=len, default=[])
    return memo[n]

  for n in edges:
    chain(n)
  return memo


def _describe(chain, node_edges) -> str:
  return " -> ".join(f"{a} ({node_edges[a][b]})" for a, b in zip(chain, chain[1:])) + \
      f" -> {chain[-1]}"


def test_layering_is_shallow_and_acyclic():
  mod_edges, node_edges, _ = scan()
  assert {"store", "hf", "train", "models", "data"} <= set(node_edges)  # scanned the library
  assert not mod_edges["jaxrank"], "jaxrank/__init__.py must import no jaxrank module"
  cycle = find_cycle(node_edges)
  assert cycle is None, "import cycle between jaxrank nodes: " + _describe(cycle, node_edges)
  cycle = find_cycle(mod_edges)
  assert cycle is None, "import cycle between jaxrank modules: " + " -> ".join(cycle)
  chains = longest_chains(node_edges)
  longest = max(chains.values(), key=len)
  levels = "\n".join(f"  {len(c)} {n}: {sorted(node_edges[n])}"
                     for n, c in sorted(chains.items(), key=lambda kv: (len(kv[1]), kv[0])))
  assert len(longest) <= MAX_DEPTH, (
      f"jaxrank's imports stand {len(longest)} levels deep (at most {MAX_DEPTH}); longest "
      f"chain: {_describe(longest, node_edges)}\nlevels:\n{levels}")


def test_function_level_imports_are_only_the_allowed_heavy_ones():
  _, _, lazy = scan()

  def entry(rel, name):
    return next((k for k in LAZY_IMPORTS
                 if k[0] == rel and (name == k[1] or name.startswith(k[1] + "."))), None)

  bad = [f"jaxrank/{rel}:{line}: import {name}" for rel, line, name in lazy
         if entry(rel, name) is None]
  assert not bad, ("imports inside functions that are not in LAZY_IMPORTS (import at the top, "
                   "or add it with the reason):\n" + "\n".join(bad))
  unused = set(LAZY_IMPORTS) - {entry(rel, name) for rel, _, name in lazy}
  assert not unused, f"LAZY_IMPORTS entries no longer needed: {sorted(unused)}"


@pytest.mark.parametrize("src,want", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
])
def test_find_cycle(src, want):
  assert find_cycle(src) == want


def test_longest_chain_counts_levels():
  chains = longest_chains({"top": {"mid", "low"}, "mid": {"low"}, "low": set()})
  assert chains["top"] == ["top", "mid", "low"] and chains["low"] == ["low"]
