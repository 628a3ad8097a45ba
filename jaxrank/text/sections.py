"""Section numbers of markdown headings, ranked within their notebook.

Kernels number their sections ("## 3. Data Analysis", "12.1 | Setup", "Step 4:",
"(2) Tokenizers"), and the numbers say the order outright: on nbcorpus +
nbcorpus2, 8.9 % of markdown cells open with one, 960 of 5,878 notebooks have
three or more, and the order of their numbers agrees with the true order at a
mean Kendall tau of 0.907 (median 1.0). A sentence vector cannot compare "5.1"
in one cell with "6" in another; these features hand the comparison over:

  numbered  1 if the cell's first line opens with a section number
  rank      the rank of its number (as a tuple, 5.1 < 5.2 < 6) among the
            notebook's numbered markdown cells, in [0, 1]
  depth     components of the number / 4 (a subsection reads 0.5)

Code cells and unnumbered markdown cells are all zeros.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from jaxrank.data.types import MARKDOWN
from jaxrank.text import markup

N_FEATURES = 3
_NUMBER = re.compile(
    r"[#>\s*_(\[]*(?:(?:step|part|section|chapter|task|exercise|question|q)\s*)?"
    r"(\d{1,2})((?:\.\d{1,2}){0,3})(?:[.):|\]\s-]|$)", re.IGNORECASE)


def section_number(source: str) -> tuple[int, ...] | None:
  """The section number a markdown cell's first line opens with, or None."""
  text = markup.readable(source, anchors=False).lstrip()
  first = text.split("\n", 1)[0]
  m = _NUMBER.match(first)
  if m is None:
    return None
  return (int(m.group(1)),) + tuple(int(x) for x in m.group(2).split(".") if x)


def section_features(sources: Sequence[str], cell_types: Sequence[str]) -> np.ndarray:
  """[n_cells, N_FEATURES] float32 for one notebook's cells (any order)."""
  out = np.zeros((len(sources), N_FEATURES), np.float32)
  numbers = {i: section_number(s) for i, (s, t) in enumerate(zip(sources, cell_types))
             if t == MARKDOWN}
  numbers = {i: n for i, n in numbers.items() if n is not None}
  if not numbers:
    return out
  distinct = sorted(set(n + (0,) * (4 - len(n)) for n in numbers.values()))
  rank = {n: r for r, n in enumerate(distinct)}
  top = max(len(distinct) - 1, 1)
  for i, n in numbers.items():
    out[i] = (1.0, rank[n + (0,) * (4 - len(n))] / top, len(n) / 4.0)
  return out
