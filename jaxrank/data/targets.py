"""The key convention, and a notebook's true order in it (the training targets).

Each cell gets a float *key*; sorting all cells by key gives the order. With
`n = n_code`, code cell `k` (0-based, in the given order) has key
`(k + 1) / (n + 1)`. A markdown cell in gap `g` (the number of code cells before
it, `0..n`) lies strictly between code `g - 1` and code `g`; the `j`-th of the
`m_g` markdown cells of that gap has key `(g + (j + 1) / (m_g + 1)) / (n + 1)`.
All keys are in (0, 1). `jaxrank.decode` turns predicted keys back into orders.
"""

from __future__ import annotations

import numpy as np

from jaxrank.data.types import CODE, MARKDOWN, Notebook


def code_keys(n_code: int) -> np.ndarray:
  """Keys of the code cells, in their given order: `(k + 1) / (n_code + 1)`."""
  if n_code < 0:
    raise ValueError(f"n_code must be >= 0, got {n_code}")
  return np.arange(1, n_code + 1, dtype=np.float64) / (n_code + 1)


def _check_order(nb: Notebook) -> tuple[str, ...]:
  """Returns nb.order after checking it is a permutation that keeps code order."""
  if nb.order is None:
    raise ValueError(f"notebook {nb.id}: has no true order (order is None)")
  order = nb.order
  if len(order) != nb.n_cells or set(order) != set(nb.cell_ids):
    missing = sorted(set(nb.cell_ids) - set(order))
    extra = sorted(set(order) - set(nb.cell_ids))
    raise ValueError(
        f"notebook {nb.id}: order is not a permutation of its cells "
        f"({len(order)} ids for {nb.n_cells} cells; missing {missing[:5]}, "
        f"unknown {extra[:5]})")
  types = dict(zip(nb.cell_ids, nb.cell_types))
  code_in_order = tuple(c for c in order if types[c] == CODE)
  if code_in_order != nb.code_ids:
    bad = next(i for i, (a, b) in enumerate(zip(code_in_order, nb.code_ids)) if a != b)
    raise ValueError(
        f"notebook {nb.id}: code cells in the true order differ from the file "
        f"order at code cell {bad} ({code_in_order[bad]} vs {nb.code_ids[bad]}); "
        "the convention needs code cells given in their true order")
  return order


def true_gaps(nb: Notebook) -> np.ndarray:
  """Gap index (0..n_code) of each markdown cell, aligned with `nb.markdown_ids`."""
  order = _check_order(nb)
  types = dict(zip(nb.cell_ids, nb.cell_types))
  gap_of: dict[str, int] = {}
  g = 0
  for c in order:
    if types[c] == CODE:
      g += 1
    else:
      gap_of[c] = g
  return np.array([gap_of[c] for c in nb.markdown_ids], dtype=np.int64)


def true_keys(nb: Notebook) -> np.ndarray:
  """True key of every cell, float [n_cells] aligned with `nb.cell_ids`."""
  order = _check_order(nb)
  types = dict(zip(nb.cell_ids, nb.cell_types))
  n = nb.n_code
  key_of: dict[str, float] = {}
  # Walk the true order, collecting each gap's markdown run, then key the run.
  g, run = 0, []
  for c in list(order) + [None]:
    if c is None or types[c] == CODE:
      m = len(run)
      for j, md in enumerate(run):
        key_of[md] = (g + (j + 1) / (m + 1)) / (n + 1)
      run = []
      if c is not None:
        key_of[c] = (g + 1) / (n + 1)
        g += 1
    else:
      run.append(c)
  return np.array([key_of[c] for c in nb.cell_ids], dtype=np.float64)


def markdown_positions(nb: Notebook) -> np.ndarray:
  """Indices into `nb.cell_ids` of the markdown cells (aligned with markdown_ids)."""
  return np.array([i for i, t in enumerate(nb.cell_types) if t == MARKDOWN], dtype=np.int64)
