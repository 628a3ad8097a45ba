"""Very long notebooks with known orders, stitched from the embedded sample."""

from __future__ import annotations

import itertools

from jaxrank.data import notebooks
from jaxrank.data.types import Notebook


def long_notebook(n_cells: int, nb_id: str = "long") -> Notebook:
  """Sample train notebooks one after the other (cell ids made unique) until
  `n_cells` cells: code in order then markdown, with the true order known."""
  sample = notebooks.load_split(notebooks.sample_data_dir(), "train")
  code, md, order, n = [], [], [], 0
  for r, nb in enumerate(itertools.cycle(sample)):
    if n >= n_cells:
      break
    take = min(nb.n_cells, n_cells - n)
    keep = set(nb.order[:take])  # a prefix of the true order: a valid notebook
    src = dict(zip(nb.cell_ids, nb.sources))
    typ = dict(zip(nb.cell_ids, nb.cell_types))
    rename = lambda c, r=r: f"{r:04x}{c}"
    code += [(rename(c), "code", src[c]) for c in nb.cell_ids if c in keep and typ[c] == "code"]
    md += [(rename(c), "markdown", src[c]) for c in nb.cell_ids
           if c in keep and typ[c] == "markdown"]
    order += [rename(c) for c in nb.order[:take]]
    n += take
  cells = code + md
  return Notebook(nb_id, tuple(c[0] for c in cells), tuple(c[1] for c in cells),
                  tuple(c[2] for c in cells), tuple(order))
