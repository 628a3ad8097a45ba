"""A few numbers on a cell's form that a mean-pooled sentence vector blurs.

A frozen encoder's mean-pooled vector says what a cell is about, but little
about its form: whether a markdown cell is a `#` title, a `###` sub-heading or
a paragraph, a bullet list, an image, a formula; whether a code cell only
imports, defines a function, plots or is one line. Form carries position: a
notebook opens with its title, a heading sits right before the code it
introduces, a paragraph about a figure follows the plot. `SHAPE_DIM` numbers
per cell, all in [0, 1], computed from the raw source (not the truncated text
the encoder sees), the same for every cell type's slots (a markdown feature is
0 on a code cell and the other way round).
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from jaxrank.data.types import CODE

# `.match` reads the first line's heading (its level is group 1), `.search` any line's.
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s", re.M)
_IMAGE = re.compile(r"!\[|<img\b", re.I)
_LINK = re.compile(r"\]\(|https?://|<a\s", re.I)
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s", re.M)
_MATH = re.compile(r"\$[^$\n]+\$|\\begin\{")
_HTML = re.compile(r"<(?:div|p|br|font|center|span|h[1-6]|table|b|i)\b", re.I)
_IMPORT = re.compile(r"^\s*(?:import|from)\s+\w", re.M)
_DEF = re.compile(r"^\s*(?:def|class)\s+\w", re.M)
_PLOT = re.compile(r"\bplt\.|\.plot\(|\bsns\.|\bpx\.|\.hist\(|\bimshow\(|\bfigure\(")
_MAGIC = re.compile(r"^\s*[%!]", re.M)
_PRINT = re.compile(r"\bprint\(|\.head\(|\.describe\(|\.info\(|\.shape\b")
_FIT = re.compile(r"\.fit\(|\.train\(|\.compile\(|\.predict\(")
_IO = re.compile(r"read_csv|to_csv|open\(|\.load\(|\.save\(|submission", re.I)

# Slots. Markdown (0-12): heading level 1-6 of the first line, a heading anywhere,
# image, link, list, math, html, ends with ':'. Code (13-21): imports, def/class,
# plot, magic/shell, print/inspect, fit/predict, file I/O, imports only, one line.
# Both (22-23): length and non-empty lines, log-scaled (the model's type embedding
# tells the two kinds apart).
SHAPE_DIM = 24
_MARKDOWN_FLAGS = ((6, _HEADING), (7, _IMAGE), (8, _LINK), (9, _LIST), (10, _MATH),
                   (11, _HTML))
_CODE_FLAGS = ((14, _DEF), (15, _PLOT), (16, _MAGIC), (17, _PRINT), (18, _FIT), (19, _IO))


def _log_scale(n: int, top: float) -> float:
  return min(math.log1p(n) / math.log1p(top), 1.0)


def cell_shape(source: str, cell_type: str) -> np.ndarray:
  """The [SHAPE_DIM] float32 form features of one cell."""
  out = np.zeros(SHAPE_DIM, np.float32)
  text = source.strip()
  lines = [ln for ln in text.splitlines() if ln.strip()]
  if cell_type == CODE:
    imports = len(_IMPORT.findall(text))
    out[13] = imports > 0
    _flags(out, text, _CODE_FLAGS)
    out[20] = imports > 0 and imports == sum(not ln.lstrip().startswith("#") for ln in lines)
    out[21] = len(lines) == 1
    _sizes(out, text, lines)
    return out
  m = _HEADING.match(text)
  if m:
    out[len(m.group(1)) - 1] = 1.0
  _flags(out, text, _MARKDOWN_FLAGS)
  out[12] = text.endswith(":")
  _sizes(out, text, lines)
  return out


def _flags(out: np.ndarray, text: str, flags) -> None:
  for slot, pattern in flags:
    out[slot] = pattern.search(text) is not None


def _sizes(out: np.ndarray, text: str, lines: list[str]) -> None:
  out[22] = _log_scale(len(text), 5000)
  out[23] = _log_scale(len(lines), 200)


def shapes(sources: Sequence[str], cell_types: Sequence[str]) -> np.ndarray:
  """[len(sources), SHAPE_DIM] float32 for cells given as parallel lists."""
  if not len(sources):
    return np.zeros((0, SHAPE_DIM), np.float32)
  return np.stack([cell_shape(s, t) for s, t in zip(sources, cell_types)])
